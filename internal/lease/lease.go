// Package lease is the control lease of a stream: when it is on, one
// connection at a time holds control of the robot, and the others watch
// (docs/control.md).
//
// A connection takes the lease explicitly (take_control), and gives it back
// with release_control, by closing, or by sending nothing for the idle
// timeout. Every command path (0x04 on /stream/ws and /nats/ws, WebRTC
// DataChannels, ROS publishes on motion topics) asks its connection's Conn
// whether an action may pass: the holder's do, estop always does, the
// viewer actions do; everything else of a viewer is refused as "not the
// controller". Every change is published on telemetry.control.lease, so
// that every client of every site sees who holds control.
//
// The package imports nothing from Caddy.
package lease

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdr-os/sdr-caddy/internal/wire"
)

const (
	// ActionTake and ActionRelease are the commands the lease answers
	// itself on every command path; they are never published.
	ActionTake    = "take_control"
	ActionRelease = "release_control"
	// ActionEstop passes whoever sends it, always.
	ActionEstop = "estop"
	// Subject carries the lease's state: on every change, to everyone over
	// NATS, and to each connection alone when it joins.
	Subject = "telemetry.control.lease"
	// NotController is why a viewer's command was refused.
	NotController = "not the controller"
	// DefaultIdle is how long the holder may send nothing before the lease
	// is released.
	DefaultIdle = 30 * time.Second
)

// DefaultViewerActions are the actions a viewer may send besides estop:
// they change nothing the controller relies on.
var DefaultViewerActions = []string{"force_idr", "list_policies"}

// Config is a lease's setting. Zero fields take the defaults.
type Config struct {
	// Stream names the stream whose robot the lease protects; it is in
	// every state message, so that a client of several streams can tell
	// their leases apart.
	Stream string
	// Idle releases the lease when its holder has sent no command for this
	// long. 0 takes DefaultIdle; negative: never.
	Idle time.Duration
	// ViewerActions are the actions that pass for every connection, holder
	// or not, besides estop, which always passes. Empty takes
	// DefaultViewerActions.
	ViewerActions []string
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Idle == 0 {
		c.Idle = DefaultIdle
	}
	if len(c.ViewerActions) == 0 {
		c.ViewerActions = DefaultViewerActions
	}
	return c
}

var token = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	for _, a := range c.ViewerActions {
		switch {
		case !token.MatchString(a):
			return fmt.Errorf("viewer action %q is not one token of [A-Za-z0-9_-]{1,64}", a)
		case a == ActionTake || a == ActionRelease || a == ActionEstop:
			return fmt.Errorf("viewer action %q: %s, %s and %s need no listing", a, ActionTake, ActionRelease, ActionEstop)
		}
	}
	return nil
}

// Metrics are what a lease counts; any may be nil. Labels are bounded: the
// stream is curried in by the caller.
type Metrics struct {
	// Held is 1 while a connection holds the lease.
	Held prometheus.Gauge
	// Takes counts take_control by result: taken, refused.
	Takes *prometheus.CounterVec
	// Releases counts the ends of holds by reason: released, closed, idle.
	Releases *prometheus.CounterVec
	// Refused counts commands refused as not the controller's.
	Refused prometheus.Counter
}

// Release reasons, as counted and logged.
const (
	reasonReleased = "released"
	reasonClosed   = "closed"
	reasonIdle     = "idle"
)

// Lease is the control lease of one stream.
type Lease struct {
	cfg     Config
	viewer  map[string]bool
	publish func(subject string, payload []byte) error
	log     *slog.Logger
	m       Metrics

	mu     sync.Mutex
	holder *Conn
	since  time.Time // when the holder took it
	last   time.Time // the holder's last command
	timer  *time.Timer
	closed bool
}

// New returns the lease of cfg.Stream. publish sends its state messages to
// every client (NATS); log and metrics may be nil.
func New(cfg Config, publish func(subject string, payload []byte) error, log *slog.Logger, metrics *Metrics) (*Lease, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if publish == nil {
		return nil, errors.New("lease without a publisher")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Lease{cfg: cfg, viewer: map[string]bool{}, publish: publish, log: log}
	if metrics != nil {
		l.m = *metrics
	}
	for _, a := range cfg.ViewerActions {
		l.viewer[a] = true
	}
	if l.m.Held != nil {
		l.m.Held.Set(0)
	}
	return l, nil
}

// Config returns the configuration in use, defaults applied.
func (l *Lease) Config() Config { return l.cfg }

// Conn returns a new connection's place in the lease, with an opaque id of
// its own. Close it when the connection ends.
func (l *Lease) Conn() *Conn { return &Conn{l: l, id: newID()} }

// State is who holds the lease.
type State struct {
	Held   bool
	Holder string    // the holder's Conn id
	Since  time.Time // when it took the lease
}

// State returns who holds the lease now.
func (l *Lease) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stateLocked()
}

func (l *Lease) stateLocked() State {
	if l.holder == nil {
		return State{}
	}
	return State{Held: true, Holder: l.holder.id, Since: l.since}
}

// Close ends the lease: the holder loses it without a message (the
// configuration that owned the lease is gone), and nothing is published
// after.
func (l *Lease) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.holder = nil
	if l.timer != nil {
		l.timer.Stop()
	}
	if l.m.Held != nil {
		l.m.Held.Set(0)
	}
}

// stateMessage is the payload on Subject.
type stateMessage struct {
	Stream  string `json:"stream"`
	Held    bool   `json:"held"`
	Holder  string `json:"holder,omitempty"`
	SinceMS int64  `json:"since_ms,omitempty"`
	// You is the receiving connection's own id, in the message it gets
	// alone when it joins.
	You string `json:"you,omitempty"`
}

func (l *Lease) payload(s State, you string) []byte {
	m := stateMessage{Stream: l.cfg.Stream, Held: s.Held, Holder: s.Holder, You: you}
	if s.Held {
		m.SinceMS = s.Since.UnixMilli()
	}
	b, _ := json.Marshal(m) // strings and numbers only
	return b
}

// changedLocked publishes the new state and updates the gauge.
func (l *Lease) changedLocked() {
	s := l.stateLocked()
	if l.m.Held != nil {
		l.m.Held.Set(b2f(s.Held))
	}
	if err := l.publish(Subject, l.payload(s, "")); err != nil {
		l.log.Warn("publishing control lease state", "stream", l.cfg.Stream, "error", err)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// releaseLocked ends the current hold.
func (l *Lease) releaseLocked(reason string) {
	id := l.holder.id
	held := time.Since(l.since)
	l.holder = nil
	if l.timer != nil {
		l.timer.Stop()
	}
	if l.m.Releases != nil {
		l.m.Releases.WithLabelValues(reason).Inc()
	}
	l.log.Info("control released", "stream", l.cfg.Stream, "holder", id, "reason", reason, "held", held.Round(time.Millisecond))
	l.changedLocked()
}

// expire runs on the idle timer: it releases a holder idle for Idle, or
// waits for the rest of the holder's time.
func (l *Lease) expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holder == nil || l.closed {
		return
	}
	if wait := time.Until(l.last.Add(l.cfg.Idle)); wait > 0 {
		l.timer.Reset(wait)
		return
	}
	l.releaseLocked(reasonIdle)
}

// Conn is one connection's place in a lease. A nil *Conn is a connection of
// a stream without a lease: everything passes, and it never holds control.
type Conn struct {
	l  *Lease
	id string
}

// ID is the connection's opaque id, as the state messages name the holder.
func (c *Conn) ID() string {
	if c == nil {
		return ""
	}
	return c.id
}

// Lease returns the lease the connection belongs to (nil for a nil Conn).
func (c *Conn) Lease() *Lease {
	if c == nil {
		return nil
	}
	return c.l
}

// Take takes the lease for c. It fails while another connection holds it
// and has sent a command within the idle timeout; holder is then that
// connection's id, or c's own on success. Taking a lease c holds already
// succeeds.
func (c *Conn) Take() (ok bool, holder string) {
	if c == nil {
		return false, ""
	}
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false, ""
	}
	now := time.Now()
	switch {
	case l.holder == c:
		l.last = now
		return true, c.id
	case l.holder != nil && (l.cfg.Idle < 0 || now.Sub(l.last) < l.cfg.Idle):
		if l.m.Takes != nil {
			l.m.Takes.WithLabelValues("refused").Inc()
		}
		return false, l.holder.id
	case l.holder != nil:
		// Idle past the timeout, and the timer has not run yet.
		l.releaseLocked(reasonIdle)
	}
	l.holder, l.since, l.last = c, now, now
	if l.cfg.Idle > 0 {
		if l.timer == nil {
			l.timer = time.AfterFunc(l.cfg.Idle, l.expire)
		} else {
			l.timer.Reset(l.cfg.Idle)
		}
	}
	if l.m.Takes != nil {
		l.m.Takes.WithLabelValues("taken").Inc()
	}
	l.log.Info("control taken", "stream", l.cfg.Stream, "holder", c.id)
	l.changedLocked()
	return true, c.id
}

// Release gives the lease back; it reports whether c held it.
func (c *Conn) Release() bool {
	if c == nil {
		return false
	}
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holder != c {
		return false
	}
	l.releaseLocked(reasonReleased)
	return true
}

// Close ends the connection's place: control it held is released. It may
// be called more than once.
func (c *Conn) Close() {
	if c == nil {
		return
	}
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holder == c {
		l.releaseLocked(reasonClosed)
	}
}

// Holds reports whether c holds the lease.
func (c *Conn) Holds() bool {
	if c == nil {
		return false
	}
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	return c.l.holder == c
}

// Allow reports whether a command with this action may pass for c: always
// for estop and the viewer actions, otherwise only while c holds the lease.
// A command of the holder keeps the lease from going idle. A refusal is
// counted. A nil Conn allows everything.
func (c *Conn) Allow(action string) bool {
	if c == nil {
		return true
	}
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holder == c {
		l.last = time.Now()
		return true
	}
	if action == ActionEstop || l.viewer[action] {
		return true
	}
	if l.m.Refused != nil {
		l.m.Refused.Inc()
	}
	return false
}

// Welcome returns the 0x02 message on Subject that tells a joining
// connection who holds the lease and its own id ("you"), to send to it
// alone; nil for a nil Conn.
func (c *Conn) Welcome() []byte {
	if c == nil {
		return nil
	}
	msg, _ := wire.Telemetry(Subject, c.l.payload(c.l.State(), c.id))
	return msg
}

// newID returns an opaque connection id: 12 random hex digits.
func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
