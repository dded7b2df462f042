// Package rostest is a rosbridge v2 protocol server for tests and benchmarks.
//
// It stands in for ROS 2 rosbridge_server, which cannot be installed on the
// machines these tests run on (no ROS 2, no Python ROS packages). It is
// protocol-faithful where sdr_ros depends on the peer's behaviour: it speaks
// the rosbridge v2 JSON protocol over WebSocket, keeps one subscription per
// topic per connection with any number of subscriber ids (as rosbridge_server
// does), answers call_service with service_response, reassembles incoming
// fragment ops, sends status messages for errors at the connection's
// set_level, and loops publishes from one connection back to the subscribers
// of that topic on every connection, as a ROS graph would.
//
// It also records every op it receives, so that a test can assert what the
// proxy sent upstream, and publishes on demand (Publish).
//
// Service handlers run inline on the connection's reader: a hung service
// stalls every later op of that connection, which is how a rosbridge_server
// stuck in a service call behaves towards one client. Compressions "none"
// (JSON text), "cbor" (the whole publish op as one binary CBOR message) and
// "png" (the JSON text as the RGB pixels of a PNG, padded with newlines,
// base64 in a {"op":"png","data":...} message) are implemented as
// rosbridge_server implements them. "cbor-raw" has rosbridge_server's
// envelope ({"op":"publish","topic","msg":{"secs","nsecs","bytes"}} in
// CBOR), but "bytes" holds the message's JSON, not its ROS serialisation,
// which needs the message definitions of a ROS installation.
package rostest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/harness"
)

// ServiceHandler answers one call_service. It returns the response values and
// whether the call succeeded. ctx ends when the server closes or restarts.
type ServiceHandler func(ctx context.Context, args json.RawMessage) (values any, ok bool)

// Op is one rosbridge operation the server received.
type Op struct {
	// Conn numbers the connection it came on, from 1, over the server's life.
	Conn int
	// Op, ID, Topic, Type and Service are the message's fields of those names.
	Op, ID, Topic, Type, Service string
	// Raw is the whole message.
	Raw json.RawMessage
	// At is when it was received.
	At time.Time
}

// Server is a running rosbridge v2 test server on a loopback port.
type Server struct {
	addr string

	mu       sync.Mutex
	ln       net.Listener
	srv      *http.Server
	ctx      context.Context
	cancel   context.CancelFunc
	conns    map[*conn]struct{}
	nconn    int
	ops      []Op
	services map[string]ServiceHandler
	types    map[string]string // topic -> type, as the ROS graph knows it
	changed  chan struct{}     // closed and replaced whenever ops change
	seen     func(Op)          // called as each op is recorded (this package's tests)

	sent atomic.Uint64 // publish messages written to connections
}

// Start listens on addr and serves. Port 0 takes a free port from
// harness.FreePort rather than from the kernel, so that it is still free
// when Restart listens on it again.
func Start(addr string) (*Server, error) {
	if host, port, err := net.SplitHostPort(addr); err == nil && port == "0" {
		p, err := harness.FreePort()
		if err != nil {
			return nil, err
		}
		addr = net.JoinHostPort(host, strconv.Itoa(p))
	}
	s := &Server{
		addr:     addr,
		conns:    make(map[*conn]struct{}),
		services: make(map[string]ServiceHandler),
		types:    make(map[string]string),
		changed:  make(chan struct{}),
	}
	s.services["/rosapi/topics"] = s.rosapiTopics
	if err := s.listen(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) listen() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 5 * time.Second}
	s.mu.Lock()
	s.ln, s.srv, s.ctx, s.cancel = ln, srv, ctx, cancel
	s.addr = ln.Addr().String()
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// URL is the server's ws:// address.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "ws://" + s.addr
}

// Close stops the server and closes every connection.
func (s *Server) Close() {
	s.mu.Lock()
	srv, cancel := s.srv, s.cancel
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	// A rosbridge_server that stopped has no connections and no
	// subscribers from this moment, not once each handler has noticed.
	s.conns = map[*conn]struct{}{}
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	cancel()
	_ = srv.Close()
	for _, c := range conns {
		_ = c.ws.Close()
	}
}

// Restart closes the server and every connection, as a rosbridge_server that
// exits does, waits down, then listens again on the same address. The
// recorded ops are kept; a new connection gets the next Conn number.
func (s *Server) Restart(down time.Duration) error {
	s.Close()
	time.Sleep(down)
	return s.Listen()
}

// Listen listens again on the server's address after Close, as a
// rosbridge_server started again does. The recorded ops are kept.
func (s *Server) Listen() error {
	var err error
	for i := 0; i < 50; i++ { // the port may linger for a moment
		if err = s.listen(); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// HandleService installs the handler of a service. /rosapi/topics is built
// in: it lists the topics seen in subscribe and advertise ops.
func (s *Server) HandleService(name string, h ServiceHandler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.services[name] = h
}

// SetTopicType declares the type of a topic in the simulated ROS graph: a
// subscribe or advertise with another type is refused with a status error,
// as rosbridge_server refuses a type mismatch.
func (s *Server) SetTopicType(topic, typ string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.types[topic] = typ
}

func (s *Server) typeMismatch(topic, typ string) string {
	s.mu.Lock()
	known := s.types[topic]
	s.mu.Unlock()
	if known == "" || typ == "" || canonical(known) == canonical(typ) {
		return ""
	}
	return fmt.Sprintf("TypeMismatchException: the type of topic %s is %s, not %s", topic, known, typ)
}

// canonical writes "pkg/Type" as ROS 2's "pkg/msg/Type".
func canonical(t string) string {
	if p := strings.Split(t, "/"); len(p) == 2 {
		return p[0] + "/msg/" + p[1]
	}
	return t
}

// Hang is a ServiceHandler that never answers until the server closes.
func Hang(ctx context.Context, _ json.RawMessage) (any, bool) {
	<-ctx.Done()
	return "server closed", false
}

// Publish sends msg on topic to every connection subscribed to it and
// returns how many connections it went to.
func (s *Server) Publish(topic string, msg any) (int, error) {
	raw, err := json.Marshal(msg)
	if err != nil {
		return 0, fmt.Errorf("encoding message for %s: %w", topic, err)
	}
	return s.publishRaw(topic, raw, nil), nil
}

func (s *Server) publishRaw(topic string, msg json.RawMessage, except *conn) int {
	out, _ := json.Marshal(struct {
		Op    string          `json:"op"`
		Topic string          `json:"topic"`
		Msg   json.RawMessage `json:"msg"`
	}{"publish", topic, msg})
	s.mu.Lock()
	var to []*conn
	var comps []string
	for c := range s.conns {
		if comp, ok := c.subscribed(topic); ok && c != except {
			to = append(to, c)
			comps = append(comps, comp)
		}
	}
	s.mu.Unlock()
	var binary, rawOp, pngOp []byte
	n := 0
	for i, c := range to {
		typ, b := websocket.TextMessage, out
		if comps[i] == "png" {
			if pngOp == nil {
				pngOp = pngEncode(out)
			}
			b = pngOp
		}
		if comps[i] == "cbor-raw" {
			if rawOp == nil {
				now := time.Now()
				rawOp, _ = cbor.Marshal(map[string]any{"op": "publish", "topic": topic,
					"msg": map[string]any{"secs": now.Unix(), "nsecs": now.Nanosecond(), "bytes": []byte(msg)}})
			}
			typ, b = websocket.BinaryMessage, rawOp
		}
		if comps[i] == "cbor" {
			if binary == nil {
				var v any
				_ = json.Unmarshal(msg, &v)
				binary, _ = cbor.Marshal(map[string]any{"op": "publish", "topic": topic, "msg": v})
			}
			typ, b = websocket.BinaryMessage, binary
		}
		if c.writeType(typ, b) == nil {
			n++
			s.sent.Add(1)
		}
	}
	return n
}

// Sent is how many publish messages the server has written to connections.
func (s *Server) Sent() uint64 { return s.sent.Load() }

// Ops returns a copy of the ops received so far.
func (s *Server) Ops() []Op {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Op(nil), s.ops...)
}

// Count counts received ops with this op name and, when topic is not empty,
// this topic or service.
func (s *Server) Count(op, topic string) int {
	n := 0
	for _, o := range s.Ops() {
		if o.Op == op && (topic == "" || o.Topic == topic || o.Service == topic) {
			n++
		}
	}
	return n
}

// WaitFor waits until cond holds over the recorded ops, or timeout.
func (s *Server) WaitFor(timeout time.Duration, cond func(ops []Op) bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ops := append([]Op(nil), s.ops...)
		ch := s.changed
		s.mu.Unlock()
		if cond(ops) {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("condition not met within %v (%d ops recorded)", timeout, len(ops))
		}
	}
}

// Subscribers returns, for a topic, how many connections are subscribed and
// the total number of subscriber ids over them.
func (s *Server) Subscribers(topic string) (conns, ids int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.mu.Lock()
		if sub, ok := c.subs[topic]; ok {
			conns++
			ids += len(sub.ids)
		}
		c.mu.Unlock()
	}
	return conns, ids
}

// Connections is the number of open connections.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) record(o Op) {
	s.mu.Lock()
	s.ops = append(s.ops, o)
	close(s.changed)
	s.changed = make(chan struct{})
	seen := s.seen
	s.mu.Unlock()
	if seen != nil {
		seen(o)
	}
}

func (s *Server) rosapiTopics(context.Context, json.RawMessage) (any, bool) {
	seen := map[string]string{}
	for _, o := range s.Ops() {
		if (o.Op == "subscribe" || o.Op == "advertise") && o.Topic != "" {
			if seen[o.Topic] == "" {
				seen[o.Topic] = o.Type
			}
		}
	}
	topics := make([]string, 0, len(seen))
	for t := range seen {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	types := make([]string, len(topics))
	for i, t := range topics {
		types[i] = seen[t]
	}
	return map[string]any{"topics": topics, "types": types}, true
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	ws.SetReadLimit(64 << 20)
	s.mu.Lock()
	if s.srv == nil {
		s.mu.Unlock()
		_ = ws.Close()
		return
	}
	s.nconn++
	c := &conn{s: s, ws: ws, n: s.nconn, subs: map[string]*subscription{}, level: levelError, frags: map[string][]string{}}
	s.conns[c] = struct{}{}
	ctx := s.ctx
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = ws.Close()
	}()
	for {
		typ, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if typ != websocket.TextMessage {
			c.status(levelError, "", "binary messages are not supported by this test server")
			continue
		}
		c.handle(ctx, data)
	}
}

const (
	levelInfo = iota
	levelWarning
	levelError
	levelNone
)

var levelNames = map[string]int{"info": levelInfo, "warning": levelWarning, "error": levelError, "none": levelNone}

type subscription struct {
	typ         string
	compression string
	ids         map[string]struct{}
}

type conn struct {
	s  *Server
	ws *websocket.Conn
	n  int

	wmu sync.Mutex

	mu    sync.Mutex
	subs  map[string]*subscription
	level int
	frags map[string][]string
}

func (c *conn) subscribed(topic string) (compression string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sub, ok := c.subs[topic]
	if !ok {
		return "", false
	}
	return sub.compression, true
}

func (c *conn) write(b []byte) error { return c.writeType(websocket.TextMessage, b) }

func (c *conn) writeType(typ int, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteMessage(typ, b)
}

func (c *conn) writeJSON(v any) {
	b, err := json.Marshal(v)
	if err == nil {
		_ = c.write(b)
	}
}

func (c *conn) status(level int, id, msg string) {
	c.mu.Lock()
	l := c.level
	c.mu.Unlock()
	if level < l {
		return
	}
	name := "error"
	for k, v := range levelNames {
		if v == level {
			name = k
		}
	}
	m := map[string]any{"op": "status", "level": name, "msg": msg}
	if id != "" {
		m["id"] = id
	}
	c.writeJSON(m)
}

type message struct {
	Op          string          `json:"op"`
	ID          string          `json:"id"`
	Topic       string          `json:"topic"`
	Type        string          `json:"type"`
	Service     string          `json:"service"`
	Msg         json.RawMessage `json:"msg"`
	Args        json.RawMessage `json:"args"`
	Compression string          `json:"compression"`
	Level       string          `json:"level"`
	Data        string          `json:"data"`
	Num         int             `json:"num"`
	Total       int             `json:"total"`
}

func (c *conn) handle(ctx context.Context, data []byte) {
	var m message
	if err := json.Unmarshal(data, &m); err != nil || m.Op == "" {
		c.status(levelError, "", fmt.Sprintf("invalid rosbridge message: %v", err))
		return
	}
	op := Op{Conn: c.n, Op: m.Op, ID: m.ID, Topic: m.Topic, Type: m.Type, Service: m.Service,
		Raw: append(json.RawMessage(nil), data...), At: time.Now()}
	if m.Op == "call_service" || m.Op == "fragment" {
		// recorded when received: a service handler may block, and a
		// fragment's whole message is recorded once it is put together
		c.s.record(op)
	} else {
		// recorded once it took effect, so that a test waiting for an op
		// (an unsubscribe, say) finds the server's state changed by it
		defer c.s.record(op)
	}
	switch m.Op {
	case "subscribe":
		if m.Topic == "" {
			c.status(levelError, m.ID, "subscribe: missing topic")
			return
		}
		comp := m.Compression
		if comp == "" {
			comp = "none"
		}
		if comp != "none" && comp != "cbor" && comp != "cbor-raw" && comp != "png" {
			c.status(levelError, m.ID, fmt.Sprintf("subscribe: compression %q is not implemented by this test server", m.Compression))
			return
		}
		if why := c.s.typeMismatch(m.Topic, m.Type); why != "" {
			c.status(levelError, m.ID, "subscribe: "+why)
			return
		}
		c.mu.Lock()
		sub, ok := c.subs[m.Topic]
		if !ok {
			sub = &subscription{typ: m.Type, compression: comp, ids: map[string]struct{}{}}
			c.subs[m.Topic] = sub
		}
		// rosbridge_server keeps one compression per topic per connection:
		// the strongest asked for wins
		if comp == "cbor" || comp == "cbor-raw" || (comp == "png" && sub.compression == "none") {
			sub.compression = comp
		}
		sub.ids[m.ID] = struct{}{}
		c.mu.Unlock()
	case "unsubscribe":
		c.mu.Lock()
		if sub, ok := c.subs[m.Topic]; ok {
			if m.ID == "" {
				delete(c.subs, m.Topic)
			} else {
				delete(sub.ids, m.ID)
				if len(sub.ids) == 0 {
					delete(c.subs, m.Topic)
				}
			}
		}
		c.mu.Unlock()
	case "advertise", "unadvertise":
		if m.Topic == "" {
			c.status(levelError, m.ID, m.Op+": missing topic")
			return
		}
		if why := c.s.typeMismatch(m.Topic, m.Type); m.Op == "advertise" && why != "" {
			c.status(levelError, m.ID, "advertise: "+why)
		}
	case "publish":
		if m.Topic == "" || len(m.Msg) == 0 {
			c.status(levelError, m.ID, "publish: missing topic or msg")
			return
		}
		c.s.publishRaw(m.Topic, m.Msg, nil)
	case "call_service":
		c.callService(ctx, m)
	case "set_level":
		l, ok := levelNames[m.Level]
		if !ok {
			c.status(levelError, m.ID, fmt.Sprintf("set_level: unknown level %q", m.Level))
			return
		}
		c.mu.Lock()
		c.level = l
		c.mu.Unlock()
	case "fragment":
		c.fragment(ctx, m)
	default:
		c.status(levelError, m.ID, fmt.Sprintf("unknown operation %q", m.Op))
	}
}

func (c *conn) callService(ctx context.Context, m message) {
	c.s.mu.Lock()
	h := c.s.services[m.Service]
	c.s.mu.Unlock()
	resp := map[string]any{"op": "service_response", "service": m.Service}
	if m.ID != "" {
		resp["id"] = m.ID
	}
	if h == nil {
		c.status(levelError, m.ID, fmt.Sprintf("service %s does not exist", m.Service))
		resp["result"] = false
		resp["values"] = fmt.Sprintf("service %s does not exist", m.Service)
		c.writeJSON(resp)
		return
	}
	values, ok := h(ctx, m.Args)
	resp["result"] = ok
	resp["values"] = values
	c.writeJSON(resp)
}

func (c *conn) fragment(ctx context.Context, m message) {
	if m.ID == "" || m.Total <= 0 || m.Num < 0 || m.Num >= m.Total || m.Total > 10000 {
		c.status(levelError, m.ID, "fragment: bad id, num or total")
		return
	}
	c.mu.Lock()
	parts := c.frags[m.ID]
	if parts == nil || len(parts) != m.Total {
		parts = make([]string, m.Total)
		c.frags[m.ID] = parts
	}
	parts[m.Num] = m.Data
	done := true
	for _, p := range parts {
		if p == "" {
			done = false
			break
		}
	}
	if done {
		delete(c.frags, m.ID)
	}
	c.mu.Unlock()
	if done {
		c.handle(ctx, []byte(strings.Join(parts, "")))
	}
}

// pngEncode is rosbridge_server's png compression (png_compression.encode):
// the message bytes padded with '\n' to fill a near-square RGB image.
func pngEncode(msg []byte) []byte {
	n := len(msg)
	w := max(1, int(math.Floor(math.Sqrt(float64(n)/3))))
	h := int(math.Ceil(float64(n) / 3 / float64(w)))
	padded := append(append([]byte(nil), msg...), bytes.Repeat([]byte("\n"), w*h*3-n)...)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < w*h; i++ {
		copy(img.Pix[i*4:], padded[i*3:i*3+3])
		img.Pix[i*4+3] = 0xff
	}
	var buf bytes.Buffer
	_ = png.Encode(&buf, img) // opaque RGBA is written as an RGB PNG
	out, _ := json.Marshal(map[string]string{"op": "png", "data": base64.StdEncoding.EncodeToString(buf.Bytes())})
	return out
}
