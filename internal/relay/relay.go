// Package relay is the NATS side of /stream/ws and of the sdr_nats endpoint:
// telemetry from NATS to WebSocket clients as ready-to-send 0x02 messages,
// and 0x04 commands from one client to command.genesis.<action>, checked,
// rate limited and passed through the safety gate (docs/protocol.md:
// "WebSocket messages on /stream/ws", "Safety gate", "NATS subjects").
//
// The package imports nothing from Caddy.
package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/sdr-os/sdr-caddy/internal/cow"
	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/origin"
	"github.com/sdr-os/sdr-caddy/internal/strictjson"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// Defaults of the old transport-server and of this relay.
const (
	DefaultSubjects   = "telemetry.>"
	DefaultMaxPayload = 64 << 10
	DefaultMaxSubject = wire.MaxSubjectLen
	DefaultRate       = 50.0
	DefaultBurst      = 100
	CommandPrefix     = "command.genesis."
	SubjectAck        = "telemetry.command.ack"
	SubjectForceIDR   = CommandPrefix + "force_idr"
)

// Ack statuses sent back to the one client whose command did not go out.
const (
	StatusRejected    = "rejected"
	StatusGated       = "gated"
	StatusUnavailable = "unavailable"
	// StatusPublished only labels metrics: a published command gets no ack
	// from the relay (the simulator acks it).
	StatusPublished = "published"
	// StatusRejectedOrigin only labels metrics: a command refused for its
	// connection's Origin, acked StatusRejected.
	StatusRejectedOrigin = "rejected_origin"
	// StatusRejectedStrict prefixes the metrics label of a command refused
	// by the strict JSON check, acked StatusRejected: the label is
	// rejected_duplicate_key, rejected_invalid_utf8 or rejected_too_deep.
	StatusRejectedStrict = "rejected_"
	// StatusOK acks take_control and release_control when they succeed
	// (the control lease, docs/control.md).
	StatusOK = "ok"
	// StatusControl only labels metrics: take_control or release_control
	// answered ok.
	StatusControl = "control"
	// StatusRejectedNotController only labels metrics: a command refused by
	// the control lease, acked StatusRejected.
	StatusRejectedNotController = "rejected_not_controller"
	// StatusKept only labels metrics: a keep the flight recorder took,
	// acked StatusOK.
	StatusKept = "kept"
	// ActionKeep is the flight recorder's keep (docs/recorder.md): judged
	// like every command, then answered by the session's keep function and
	// never published.
	ActionKeep = "keep"
)

// Config holds the relay's limits. Zero fields take the defaults.
type Config struct {
	// Subjects is the telemetry allowlist: NATS subscription patterns.
	Subjects []string
	// MaxPayload is the largest telemetry payload relayed, in bytes.
	MaxPayload int
	// MaxSubject is the longest telemetry subject relayed, at most 256.
	MaxSubject int
	// Actions, when not empty, is the only actions a client may send.
	Actions []string
	// Rate is how many commands per second one client may send on average;
	// negative turns the limit off.
	Rate float64
	// Burst is how many commands one client may send at once.
	Burst int
	// Linger is the shortest time between two hand-offs of telemetry to
	// the clients: a message after a quiet spell goes at once, a dense
	// stream goes in batches, each client getting a whole batch in one go.
	// Batches cut the writes to each client (and so the cost to video) for
	// at most Linger of added latency. 0 hands each message on at once.
	Linger time.Duration
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if len(c.Subjects) == 0 {
		c.Subjects = []string{DefaultSubjects}
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.MaxSubject <= 0 || c.MaxSubject > wire.MaxSubjectLen {
		c.MaxSubject = DefaultMaxSubject
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.Burst <= 0 {
		c.Burst = DefaultBurst
	}
	return c
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	for _, s := range c.Subjects {
		if err := ValidatePattern(s); err != nil {
			return fmt.Errorf("telemetry allowlist: %w", err)
		}
	}
	for _, a := range c.Actions {
		if !ValidAction(a) {
			return fmt.Errorf("action allowlist: %q is not one token of [A-Za-z0-9_-]{1,64}", a)
		}
	}
	if c.MaxSubject > wire.MaxSubjectLen {
		return fmt.Errorf("telemetry subject cap %d exceeds the protocol's %d bytes", c.MaxSubject, wire.MaxSubjectLen)
	}
	return nil
}

// Metrics are the counters the relay updates; any may be nil.
type Metrics struct {
	// Telemetry counts telemetry messages by result: relayed, oversize,
	// subject_too_long.
	Telemetry *prometheus.CounterVec
	// Commands counts commands by status: published, rejected, gated,
	// unavailable, and, acked rejected, rejected_origin, the strict JSON
	// check's rejected_duplicate_key, rejected_invalid_utf8 and
	// rejected_too_deep, and the control lease's rejected_not_controller;
	// control counts take_control and release_control answered ok.
	Commands *prometheus.CounterVec
}

func (m *Metrics) telemetry(result string) {
	if m != nil && m.Telemetry != nil {
		m.Telemetry.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) command(status string) {
	if m != nil && m.Commands != nil {
		m.Commands.WithLabelValues(status).Inc()
	}
}

// Relay is the telemetry fan-out and command path over one NATS connection.
type Relay struct {
	nc      *nats.Conn
	cfg     Config
	actions map[string]bool
	log     *slog.Logger
	metrics *Metrics
	// refusals logs the first refused command of each untrusted origin.
	refusals *origin.RefusalLog

	mu      sync.Mutex
	subs    []*nats.Subscription
	clients cow.List[*client]
	closed  bool
	ch      chan *nats.Msg
	done    chan struct{}
}

type client struct {
	fn    func([]byte)
	batch func([][]byte)
}

// New subscribes to the telemetry allowlist on nc and returns the relay.
// log and metrics may be nil.
func New(nc *nats.Conn, cfg Config, log *slog.Logger, metrics *Metrics) (*Relay, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Relay{nc: nc, cfg: cfg, log: log, metrics: metrics, refusals: origin.NewRefusalLog(log)}
	if len(cfg.Actions) > 0 {
		r.actions = make(map[string]bool, len(cfg.Actions))
		for _, a := range cfg.Actions {
			r.actions[a] = true
		}
	}
	// One channel for every pattern keeps the order in which the server
	// sent the messages. A full channel drops (telemetry is lossy by
	// design; the client library counts a slow consumer), never blocking
	// the connection's reader or video.
	r.ch = make(chan *nats.Msg, telemetryBacklog)
	r.done = make(chan struct{})
	for _, p := range minimalPatterns(cfg.Subjects) {
		sub, err := nc.ChanSubscribe(p, r.ch)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("subscribing to telemetry %q: %w", p, err)
		}
		r.subs = append(r.subs, sub)
	}
	go r.deliver()
	return r, nil
}

// telemetryBacklog is how many telemetry messages may wait for delivery.
const telemetryBacklog = 8192

func (r *Relay) deliver() {
	batch := make([]*nats.Msg, 0, maxBatch)
	msgs := make([][]byte, 0, maxBatch)
	var timer *time.Timer
	if r.cfg.Linger > 0 {
		timer = time.NewTimer(time.Hour)
		timer.Stop()
		defer timer.Stop()
	}
	var last time.Time // when the previous batch was handed on
	for {
		select {
		case <-r.done:
			return
		case m := <-r.ch:
			batch = append(batch[:0], m)
		}
		if timer != nil {
			// At most one hand-off per Linger: a message after a quiet
			// spell goes at once, a dense stream goes in batches, and every
			// client gets each batch in one go (one write for its writer).
			if wait := time.Until(last.Add(r.cfg.Linger)); wait > 0 {
				timer.Reset(wait)
			gather:
				for len(batch) < maxBatch {
					select {
					case m := <-r.ch:
						batch = append(batch, m)
					case <-timer.C:
						break gather
					case <-r.done:
						return
					}
				}
				if len(batch) == maxBatch && !timer.Stop() {
					<-timer.C
				}
			}
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case m := <-r.ch:
				batch = append(batch, m)
			default:
				break drain
			}
		}
		msgs = msgs[:0]
		for _, m := range batch {
			if msg := r.frame(m); msg != nil {
				msgs = append(msgs, msg)
			}
		}
		clear(batch)
		last = time.Now()
		if len(msgs) == 0 {
			continue
		}
		for _, c := range r.clients.Load() {
			if c.batch != nil {
				c.batch(msgs)
				continue
			}
			for _, msg := range msgs {
				c.fn(msg)
			}
		}
	}
}

// maxBatch bounds how many telemetry messages are handed on together.
const maxBatch = 64

// Config returns the configuration in use, defaults applied.
func (r *Relay) Config() Config { return r.cfg }

// Conn returns the NATS connection.
func (r *Relay) Conn() *nats.Conn { return r.nc }

// frame checks one telemetry message against the caps and returns it as a
// 0x02 message, or nil when it is dropped or nobody listens.
func (r *Relay) frame(m *nats.Msg) []byte {
	if len(m.Subject) > r.cfg.MaxSubject {
		r.metrics.telemetry("subject_too_long")
		return nil
	}
	if len(m.Data) > r.cfg.MaxPayload {
		r.metrics.telemetry("oversize")
		return nil
	}
	if len(r.clients.Load()) == 0 {
		return nil
	}
	msg, err := wire.Telemetry(m.Subject, m.Data)
	if err != nil {
		r.metrics.telemetry("subject_too_long")
		return nil
	}
	r.metrics.telemetry("relayed")
	return msg
}

// SubscribeTelemetry calls fn with every relayed telemetry message, a
// complete 0x02 message shared by all subscribers (never modify it), until
// cancel is called. fn runs on the NATS delivery goroutine and must not
// block.
func (r *Relay) SubscribeTelemetry(fn func(msg []byte)) (cancel func()) {
	return r.subscribe(&client{fn: fn})
}

// SubscribeTelemetryBatch is SubscribeTelemetry for a subscriber that fans
// out itself: fn gets each batch of messages handed on together (one
// message, or more with Linger), so that it can queue them to each of its
// clients as one write. The slice is reused after fn returns; the messages
// are not.
func (r *Relay) SubscribeTelemetryBatch(fn func(msgs [][]byte)) (cancel func()) {
	return r.subscribe(&client{batch: fn})
}

func (r *Relay) subscribe(c *client) (cancel func()) {
	r.clients.Add(c)
	var once sync.Once
	return func() { once.Do(func() { r.clients.Remove(c) }) }
}

// RequestKeyframe publishes command.genesis.force_idr {"cmd_seq":0}.
// Callers coalesce. Nothing is queued while NATS is down.
func (r *Relay) RequestKeyframe() {
	if r.nc.Status() != nats.CONNECTED {
		return
	}
	if err := r.nc.Publish(SubjectForceIDR, []byte(`{"cmd_seq":0}`)); err != nil {
		r.log.Warn("requesting keyframe", "subject", SubjectForceIDR, "error", err)
	}
}

// Close unsubscribes from telemetry and stops delivery. Subscribers get
// nothing more.
func (r *Relay) Close() {
	r.mu.Lock()
	subs := r.subs
	r.subs = nil
	wasClosed := r.closed
	r.closed = true
	r.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	if !wasClosed && r.done != nil {
		close(r.done)
	}
}

// Session returns the command path of one client, gated by gate. onCodec,
// if not nil, is called after a settings command that names a codec went
// out (the gate's codec-change grace). trust is the verdict on the
// client's Origin (internal/origin), given at its upgrade: the commands of
// an untrusted client are all refused.
func (r *Relay) Session(gate frame.MotionGate, onCodec func(), trust origin.Verdict) *Session {
	s := &Session{r: r, gate: gate, onCodec: onCodec, trust: trust}
	if r.cfg.Rate > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(r.cfg.Rate), r.cfg.Burst)
	}
	return s
}

// Session is the command path of one WebSocket client.
type Session struct {
	r       *Relay
	gate    frame.MotionGate
	onCodec func()
	limiter *rate.Limiter
	trust   origin.Verdict
	control *lease.Conn // nil: the stream has no control lease
	keep    KeepFunc    // nil: keep is refused
}

// KeepFunc takes a keep that passed the command path's checks: data is the
// command's data member (nil when absent). It returns the kept window's
// JetStream stream (the ack's kept member) and the ack's detail, or
// an error saying why the keep is refused. It must not wait on the network.
type KeepFunc = func(data []byte) (kept, detail string, err error)

// SetKeep lets the session's client keep a window of the flight
// recording: a keep that passes the checks every command passes (the
// origin, the rate limit, the control lease, the action allowlist, the
// gate) goes to fn instead of NATS. Without it, keep is refused and never
// published.
func (s *Session) SetKeep(fn KeepFunc) { s.keep = fn }

// WithControl puts the session's client in a stream's control lease:
// take_control and release_control are answered by the session, and the
// client's other commands pass only as the lease allows (docs/control.md).
// The caller closes c when the client leaves. A nil c: no lease.
func (s *Session) WithControl(c *lease.Conn) *Session {
	s.control = c
	return s
}

// Control returns the client's place in the stream's control lease, nil
// when the stream has none.
func (s *Session) Control() *lease.Conn { return s.control }

// command is what the relay reads of a 0x04 body, each member found by
// its exact name; the body itself is published unchanged.
type command struct {
	Action json.RawMessage
	CmdSeq json.RawMessage
	Codec  json.RawMessage
	Data   json.RawMessage
}

// parseCommand reads the members of a body that passed strictjson.Check.
// Members are matched by their exact names, as the simulator's Python
// reads them: "ACTION" is not "action". It fails when the body is not an
// object.
func parseCommand(body []byte) (command, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return command{}, err
	}
	return command{Action: m["action"], CmdSeq: m["cmd_seq"], Codec: m["codec"], Data: m["data"]}, nil
}

// ack is the payload on telemetry.command.ack.
type ack struct {
	Action any             `json:"action"`
	CmdSeq json.RawMessage `json:"cmd_seq"`
	Status string          `json:"status"`
	Detail string          `json:"detail"`
	// Holder is the id of the connection that holds the control lease, in
	// the answer to take_control only.
	Holder string `json:"holder,omitempty"`
	// Kept is the JetStream stream of a kept window, in the answer to a
	// keep taken only.
	Kept string `json:"kept,omitempty"`
}

// Command takes the JSON body of one 0x04 message. It returns nil when the
// command was published on command.genesis.<action>, unchanged, or else the
// 0x02 message on telemetry.command.ack to send to this client alone.
//
// The body must pass strictjson.Check: a body with duplicate keys, keys
// equal but for case, invalid UTF-8 or nesting deeper than 32 reads
// differently to the relay (Go), the simulator (Python) and other readers,
// so it is refused with an ack saying why, and never published.
func (s *Session) Command(body []byte) []byte {
	if err := strictjson.Check(body); err != nil {
		var e *strictjson.Error
		if !errors.As(err, &e) || e.Reason == strictjson.ReasonSyntax {
			return s.reply(nil, nil, StatusRejected, "command is not valid JSON")
		}
		// The action is what may be ambiguous: not echoed. The cmd_seq is,
		// as Go reads it, so that the client can match the ack.
		var seq json.RawMessage
		if c, err := parseCommand(body); err == nil && isNumber(c.CmdSeq) {
			seq = c.CmdSeq
		}
		return s.replyCounted(nil, seq, StatusRejected, StatusRejectedStrict+e.Reason, "command refused: "+err.Error())
	}
	c, err := parseCommand(body)
	if err != nil {
		return s.reply(nil, nil, StatusRejected, "command is not a JSON object")
	}
	seq := c.CmdSeq
	if !isNumber(seq) {
		seq = nil
	}
	if len(c.Action) == 0 || string(c.Action) == "null" {
		return s.reply(nil, seq, StatusRejected, "command has no action")
	}
	var action string
	if err := json.Unmarshal(c.Action, &action); err != nil {
		return s.reply(nil, seq, StatusRejected, "action is not a string")
	}
	if !s.trust.Trusted {
		// Before the rate limit: a refused client must not use up the
		// budget it would have once its origin is added.
		s.r.refusals.Refused(s.trust, "command "+truncate(action))
		return s.replyCounted(action, seq, StatusRejected, StatusRejectedOrigin, s.trust.Refusal())
	}
	if s.limiter != nil && action != "estop" && !s.limiter.Allow() {
		return s.reply(action, seq, StatusRejected, fmt.Sprintf("rate limit of %g commands/s exceeded", s.r.cfg.Rate))
	}
	if !ValidAction(action) {
		return s.reply(action, seq, StatusRejected, "action must be one token of [A-Za-z0-9_-]{1,64}")
	}
	if reply, done := s.controlStep(action, seq); done {
		return reply
	}
	if s.r.actions != nil && !s.r.actions[action] {
		return s.reply(action, seq, StatusRejected, "action not allowed")
	}
	if s.gate != nil {
		if ok, mode := s.gate.Allow(action); !ok {
			return s.reply(action, seq, StatusGated, "video stale: safety gate "+mode)
		}
	}
	if action == ActionKeep {
		return s.keepStep(action, seq, c.Data)
	}
	if st := s.r.nc.Status(); st != nats.CONNECTED {
		return s.reply(action, seq, StatusUnavailable, "nats "+st.String())
	}
	if err := s.r.nc.Publish(CommandPrefix+action, body); err != nil {
		return s.reply(action, seq, StatusUnavailable, "publishing: "+err.Error())
	}
	s.r.metrics.command(StatusPublished)
	if action == "settings" && s.onCodec != nil && (len(c.Codec) > 0 || dataHasCodec(c.Data)) {
		s.onCodec()
	}
	return nil
}

// controlStep is the control lease's step (docs/control.md), after the
// origin, the rate limit and the action's form, before the action
// allowlist (the lease's own actions need no listing) and the gate:
// take_control and release_control are answered here and never published;
// any other action goes on only when the client may send it (the holder,
// estop, the viewer actions). Without a lease, everything goes on as
// before, take_control and release_control included.
func (s *Session) controlStep(action string, seq json.RawMessage) (reply []byte, done bool) {
	c := s.control
	if c == nil {
		return nil, false
	}
	switch action {
	case lease.ActionTake:
		ok, holder := c.Take()
		switch {
		case ok:
			return s.replyAck(ack{Action: action, CmdSeq: seq, Status: StatusOK, Detail: "you have control", Holder: holder}, StatusControl), true
		case holder == "":
			return s.reply(action, seq, StatusUnavailable, "control lease closed"), true
		}
		return s.replyAck(ack{Action: action, CmdSeq: seq, Status: StatusRejected, Detail: "control held by " + holder, Holder: holder},
			StatusRejectedNotController), true
	case lease.ActionRelease:
		if !c.Release() {
			return s.replyCounted(action, seq, StatusRejected, StatusRejectedNotController, lease.NotController), true
		}
		return s.replyAck(ack{Action: action, CmdSeq: seq, Status: StatusOK, Detail: "control released"}, StatusControl), true
	}
	if !c.Allow(action) {
		return s.replyCounted(action, seq, StatusRejected, StatusRejectedNotController, lease.NotController), true
	}
	return nil, false
}

// keepStep answers a keep that passed every check: the session's keep
// function takes it, or, without one, it is refused. It is never
// published.
func (s *Session) keepStep(action string, seq, data json.RawMessage) []byte {
	if s.keep == nil {
		return s.reply(action, seq, StatusRejected, "keep needs the sdr_recorder app and a /stream/ws connection")
	}
	kept, detail, err := s.keep(data)
	if err != nil {
		return s.reply(action, seq, StatusRejected, err.Error())
	}
	return s.replyAck(ack{Action: action, CmdSeq: seq, Status: StatusOK, Detail: detail, Kept: kept}, StatusKept)
}

func (s *Session) reply(action any, seq json.RawMessage, status, detail string) []byte {
	return s.replyCounted(action, seq, status, status, detail)
}

// replyCounted is reply with the metrics label apart from the ack's status.
func (s *Session) replyCounted(action any, seq json.RawMessage, status, label, detail string) []byte {
	return s.replyAck(ack{Action: action, CmdSeq: seq, Status: status, Detail: detail}, label)
}

// replyAck counts label and returns a as the 0x02 ack message.
func (s *Session) replyAck(a ack, label string) []byte {
	s.r.metrics.command(label)
	if action, ok := a.Action.(string); ok {
		a.Action = truncate(action)
	}
	p, err := json.Marshal(a)
	if err != nil {
		// Only invalid UTF-8 gets here; json.Marshal replaces it, so this
		// does not happen, but never answer nothing.
		p = fmt.Appendf(nil, `{"action":null,"cmd_seq":null,"status":%q,"detail":%q}`, a.Status, a.Detail)
	}
	msg, _ := wire.Telemetry(SubjectAck, p)
	return msg
}

// truncate cuts an action echoed in an ack or a log to 256 bytes.
func truncate(a string) string {
	if len(a) > 256 {
		return a[:256]
	}
	return a
}

func isNumber(raw json.RawMessage) bool {
	if len(raw) == 0 {
		return false
	}
	c := raw[0]
	return c == '-' || (c >= '0' && c <= '9')
}

func dataHasCodec(raw json.RawMessage) bool {
	if len(raw) == 0 || raw[0] != '{' {
		return false
	}
	var d map[string]json.RawMessage
	return json.Unmarshal(raw, &d) == nil && len(d["codec"]) > 0 && string(d["codec"]) != "null"
}
