// Package rosbridge multiplexes rosbridge v2 clients (roslibjs in browsers)
// onto one upstream connection to rosbridge_server.
//
// A Mux keeps one upstream WebSocket for topics and a small pool for service
// calls, each reconnecting with backoff. Topic subscriptions are shared: one
// upstream subscribe per topic however many clients subscribe, each upstream
// message is fanned out as the same bytes to every subscriber, and each
// client's throttle_rate, queue_length and fragment_size are applied here,
// per client, so that the upstream is never blocked by a client. Ops are
// checked against allowlists, and publishes on motion topics pass the video
// safety gate (frame.MotionGate).
//
// Every browser may connect and subscribe (watching is harmless); what
// changes the robot's state (advertise, publish, call_service) is refused
// on a connection whose Origin is not trusted (internal/origin). While the
// upstream is unreachable, new clients are refused with 502, as a plain
// reverse proxy in front of rosbridge_server answered, so that a client
// shows ROS as disconnected instead of connected to nothing. The package
// imports nothing from Caddy.
package rosbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/origin"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// Options configure a Mux. Zero values take the defaults named on each field.
type Options struct {
	// Upstream is the rosbridge_server WebSocket URL (ws:// or wss://).
	Upstream string
	// Subscribe, Publish and Services are the allowlists of topics a client
	// may subscribe to, topics it may advertise and publish on, and services
	// it may call (glob patterns, see Allowlist).
	Subscribe, Publish, Services Allowlist
	// Latched are the topics whose last message a client gets when it
	// subscribes to a topic another client already holds: rosbridge_server
	// replays transient_local ("latched") topics to each new subscriber,
	// but only once per upstream subscription, which the mux shares.
	Latched Allowlist
	// MotionTopics are the topics whose publishes pass the safety gate.
	MotionTopics []string
	// Gate is the safety gate of the video stream that motion publishes
	// answer to. Nil means there is no gate (see also SetGate).
	Gate frame.MotionGate
	// StopMessage is the message published upstream on a motion topic once
	// per gated episode; default a zero geometry_msgs/Twist.
	StopMessage json.RawMessage
	// AllowMotionWithoutGate lets motion publishes through when Gate is nil.
	// By default they are refused.
	AllowMotionWithoutGate bool
	// ServiceTimeout bounds a service call; default 10 s.
	ServiceTimeout time.Duration
	// ServiceConnections is the number of upstream connections reserved for
	// service calls; default 2.
	ServiceConnections int
	// ClientQueue is how many messages may wait for one client before the
	// oldest is dropped; default 100.
	ClientQueue int
	// MaxMessageSize caps a client's message, fragments reassembled; default
	// 1 MiB.
	MaxMessageSize int64
	// MaxUpstreamMessageSize caps a message from rosbridge_server; default
	// 64 MiB.
	MaxUpstreamMessageSize int64
	// RateLimit is the ops per second a client may send (token bucket) and
	// RateBurst the bucket size; defaults 100 and 200. Negative disables.
	RateLimit float64
	RateBurst int
	// Origins are the browser origins trusted to advertise, publish and
	// call services besides the page's own host on any port, the host a
	// proxy names in X-Forwarded-Host and loopback origins (see
	// internal/origin: scheme://host[:port], "*" wildcards, "*" alone for
	// any). Every origin may connect and subscribe.
	Origins []string
	// Hosts are the names in a browser's Host header trusted besides IP
	// addresses, loopback, single-label, *.local and *.ts.net names (the
	// DNS rebinding guard, see internal/origin): host names, "*"
	// wildcards, "*" alone for any.
	Hosts []string
	// FrameLimits bound the frames a client sends (fragments per message,
	// frames per second); over them it is closed with 1009 or 1008.
	FrameLimits wire.FrameLimits
	// PingInterval is how often each client is pinged; a client that sent
	// nothing since the previous ping is closed. Default 20 s; negative:
	// no pings.
	PingInterval time.Duration
	// MinBackoff and MaxBackoff bound the upstream reconnect delay; defaults
	// 100 ms and 5 s.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives the mux's logs; default slog.Default().
	Logger *slog.Logger
	// Metrics receives counts; nil counts nowhere.
	Metrics *Metrics
}

// Mux is a running rosbridge multiplexer. It serves clients through
// ServeHTTP and must be closed.
type Mux struct {
	opts Options
	log  *slog.Logger
	cnt  *counters

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	upgrader websocket.Upgrader
	dialer   *websocket.Dialer
	origins  *origin.Policy
	refusals *origin.RefusalLog
	main     *link // compression "none" topics, advertisements, publishes
	services *servicePool

	mu        sync.Mutex // guards the fields below and orders upstream restores
	topics    map[topicKey]*upTopic
	lanes     map[string]*link // compression -> its topic connection
	adverts   map[string]*upAdvert
	byUpID    map[string]upRef // upstream subscribe/advertise id -> what it names
	clients   map[*client]struct{}
	nextUpID  uint64
	closed    bool
	started   bool // Start has run: the lanes connect
	gatedMu   sync.Mutex
	gated     map[string]bool // motion topic -> in a gated episode
	gates     []ownedGate     // the newest is the gate in force
	leases    []ownedLease    // the newest is the control lease in force
	lastPass  map[string]time.Time
	kick      chan struct{} // wakes the motion watcher
	motionSet map[string]struct{}

	nextClient atomic.Uint64
}

// ownedGate is a gate and whoever installed it (SetGate).
type ownedGate struct {
	owner any
	gate  frame.MotionGate
}

// upRef names the upstream subscription or advertisement behind an id.
type upRef struct {
	advert bool
	key    topicKey
}

// topicKey names an upstream subscription. rosbridge_server keeps one
// subscription per topic per connection, so each compression has a
// connection (lane) of its own.
type topicKey struct{ topic, compression string }

// cborHead decodes the op and topic of a CBOR message and skips the rest,
// whatever tags (typed arrays) it holds.
var cborHead, _ = cbor.DecOptions{MaxNestedLevels: 64, MaxArrayElements: 1 << 27, MaxMapPairs: 1 << 20}.DecMode()

// compressions are the subscription compressions sdr_ros serves.
var compressions = map[string]bool{"none": true, "cbor": true, "cbor-raw": true, "png": true}

// upTopic is one upstream subscription and its subscribers.
type upTopic struct {
	key       topicKey
	typ, upID string
	subs      map[*client]struct{}
	fanout    atomic.Pointer[[]*client]
	latched   bool
	last      *outMsg // latched topics: the newest message
}

// upAdvert is one upstream advertisement and the clients holding it.
type upAdvert struct {
	topic, typ, upID string
	holders          map[*client]int
}

// New checks opts and returns the Mux; Start connects it.
func New(opts Options) (*Mux, error) {
	u, err := url.Parse(opts.Upstream)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return nil, fmt.Errorf("rosbridge upstream %q: want a ws:// or wss:// URL", opts.Upstream)
	}
	if opts.ServiceTimeout <= 0 {
		opts.ServiceTimeout = 10 * time.Second
	}
	if opts.ServiceConnections <= 0 {
		opts.ServiceConnections = 2
	}
	if opts.ClientQueue <= 0 {
		opts.ClientQueue = 100
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = 1 << 20
	}
	if opts.MaxUpstreamMessageSize <= 0 {
		opts.MaxUpstreamMessageSize = 64 << 20
	}
	if opts.RateLimit == 0 {
		opts.RateLimit = 100
	}
	if opts.RateBurst <= 0 {
		opts.RateBurst = max(1, int(2*opts.RateLimit))
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(5*time.Second, opts.MinBackoff)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.StopMessage == nil {
		opts.StopMessage = zeroTwist
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(opts.StopMessage, &obj); err != nil {
		return nil, fmt.Errorf("stop message %s: want a JSON object: %w", opts.StopMessage, err)
	}
	if opts.PingInterval == 0 {
		opts.PingInterval = defaultPingInterval
	}
	origins, err := origin.NewPolicy(opts.Origins, opts.Hosts...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mux{
		opts:      opts,
		log:       opts.Logger,
		cnt:       newCounters(opts.Metrics),
		ctx:       ctx,
		cancel:    cancel,
		topics:    map[topicKey]*upTopic{},
		lanes:     map[string]*link{},
		adverts:   map[string]*upAdvert{},
		byUpID:    map[string]upRef{},
		clients:   map[*client]struct{}{},
		gated:     map[string]bool{},
		lastPass:  map[string]time.Time{},
		kick:      make(chan struct{}, 1),
		motionSet: map[string]struct{}{},
		origins:   origins,
		refusals:  origin.NewRefusalLog(opts.Logger),
	}
	for _, t := range opts.MotionTopics {
		// publishes are judged by their fully qualified topic
		full, err := qualifyName(t)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("motion topic: %w", err)
		}
		m.motionSet[full] = struct{}{}
	}
	if opts.Gate != nil {
		m.gates = []ownedGate{{owner: nil, gate: opts.Gate}}
	}
	// Every origin may connect; what it may do is judged (m.origins).
	m.upgrader = websocket.Upgrader{CheckOrigin: wire.AnyOrigin, ReadBufferSize: 4096, WriteBufferSize: 4096}
	m.dialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 64 << 10, WriteBufferSize: 16 << 10}
	m.mu.Lock()
	m.main = m.lane("none")
	m.mu.Unlock()
	m.services = newServicePool(m, m.dialer)
	return m, nil
}

// Start connects to rosbridge_server (and keeps reconnecting) and starts
// the motion watch. New dials nothing, so that a configuration can be
// checked without touching the upstream. Calls after the first, and calls
// after Close, do nothing.
func (m *Mux) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.closed {
		return
	}
	m.started = true
	for _, l := range m.lanes {
		m.runLane(l)
	}
	m.services.start(m.ctx, &m.wg)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.watchMotion(m.ctx)
	}()
}

// Close disconnects every client and the upstream and waits for the mux's
// goroutines to end.
func (m *Mux) Close() {
	m.mu.Lock()
	m.closed = true
	clients := make([]*client, 0, len(m.clients))
	for c := range m.clients {
		clients = append(clients, c)
	}
	m.mu.Unlock()
	m.cancel()
	// in parallel: a client whose socket is full holds its close frame up
	// to the write deadline
	var closing sync.WaitGroup
	for _, c := range clients {
		closing.Go(func() { c.close(websocket.CloseGoingAway, "server shutting down") })
	}
	closing.Wait()
	m.wg.Wait()
}

// Connected reports whether the topic connection to rosbridge_server is up.
func (m *Mux) Connected() bool { return m.main.connected() }

// Clients is the number of connected clients.
func (m *Mux) Clients() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.clients)
}

// UpstreamTopics is the number of topics subscribed upstream.
func (m *Mux) UpstreamTopics() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.topics)
}

// ServeHTTP upgrades a rosbridge client and serves it until it leaves.
// While the topic connection to rosbridge_server is down (never up yet, or
// lost and not back) a new client gets 502 Bad Gateway; the clients already
// connected stay, and their subscriptions are restored when it is back.
func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "sdr_ros: expected a rosbridge WebSocket upgrade", http.StatusBadRequest)
		return
	}
	if !m.main.connected() {
		m.cnt.m.UpstreamRefused.Inc()
		http.Error(w, "sdr_ros: rosbridge upstream "+m.opts.Upstream+" is not connected", http.StatusBadGateway)
		return
	}
	trust := m.origins.Judge(r)
	guard := wire.NewFrameGuard(m.opts.FrameLimits)
	conn, err := m.upgrader.Upgrade(wire.Hijackable(w, guard), r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	c := newClient(m, conn, trust, guard)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		c.close(websocket.CloseGoingAway, "server shutting down")
		return
	}
	m.clients[c] = struct{}{}
	m.mu.Unlock()
	m.cnt.m.Clients.Inc()
	defer m.cnt.m.Clients.Dec()
	c.serve(m.ctx)
	m.forget(c)
}

// forget removes everything a departed client held.
func (m *Mux) forget(c *client) {
	c.leaveControl()
	m.services.cancelClient(c)
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.clients, c)
	for key := range c.subscriptions() {
		m.dropSubscriber(c, key)
	}
	for topic, a := range m.adverts {
		if a.holders[c] > 0 {
			delete(a.holders, c)
			m.maybeUnadvertise(a, topic)
		}
	}
}

func (m *Mux) newUpID(kind string) string {
	m.nextUpID++
	return "sdr_ros:" + kind + ":" + strconv.FormatUint(m.nextUpID, 10)
}

// lane returns the topic connection of a compression, starting it on first
// use. It runs under m.mu.
func (m *Mux) lane(compression string) *link {
	if l := m.lanes[compression]; l != nil {
		return l
	}
	name := "topics"
	if compression != "none" {
		name = "topics-" + compression
	}
	l := &link{
		name: name, url: m.opts.Upstream, dialer: m.dialer, log: m.log,
		minBackoff: m.opts.MinBackoff, maxBackoff: m.opts.MaxBackoff, readLimit: m.opts.MaxUpstreamMessageSize,
		guard: &m.mu, up: func() error { return m.restore(compression) },
		onMessage: func(typ int, data []byte) { m.fromUpstream(compression, typ, data) },
	}
	m.lanes[compression] = l
	if m.started {
		m.runLane(l)
	}
	return l
}

// runLane connects a topic lane; under m.mu.
func (m *Mux) runLane(l *link) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		l.run(m.ctx)
	}()
}

// restore runs under m.mu on every new topic connection: it subscribes and
// advertises again whatever the clients hold on that lane.
func (m *Mux) restore(compression string) error {
	l := m.lanes[compression]
	if compression == "none" {
		for _, a := range m.adverts {
			if err := m.sendOn(l, advertiseMsg(a)); err != nil {
				return err
			}
		}
	}
	for _, t := range m.topics {
		if t.key.compression == compression {
			if err := m.sendOn(l, subscribeMsg(t)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *Mux) sendUp(b []byte) error { return m.sendOn(m.main, b) }

func (m *Mux) sendOn(l *link, b []byte) error {
	err := l.send(b)
	if err == nil {
		m.cnt.upOut.Inc()
	}
	return err
}

func subscribeMsg(t *upTopic) []byte {
	b, _ := json.Marshal(message{Op: "subscribe", ID: t.upID, Topic: t.key.topic, Type: t.typ, Compression: t.key.compression})
	return b
}

func advertiseMsg(a *upAdvert) []byte {
	b, _ := json.Marshal(message{Op: "advertise", ID: a.upID, Topic: a.topic, Type: a.typ})
	return b
}

// subscribe adds c as a subscriber of topic with this compression,
// subscribing upstream when it is the first; latched says whether the
// topic is one of Options.Latched. It runs under the client's op loop.
func (m *Mux) subscribe(c *client, topic, typ, compression string, latched bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("sdr_ros is shutting down")
	}
	key := topicKey{topic, compression}
	t := m.topics[key]
	if t == nil {
		t = &upTopic{key: key, typ: typ, upID: m.newUpID("sub"), subs: map[*client]struct{}{}, latched: latched}
		m.topics[key] = t
		m.byUpID[t.upID] = upRef{key: key}
		m.cnt.m.UpstreamSubscriptions.Inc()
		if err := m.sendOn(m.lane(compression), subscribeMsg(t)); err != nil && !errors.Is(err, errNotConnected) {
			m.log.Warn("rosbridge upstream subscribe not sent; it is restored on reconnect", "topic", topic, "error", err)
		}
	} else if !sameType(t.typ, typ) {
		return fmt.Errorf("topic %s is subscribed upstream as type %s, not %s", topic, t.typ, typ)
	}
	if _, ok := t.subs[c]; !ok {
		t.subs[c] = struct{}{}
		t.publishFanout()
		if t.last != nil {
			// under m.mu, so that a newer message cannot overtake it
			c.offerTopic(topic, t.last, time.Now())
		}
	}
	return nil
}

// unsubscribe removes c from a topic it no longer holds a subscription id
// on.
func (m *Mux) unsubscribe(c *client, key topicKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropSubscriber(c, key)
}

// dropSubscriber runs under m.mu.
func (m *Mux) dropSubscriber(c *client, key topicKey) {
	t := m.topics[key]
	if t == nil {
		return
	}
	if _, ok := t.subs[c]; !ok {
		return
	}
	delete(t.subs, c)
	t.publishFanout()
	if len(t.subs) > 0 {
		return
	}
	delete(m.topics, key)
	delete(m.byUpID, t.upID)
	m.cnt.m.UpstreamSubscriptions.Dec()
	b, _ := json.Marshal(message{Op: "unsubscribe", ID: t.upID, Topic: key.topic})
	if err := m.sendOn(m.lane(key.compression), b); err != nil && !errors.Is(err, errNotConnected) {
		m.log.Warn("rosbridge upstream unsubscribe not sent", "topic", key.topic, "error", err)
	}
}

func (t *upTopic) publishFanout() {
	list := make([]*client, 0, len(t.subs))
	for c := range t.subs {
		list = append(list, c)
	}
	t.fanout.Store(&list)
}

// advertise registers c as a publisher of topic, advertising upstream when
// it is the first.
func (m *Mux) advertise(c *client, topic, typ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.adverts[topic]
	if a == nil {
		if typ == "" {
			return fmt.Errorf("advertise %s: missing type", topic)
		}
		a = &upAdvert{topic: topic, typ: typ, upID: m.newUpID("adv"), holders: map[*client]int{}}
		m.adverts[topic] = a
		m.byUpID[a.upID] = upRef{advert: true, key: topicKey{topic, "none"}}
		if err := m.sendUp(advertiseMsg(a)); err != nil && !errors.Is(err, errNotConnected) {
			m.log.Warn("rosbridge upstream advertise not sent; it is restored on reconnect", "topic", topic, "error", err)
		}
	} else if !sameType(a.typ, typ) {
		return fmt.Errorf("topic %s is advertised upstream as type %s, not %s", topic, a.typ, typ)
	}
	a.holders[c]++
	return nil
}

// unadvertise drops one of c's advertisements of topic.
func (m *Mux) unadvertise(c *client, topic string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.adverts[topic]
	if a == nil || a.holders[c] == 0 {
		return
	}
	if a.holders[c]--; a.holders[c] == 0 {
		delete(a.holders, c)
	}
	m.maybeUnadvertise(a, topic)
}

func (m *Mux) maybeUnadvertise(a *upAdvert, topic string) {
	if len(a.holders) > 0 {
		return
	}
	delete(m.adverts, topic)
	delete(m.byUpID, a.upID)
	b, _ := json.Marshal(message{Op: "unadvertise", ID: a.upID, Topic: topic})
	if err := m.sendUp(b); err != nil && !errors.Is(err, errNotConnected) {
		m.log.Warn("rosbridge upstream unadvertise not sent", "topic", topic, "error", err)
	}
}

// publish forwards a client's publish upstream, through the safety gate
// when topic is a motion topic. It returns a status to send that client, or
// nil.
func (m *Mux) publish(topic string, msg json.RawMessage, id string) []byte {
	if _, motion := m.motionSet[topic]; motion {
		if reply := m.gateMotion(topic, id); reply != nil {
			return reply
		}
	}
	b, _ := json.Marshal(message{Op: "publish", Topic: topic, Msg: msg})
	if err := m.sendUp(b); err != nil {
		return statusMessage(levelError, id, fmt.Sprintf("publish on %s not sent: %v", topic, err))
	}
	return nil
}

// fromUpstream routes one message from the topic connection of a
// compression: JSON text, or a CBOR publish on a cbor lane.
func (m *Mux) fromUpstream(compression string, typ int, data []byte) {
	m.cnt.upIn.Inc()
	var head struct {
		Op    string          `json:"op" cbor:"op"`
		ID    string          `json:"id" cbor:"-"`
		Topic string          `json:"topic" cbor:"topic"`
		Level string          `json:"level" cbor:"-"`
		Msg   json.RawMessage `json:"msg" cbor:"-"`
		Data  string          `json:"data" cbor:"-"`
	}
	var err error
	switch {
	case typ == websocket.TextMessage:
		err = json.Unmarshal(data, &head)
	case compression == "cbor" || compression == "cbor-raw":
		err = cborHead.Unmarshal(data, &head)
	default:
		m.log.Warn("binary message from rosbridge upstream ignored", "lane", compression, "bytes", len(data))
		return
	}
	if err == nil && head.Op == "png" && compression == "png" {
		// the topic is inside the image; the subscribers get the png op
		// as it came
		var inner []byte
		if inner, err = pngPayload(head.Data, m.opts.MaxUpstreamMessageSize); err == nil {
			err = json.Unmarshal(inner, &head)
		}
	}
	if err != nil {
		m.log.Warn("invalid message from rosbridge upstream", "lane", compression, "error", err)
		return
	}
	switch head.Op {
	case "publish":
		now := time.Now()
		msg := newOutMsg(typ, data, now)
		m.mu.Lock()
		t := m.topics[topicKey{head.Topic, compression}]
		var fan *[]*client
		if t != nil {
			if t.latched {
				t.last = msg
			}
			fan = t.fanout.Load()
		}
		m.mu.Unlock()
		if fan == nil {
			return // unsubscribed meanwhile
		}
		for _, c := range *fan {
			c.offerTopic(head.Topic, msg, now)
		}
	case "status":
		var text string
		_ = json.Unmarshal(head.Msg, &text)
		level, ok := parseLevel(head.Level)
		if !ok {
			level = levelError
		}
		m.mu.Lock()
		ref, known := m.byUpID[head.ID]
		var to []*client
		if t := m.topics[ref.key]; known && !ref.advert && t != nil {
			for c := range t.subs {
				to = append(to, c)
			}
		}
		if a := m.adverts[ref.key.topic]; known && ref.advert && a != nil {
			for c := range a.holders {
				to = append(to, c)
			}
		}
		m.mu.Unlock()
		if len(to) == 0 {
			m.log.Info("rosbridge upstream status", "level", head.Level, "id", head.ID, "msg", text)
			return
		}
		for _, c := range to {
			id := c.subscribeID(ref.key.topic)
			if ref.advert {
				id = c.advertiseID(ref.key.topic)
			}
			c.sendStatus(level, id, "upstream: "+text)
		}
	case "fragment", "png":
		m.log.Warn("rosbridge upstream sent an op sdr_ros never asks for on its topic connection", "op", head.Op)
	default:
		m.log.Debug("rosbridge upstream op ignored", "op", head.Op)
	}
}
