package rosbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/origin"
	"github.com/sdr-os/sdr-caddy/internal/strictjson"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

const (
	clientWriteWait     = 10 * time.Second
	defaultPingInterval = 20 * time.Second
	// maxControl bounds the replies (status, service responses) waiting for
	// one client; a client that lets more pile up is disconnected.
	maxControl = 256
	// maxThrottleMS caps throttle_rate (one hour) and minFragment raises a
	// tiny fragment_size, so that no client can make the proxy cut a message
	// into millions of pieces.
	maxThrottleMS = 3600 * 1000
	minFragment   = 32
	// maxClientTopics bounds the topics one client subscribes to and
	// maxClientCalls its service calls in flight.
	maxClientTopics = 512
	maxClientCalls  = 64
)

// outMsg is one upstream message as every subscriber gets it: the same
// bytes, framed once.
type outMsg struct {
	typ      int // websocket.TextMessage (JSON) or BinaryMessage (CBOR)
	data     []byte
	prepared *websocket.PreparedMessage
	at       time.Time
}

func newOutMsg(typ int, data []byte, at time.Time) *outMsg {
	pm, err := websocket.NewPreparedMessage(typ, data)
	if err != nil {
		pm = nil
	}
	return &outMsg{typ: typ, data: data, prepared: pm, at: at}
}

// subParams are what one subscribe op asked for.
type subParams struct {
	throttle time.Duration
	queueLen int
	fragSize int
}

// topicState is a client's view of one topic: rosbridge keeps one
// subscription per topic per connection, whatever the number of subscribe
// ids, so a message is delivered once and the ids' parameters merge as
// rosbridge merges them (smallest throttle_rate and fragment_size, largest
// queue_length).
type topicState struct {
	compression string
	ids         map[string]subParams
	order       []string // ids in subscribe order; the first names status replies
	merged      subParams
	last        time.Time // when a message last went through the throttle
	queue       []*outMsg // queue_length > 0: the newest queue_length messages
}

func (t *topicState) merge() {
	first := true
	for _, p := range t.ids {
		if first {
			t.merged = p
			first = false
			continue
		}
		t.merged.throttle = min(t.merged.throttle, p.throttle)
		t.merged.queueLen = max(t.merged.queueLen, p.queueLen)
		if p.fragSize > 0 && (t.merged.fragSize == 0 || p.fragSize < t.merged.fragSize) {
			t.merged.fragSize = p.fragSize
		}
	}
	if len(t.queue) > t.merged.queueLen {
		t.queue = t.queue[len(t.queue)-t.merged.queueLen:]
	}
}

// queued is one topic message waiting in the shared out queue.
type queued struct {
	msg      *outMsg
	fragSize int
}

// client is one connected rosbridge client.
type client struct {
	m    *Mux
	conn *websocket.Conn
	id   uint64
	// trust is the verdict on the connection's Origin and Host: an
	// untrusted client may subscribe but not advertise, publish or call
	// services.
	trust origin.Verdict
	// guard watches the frames the client sends and when it last sent.
	guard *wire.FrameGuard

	mu       sync.Mutex
	topics   map[string]*topicState
	out      []queued   // ring buffer of topic messages, oldest first
	ctrl     [][][]byte // replies; one reply may be several fragments
	level    int
	closed   bool
	notify   chan struct{}
	bucket   tokenBucket
	lastRate time.Time
	frags    reassembly
	adverts  map[string]map[string]struct{} // topic -> advertise ids
	nextFrag uint64
	ctl      *lease.Conn // the client's place in the control lease (control.go)

	closeOnce sync.Once
}

func newClient(m *Mux, conn *websocket.Conn, trust origin.Verdict, guard *wire.FrameGuard) *client {
	c := &client{
		m:       m,
		conn:    conn,
		trust:   trust,
		guard:   guard,
		id:      m.nextClient.Add(1),
		topics:  map[string]*topicState{},
		level:   levelWarning,
		notify:  make(chan struct{}, 1),
		adverts: map[string]map[string]struct{}{},
	}
	c.bucket = tokenBucket{rate: m.opts.RateLimit, burst: float64(m.opts.RateBurst), tokens: float64(m.opts.RateBurst)}
	return c
}

func (c *client) close(code int, why string) {
	c.closeOnce.Do(func() {
		msg := websocket.FormatCloseMessage(code, why)
		_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(250*time.Millisecond))
		_ = c.conn.Close()
	})
}

// serve runs the client's reader on this goroutine and its writer on
// another until the connection ends or ctx does.
func (c *client) serve(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				c.m.log.Error("rosbridge client writer panicked", "client", c.id, "panic", r)
			}
			c.close(websocket.CloseInternalServerErr, "writer stopped")
		}()
		c.writeLoop(ctx)
	}()
	c.conn.SetReadLimit(c.m.opts.MaxMessageSize)
	for ctx.Err() == nil {
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			var le *wire.LimitError
			switch {
			case errors.As(err, &le):
				c.m.cnt.m.Closes.WithLabelValues(le.Reason).Inc()
				c.close(int(le.Code), le.Reason)
			case websocket.IsCloseError(err, websocket.CloseMessageTooBig) || err == websocket.ErrReadLimit:
				c.m.cnt.deny("invalid")
			}
			break
		}
		c.m.cnt.clientIn.Inc()
		if typ != websocket.TextMessage {
			c.m.cnt.deny("invalid")
			c.sendStatus(levelError, "", "sdr_ros accepts JSON text messages only")
			continue
		}
		if !utf8.Valid(data) {
			// RFC 6455 8.1: an endpoint receiving text that is not UTF-8
			// fails the connection, with 1007.
			c.m.cnt.deny(strictjson.ReasonInvalidUTF8)
			c.close(websocket.CloseInvalidFramePayloadData, "text message not valid UTF-8")
			break
		}
		c.handle(data, true)
	}
	cancel()
	<-done
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.close(websocket.CloseNormalClosure, "")
}

// handle runs one op from the client.
func (c *client) handle(data []byte, outer bool) {
	if outer && !c.allowRate() {
		return
	}
	msg, err := parseMessage(data)
	if err != nil || msg.Op == "" {
		kind, why := "invalid", "missing op"
		if err != nil {
			why = err.Error()
			var e *strictjson.Error
			if errors.As(err, &e) && e.Reason != strictjson.ReasonSyntax {
				kind = e.Reason
			}
		}
		c.m.cnt.deny(kind)
		c.sendStatus(levelError, "", "invalid rosbridge message: "+why)
		return
	}
	// Names are checked, and judged fully qualified, before any allowlist:
	// a name the allowlists cannot judge never reaches the upstream.
	// advertise, unadvertise, publish and call_service go upstream under
	// the name judged; subscribe under the name given, which the upstream
	// echoes in every message it sends (judged as the qualified one).
	var judged string
	switch msg.Op {
	case "subscribe", "advertise", "publish", "unadvertise":
		if msg.Topic == "" {
			break // refused below, as before
		}
		if judged, err = qualifyName(msg.Topic); err != nil {
			if msg.Op == "unadvertise" {
				return // nothing can be advertised under it
			}
			c.refuse("name", msg.ID, msg.Op+": "+err.Error())
			return
		}
		if msg.Op != "subscribe" {
			msg.Topic = judged
		}
	case "call_service":
		if msg.Service == "" {
			break
		}
		if judged, err = qualifyName(msg.Service); err != nil {
			c.m.cnt.deny("name")
			c.enqueueControl(statusMessage(levelError, msg.ID, "call_service: "+err.Error()), levelError)
			c.enqueueControl(serviceFailure(msg.ID, truncateName(msg.Service), err.Error()), levelNone)
			return
		}
		msg.Service = judged
	}
	m := c.m
	switch msg.Op {
	case "subscribe":
		c.subscribe(msg, judged)
	case "unsubscribe":
		if gone, compression := c.removeSub(msg.Topic, msg.ID); gone {
			m.unsubscribe(c, topicKey{msg.Topic, compression})
		}
	case "advertise":
		if msg.Topic == "" {
			c.refuse("invalid", msg.ID, "advertise: missing topic")
			return
		}
		if !c.trust.Trusted {
			c.refuseOrigin(msg.ID, "advertise "+msg.Topic)
			return
		}
		if !m.opts.Publish.Allows(msg.Topic) {
			c.refuse("publish", msg.ID, fmt.Sprintf("advertise %s refused: topic not in the publish allowlist", msg.Topic))
			return
		}
		// record the id first: an upstream status about the advertisement
		// may come back before m.advertise returns
		c.mu.Lock()
		ids := c.adverts[msg.Topic]
		if ids == nil {
			ids = map[string]struct{}{}
			c.adverts[msg.Topic] = ids
		}
		_, dup := ids[msg.ID]
		ids[msg.ID] = struct{}{}
		c.mu.Unlock()
		if dup {
			return
		}
		if err := m.advertise(c, msg.Topic, msg.Type); err != nil {
			c.mu.Lock()
			delete(ids, msg.ID)
			if len(ids) == 0 {
				delete(c.adverts, msg.Topic)
			}
			c.mu.Unlock()
			c.refuse("invalid", msg.ID, err.Error())
			return
		}
	case "unadvertise":
		c.mu.Lock()
		ids := c.adverts[msg.Topic]
		var drop []string
		for id := range ids {
			if msg.ID == "" || id == msg.ID {
				drop = append(drop, id)
			}
		}
		for _, id := range drop {
			delete(ids, id)
		}
		if len(ids) == 0 {
			delete(c.adverts, msg.Topic)
		}
		c.mu.Unlock()
		for range drop {
			m.unadvertise(c, msg.Topic)
		}
	case "publish":
		if msg.Topic == "" || len(msg.Msg) == 0 {
			c.refuse("invalid", msg.ID, "publish: missing topic or msg")
			return
		}
		if !c.trust.Trusted {
			c.refuseOrigin(msg.ID, "publish on "+msg.Topic)
			return
		}
		if !m.opts.Publish.Allows(msg.Topic) {
			c.refuse("publish", msg.ID, fmt.Sprintf("publish on %s refused: topic not in the publish allowlist", msg.Topic))
			return
		}
		if _, motion := m.motionSet[msg.Topic]; motion && !c.motionAllowed(msg.Topic, msg.ID) {
			return
		}
		if reply := m.publish(msg.Topic, msg.Msg, msg.ID); reply != nil {
			c.enqueueControl(reply, levelOf(reply))
		}
	case "call_service":
		if msg.Service == "" {
			c.refuse("invalid", msg.ID, "call_service: missing service")
			return
		}
		if !c.trust.Trusted {
			// A service can change state (rosapi/set_param, a robot's
			// own): treated as a command. The caller's callback fires.
			c.refuseOrigin(msg.ID, "call_service "+msg.Service)
			c.enqueueControl(serviceFailure(msg.ID, msg.Service, c.trust.Refusal()), levelNone)
			return
		}
		if c.controlService(msg) {
			return
		}
		if !m.opts.Services.Allows(msg.Service) {
			c.m.cnt.deny("service")
			c.enqueueControl(statusMessage(levelError, msg.ID, fmt.Sprintf("call_service %s refused: service not in the services allowlist", msg.Service)), levelError)
			c.enqueueControl(serviceFailure(msg.ID, msg.Service, "service not in the sdr_ros services allowlist"), levelNone)
			return
		}
		m.services.call(c, msg)
	case "set_level":
		l, ok := parseLevel(msg.Level)
		if !ok {
			c.refuse("invalid", msg.ID, fmt.Sprintf("set_level: unknown level %q", msg.Level))
			return
		}
		c.mu.Lock()
		c.level = l
		c.mu.Unlock()
	case "fragment":
		if !outer {
			c.refuse("invalid", msg.ID, "fragment inside a fragmented message")
			return
		}
		c.mu.Lock()
		whole, err := c.frags.add(msg, int(m.opts.MaxMessageSize))
		c.mu.Unlock()
		if err != nil {
			c.refuse("invalid", msg.ID, err.Error())
			return
		}
		if whole != nil {
			c.handle(whole, false)
		}
	default:
		c.refuse("op", msg.ID, fmt.Sprintf("op %q is not served by sdr_ros", msg.Op))
	}
}

// subscribe runs a subscribe op; judged is its topic fully qualified.
func (c *client) subscribe(msg *message, judged string) {
	m := c.m
	if msg.Topic == "" {
		c.refuse("invalid", msg.ID, "subscribe: missing topic")
		return
	}
	if !m.opts.Subscribe.Allows(judged) {
		c.refuse("subscribe", msg.ID, fmt.Sprintf("subscribe %s refused: topic not in the subscribe allowlist", msg.Topic))
		return
	}
	compression := msg.Compression
	if compression == "" {
		compression = "none"
	}
	if !compressions[compression] {
		c.refuse("subscribe", msg.ID, fmt.Sprintf("subscribe %s: compression %q is not served by sdr_ros; use none, cbor, cbor-raw or png", msg.Topic, msg.Compression))
		return
	}
	p := subParams{
		throttle: time.Duration(max(0, min(msg.ThrottleRate, maxThrottleMS))) * time.Millisecond,
		queueLen: max(0, min(msg.QueueLength, m.opts.ClientQueue)),
	}
	if msg.FragmentSize > 0 {
		p.fragSize = max(minFragment, msg.FragmentSize)
	}
	c.mu.Lock()
	t := c.topics[msg.Topic]
	fresh := t == nil
	if fresh && len(c.topics) >= maxClientTopics {
		c.mu.Unlock()
		c.refuse("subscribe", msg.ID, fmt.Sprintf("subscribe %s refused: a client may subscribe to at most %d topics", msg.Topic, maxClientTopics))
		return
	}
	if fresh {
		t = &topicState{compression: compression, ids: map[string]subParams{}}
		c.topics[msg.Topic] = t
	} else if t.compression != compression {
		// rosbridge_server too keeps one compression per topic per client
		have := t.compression
		c.mu.Unlock()
		c.refuse("subscribe", msg.ID, fmt.Sprintf("subscribe %s with compression %s: this client already subscribes to it with compression %s", msg.Topic, compression, have))
		return
	}
	if _, ok := t.ids[msg.ID]; !ok {
		t.order = append(t.order, msg.ID)
	}
	t.ids[msg.ID] = p
	t.merge()
	c.mu.Unlock()
	if err := m.subscribe(c, msg.Topic, msg.Type, compression, m.opts.Latched.Allows(judged)); err != nil {
		if gone, _ := c.removeSub(msg.Topic, msg.ID); gone && !fresh {
			m.unsubscribe(c, topicKey{msg.Topic, compression})
		}
		c.refuse("subscribe", msg.ID, err.Error())
	}
}

// removeSub drops one subscribe id (all of them when id is empty) and
// reports whether the client no longer subscribes to topic, and with which
// compression it did.
func (c *client) removeSub(topic, id string) (gone bool, compression string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.topics[topic]
	if t == nil {
		return false, ""
	}
	if id == "" {
		clear(t.ids)
	} else {
		delete(t.ids, id)
	}
	for i := 0; i < len(t.order); i++ {
		if _, ok := t.ids[t.order[i]]; !ok {
			t.order = append(t.order[:i], t.order[i+1:]...)
			i--
		}
	}
	if len(t.ids) > 0 {
		t.merge()
		return false, t.compression
	}
	delete(c.topics, topic)
	return true, t.compression
}

func (c *client) subscriptions() map[topicKey]struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[topicKey]struct{}, len(c.topics))
	for topic, t := range c.topics {
		out[topicKey{topic, t.compression}] = struct{}{}
	}
	return out
}

func (c *client) subscribeID(topic string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.topics[topic]; t != nil && len(t.order) > 0 {
		return t.order[0]
	}
	return ""
}

func (c *client) advertiseID(topic string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.adverts[topic] {
		return id
	}
	return ""
}

// offerTopic takes one upstream message for topic. It never blocks: the
// throttle and queue_length of the client's subscription apply here, and a
// full queue loses its oldest message.
func (c *client) offerTopic(topic string, msg *outMsg, now time.Time) {
	c.mu.Lock()
	t := c.topics[topic]
	if t == nil || c.closed {
		c.mu.Unlock()
		return
	}
	p := t.merged
	switch {
	case p.queueLen > 0:
		if len(t.queue) >= p.queueLen {
			t.queue = t.queue[1:]
			c.m.cnt.dropQueue.Inc()
		}
		t.queue = append(t.queue, msg)
	case p.throttle > 0 && !t.last.IsZero() && now.Sub(t.last) < p.throttle:
		c.mu.Unlock()
		c.m.cnt.dropThrottle.Inc()
		return
	default:
		t.last = now
		if len(c.out) >= c.m.opts.ClientQueue {
			c.out = c.out[1:]
			c.m.cnt.dropQueue.Inc()
		}
		c.out = append(c.out, queued{msg: msg, fragSize: p.fragSize})
	}
	c.mu.Unlock()
	c.wake()
}

func (c *client) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// sendStatus queues a status message if the client's level lets it through.
func (c *client) sendStatus(level int, id, msg string) {
	c.enqueueControl(statusMessage(level, id, msg), level)
}

// refuseOrigin refuses an op of an untrusted connection: counted as an
// origin denial, logged once per origin, and told with a status message.
func (c *client) refuseOrigin(id, what string) {
	c.m.refusals.Refused(c.trust, what)
	c.refuse("origin", id, what+" refused: "+c.trust.Refusal())
}

// refuse counts a denial of this kind and tells the client why.
func (c *client) refuse(kind, id, why string) {
	c.m.cnt.deny(kind)
	if c.m.log.Enabled(context.Background(), -4) { // slog.LevelDebug
		c.m.log.Debug("rosbridge op refused", "client", c.id, "kind", kind, "why", why)
	}
	c.sendStatus(levelError, id, why)
}

// enqueueControl queues a reply. level is a status message's level (it is
// dropped below the client's set_level); levelNone marks replies that are
// always sent (service responses).
func (c *client) enqueueControl(b []byte, level int) {
	c.enqueueReply([][]byte{b}, level)
}

// enqueueReply queues one reply made of one or more messages (fragments).
func (c *client) enqueueReply(parts [][]byte, level int) {
	c.mu.Lock()
	if c.closed || (level != levelNone && (level < c.level || c.level == levelNone)) {
		c.mu.Unlock()
		return
	}
	if len(c.ctrl) >= maxControl {
		c.mu.Unlock()
		c.m.log.Warn("rosbridge client too slow for its replies; disconnecting", "client", c.id)
		c.close(websocket.ClosePolicyViolation, "too slow")
		return
	}
	c.ctrl = append(c.ctrl, parts)
	c.mu.Unlock()
	c.wake()
}

// levelOf reads the level of a status message the mux built.
func levelOf(status []byte) int {
	var s struct {
		Level string `json:"level"`
	}
	_ = json.Unmarshal(status, &s)
	l, ok := parseLevel(s.Level)
	if !ok {
		return levelError
	}
	return l
}

// allowRate takes a token for one op. Over the limit the op is dropped and
// the client told so, at most once a second.
func (c *client) allowRate() bool {
	if c.m.opts.RateLimit < 0 {
		return true
	}
	now := time.Now()
	c.mu.Lock()
	ok := c.bucket.take(now)
	tell := !ok && now.Sub(c.lastRate) >= time.Second
	if tell {
		c.lastRate = now
	}
	c.mu.Unlock()
	if !ok {
		c.m.cnt.dropRate.Inc()
		if tell {
			c.sendStatus(levelError, "", fmt.Sprintf("rate limit of %g ops/s exceeded; ops dropped", c.m.opts.RateLimit))
		}
	}
	return ok
}

// writeLoop sends what is queued, pings, and releases throttled queues. A
// client that sent nothing since the previous ping (no pong, no op) is
// closed: its peer is gone, even if its socket still takes writes.
func (c *client) writeLoop(ctx context.Context) {
	var (
		pings  <-chan time.Time
		pinged time.Time
	)
	if every := c.m.opts.PingInterval; every > 0 {
		ping := time.NewTicker(every)
		defer ping.Stop()
		pings = ping.C
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-pings:
			if !pinged.IsZero() && c.guard.SilentSince(pinged) {
				c.m.cnt.m.Closes.WithLabelValues(reasonPingTimeout).Inc()
				c.close(websocket.CloseGoingAway, fmt.Sprintf("no pong or message for %s", now.Sub(pinged).Round(time.Millisecond)))
				return
			}
			pinged = now
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(clientWriteWait)); err != nil {
				return
			}
			continue
		case <-c.notify:
		case <-timer.C:
		}
		ctrl, msgs, wake := c.take(time.Now())
		for _, parts := range ctrl {
			for _, b := range parts {
				if c.write(websocket.TextMessage, b) != nil {
					return
				}
			}
		}
		for _, q := range msgs {
			if !c.writeTopic(q) {
				return
			}
		}
		if !wake.IsZero() {
			timer.Reset(time.Until(wake))
		}
	}
}

// reasonPingTimeout is the Closes reason of a client that answered no ping.
const reasonPingTimeout = "ping_timeout"

// take removes what may be sent now and returns when a throttled queue is
// next due (zero if none is).
func (c *client) take(now time.Time) (ctrl [][][]byte, msgs []queued, wake time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctrl, c.ctrl = c.ctrl, nil
	msgs = append(msgs, c.out...)
	c.out = c.out[:0:0]
	for _, t := range c.topics {
		if len(t.queue) == 0 {
			continue
		}
		p := t.merged
		if p.throttle == 0 {
			for _, msg := range t.queue {
				msgs = append(msgs, queued{msg: msg, fragSize: p.fragSize})
			}
			t.queue = t.queue[:0]
			continue
		}
		if due := t.last.Add(p.throttle); !t.last.IsZero() && now.Before(due) {
			if wake.IsZero() || due.Before(wake) {
				wake = due
			}
			continue
		}
		msgs = append(msgs, queued{msg: t.queue[0], fragSize: p.fragSize})
		t.queue = t.queue[1:]
		t.last = now
		if len(t.queue) > 0 {
			if due := now.Add(p.throttle); wake.IsZero() || due.Before(wake) {
				wake = due
			}
		}
	}
	return ctrl, msgs, wake
}

func (c *client) write(typ int, b []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(clientWriteWait))
	if err := c.conn.WriteMessage(typ, b); err != nil {
		return err
	}
	c.m.cnt.clientOut.Inc()
	return nil
}

func (c *client) writeTopic(q queued) bool {
	if q.fragSize > 0 && len(q.msg.data) > q.fragSize && q.msg.typ == websocket.TextMessage {
		c.nextFrag++
		id := "sdr_ros:frag:" + strconv.FormatUint(c.nextFrag, 10)
		for _, f := range fragments(id, q.msg.data, q.fragSize) {
			if c.write(websocket.TextMessage, f) != nil {
				return false
			}
		}
		return true
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(clientWriteWait))
	var err error
	if q.msg.prepared != nil {
		err = c.conn.WritePreparedMessage(q.msg.prepared)
	} else {
		err = c.conn.WriteMessage(q.msg.typ, q.msg.data)
	}
	if err != nil {
		return false
	}
	c.m.cnt.clientOut.Inc()
	return true
}

// tokenBucket is a plain token bucket; the caller holds the lock.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func (b *tokenBucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}
