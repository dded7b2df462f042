// Package gate is the safety gate of one video source: when the video an
// operator steers by goes stale, motion commands stop and the robot is told
// to hold, then to stop (PROTOCOL.md section 4).
//
// The gate is driven by frame arrival and its own timer from the moment it is
// created, not by incoming commands: with no browser attached it still
// publishes HOLD about one second and ESTOP about five seconds after the last
// frame. Every path that can move the robot (0x04 commands on /stream/ws, the
// sdr_nats endpoint, ROS publishes) asks the same gate through Allow.
//
// The package imports nothing from Caddy and nothing from NATS: what the gate
// publishes goes through a Publish function.
package gate

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// Mode is the state of a gate.
type Mode int

// The three states of PROTOCOL.md section 4.
const (
	// Armed: the video is fresh; every command passes.
	Armed Mode = iota
	// Hold: the video has been stale for longer than the HOLD threshold;
	// motion commands are dropped and a zero velocity was published.
	Hold
	// Estop: the video has been stale for longer than the ESTOP threshold;
	// an emergency stop was published.
	Estop
)

// String returns the mode as the protocol spells it: ARMED, HOLD or ESTOP.
func (m Mode) String() string {
	switch m {
	case Armed:
		return "ARMED"
	case Hold:
		return "HOLD"
	case Estop:
		return "ESTOP"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Subjects and payloads the gate publishes (PROTOCOL.md section 4).
const (
	SubjectCmdVel    = "command.genesis.set_cmd_vel"
	SubjectEstop     = "command.genesis.estop"
	SubjectVideoGate = "telemetry.safety.video_gate"

	holdCmdVel   = `{"action":"set_cmd_vel","data":{"linear_x":0,"linear_y":0,"angular_z":0},"_safety":"hold"}`
	estopCommand = `{"reason":"video_timeout","_safety":"estop"}`
	ungated      = `{"gated":false}`
)

// Defaults of the old transport-server (SDR_VIDEO_GATE_*).
const (
	DefaultHold       = 1000 * time.Millisecond
	DefaultEstop      = 5000 * time.Millisecond
	DefaultCodecGrace = 2000 * time.Millisecond
	// DefaultPoll is how often a gated gate looks for the video coming back
	// when no frame wakes it earlier.
	DefaultPoll = 50 * time.Millisecond
)

// motion lists the actions that move the robot; only these are gated.
var motion = map[string]bool{
	"set_cmd_vel": true,
	"set_alpha":   true,
	"set_skill":   true,
}

// IsMotion reports whether action moves the robot and is therefore refused
// while the gate is closed. estop, estop_clear, pause and reset are never
// motion.
func IsMotion(action string) bool { return motion[action] }

// Config holds the thresholds of a gate. Zero fields take the defaults.
type Config struct {
	// Hold is how long the video may be stale before HOLD.
	Hold time.Duration
	// Estop is how long the video may be stale before ESTOP.
	Estop time.Duration
	// CodecGrace is how long after a codec change the ESTOP threshold is
	// raised by the same amount: video that stops at most CodecGrace after a
	// codec change (the encoder restarting) gets Estop+CodecGrace before
	// ESTOP. Negative turns the grace off.
	CodecGrace time.Duration
	// Poll is how often a closed gate checks whether video is back.
	Poll time.Duration
}

func (c Config) withDefaults() Config {
	if c.Hold <= 0 {
		c.Hold = DefaultHold
	}
	if c.Estop <= 0 {
		c.Estop = DefaultEstop
	}
	if c.CodecGrace < 0 {
		c.CodecGrace = 0
	} else if c.CodecGrace == 0 {
		c.CodecGrace = DefaultCodecGrace
	}
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
	}
	return c
}

// Validate reports thresholds that cannot work: ESTOP must come after HOLD.
func (c Config) Validate() error {
	d := c.withDefaults()
	if d.Estop <= d.Hold {
		return fmt.Errorf("gate estop threshold %s must be longer than hold threshold %s", d.Estop, d.Hold)
	}
	return nil
}

// Publish sends one message on a subject. The gate calls it from its own
// goroutine, never while holding its lock; an error is reported through
// Options.OnError and the transition stands.
type Publish func(subject string, payload []byte) error

// Options are the optional hooks of a gate.
type Options struct {
	// OnTransition is called after every change of mode, with the video age
	// that caused it (metrics, logs).
	OnTransition func(from, to Mode, stale time.Duration)
	// OnError is called when a publication fails.
	OnError func(subject string, err error)
}

// Gate is the safety gate of one video source.
type Gate struct {
	cfg     Config
	publish Publish
	opts    Options
	wake    chan struct{}

	mu        sync.Mutex
	mode      Mode
	src       frame.Source
	cancelSub func()
	binding   uint64
	last      time.Time // latest arrival seen, kept when the source goes away
	start     time.Time // creation: the reference while no frame ever arrived
	codec     shmring.Codec
	graceTill time.Time
}

// New returns a gate in mode ARMED with no source: until a source is bound
// and delivers frames, motion commands are refused, and HOLD and ESTOP follow
// on the timer as if video had stopped at creation. Run must be called for
// the timer to work.
func New(cfg Config, publish Publish, opts Options) *Gate {
	return &Gate{
		cfg:     cfg.withDefaults(),
		publish: publish,
		opts:    opts,
		wake:    make(chan struct{}, 1),
		start:   time.Now(),
	}
}

// Config returns the thresholds in use, defaults applied.
func (g *Gate) Config() Config { return g.cfg }

// Bind makes src the video source of the gate, replacing any other, and
// returns the function that unbinds it. Unbinding a source that has since
// been replaced does nothing, so that a config reload (new handler binds,
// then old handler unbinds) keeps the new one.
func (g *Gate) Bind(src frame.Source) (unbind func()) {
	cancel := src.Subscribe(g.onFrame)
	g.mu.Lock()
	old := g.cancelSub
	g.binding++
	id := g.binding
	g.src = src
	g.cancelSub = cancel
	g.codec = 0
	g.mu.Unlock()
	if old != nil {
		old()
	}
	g.poke()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			if g.binding != id {
				g.mu.Unlock()
				return
			}
			if t := g.src.LastArrival(); t.After(g.last) {
				g.last = t
			}
			g.src = nil
			g.cancelSub = nil
			g.mu.Unlock()
			cancel()
			g.poke()
		})
	}
}

// CodecChanging starts the codec-change grace now: the caller saw a request
// that will restart the encoder with another codec (a settings command).
func (g *Gate) CodecChanging() {
	g.mu.Lock()
	g.graceTill = time.Now().Add(g.cfg.CodecGrace)
	g.mu.Unlock()
	g.poke()
}

func (g *Gate) onFrame(f frame.Frame) {
	g.mu.Lock()
	c := f.Header.Codec
	if g.codec != 0 && c != g.codec {
		g.graceTill = time.Now().Add(g.cfg.CodecGrace)
	}
	g.codec = c
	wake := g.mode != Armed
	g.mu.Unlock()
	if wake {
		g.poke()
	}
}

func (g *Gate) poke() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// Mode returns the current mode.
func (g *Gate) Mode() Mode {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mode
}

// Allow reports whether a command with this action may pass now, and the
// mode. Non-motion actions always pass. Motion actions pass only while the
// gate is ARMED, a source is bound and that source has delivered a frame no
// older than the HOLD threshold.
func (g *Gate) Allow(action string) (ok bool, mode string) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.mode
	if !IsMotion(action) {
		return true, m.String()
	}
	if m != Armed {
		return false, m.String()
	}
	if g.src == nil {
		return false, Hold.String()
	}
	arr := g.src.LastArrival()
	if arr.IsZero() || now.Sub(arr) > g.cfg.Hold {
		// Stale, and the timer has not caught up yet.
		return false, Hold.String()
	}
	return true, m.String()
}

// Run drives the gate until ctx ends: it evaluates the video age on a timer
// and publishes each transition once.
func (g *Gate) Run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-g.wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
		next := g.evaluate(time.Now())
		timer.Reset(next)
	}
}

// evaluate applies the current video age and returns how long to wait before
// the next evaluation.
func (g *Gate) evaluate(now time.Time) time.Duration {
	g.mu.Lock()
	ref := g.last
	if g.src != nil {
		if t := g.src.LastArrival(); t.After(ref) {
			ref = t
		}
	}
	if ref.After(g.last) {
		g.last = ref
	}
	if ref.IsZero() {
		// No frame ever: video counts as stopped when the gate was created.
		ref = g.start
	}
	age := now.Sub(ref)
	estop := g.cfg.Estop
	if !g.graceTill.IsZero() && ref.Before(g.graceTill) && !ref.Before(g.graceTill.Add(-g.cfg.CodecGrace-g.cfg.Hold)) {
		// The video stopped around a codec change (from Hold before it, as
		// when a settings command announces it, to CodecGrace after it):
		// the encoder is restarting, give it CodecGrace more.
		estop += g.cfg.CodecGrace
	}
	var want Mode
	switch {
	case age > estop:
		want = Estop
	case age > g.cfg.Hold:
		want = Hold
	default:
		want = Armed
	}
	from := g.mode
	// Once in ESTOP, the episode stays ESTOP until the video is back, even if
	// the codec grace raises the threshold again.
	if from == Estop && want == Hold {
		want = Estop
	}
	g.mode = want
	g.mu.Unlock()

	if want != from {
		g.announce(from, want, age)
	}

	switch want {
	case Armed:
		// Sleep until this frame would be stale.
		d := g.cfg.Hold - age + time.Millisecond
		if d < time.Millisecond {
			d = time.Millisecond
		}
		return d
	case Hold:
		d := estop - age + time.Millisecond
		if d > g.cfg.Poll {
			d = g.cfg.Poll
		}
		if d < time.Millisecond {
			d = time.Millisecond
		}
		return d
	default:
		return g.cfg.Poll
	}
}

// announce publishes the messages of one transition. A jump from ARMED
// straight to ESTOP publishes the HOLD messages first.
func (g *Gate) announce(from, to Mode, age time.Duration) {
	ms := age.Milliseconds()
	switch to {
	case Armed:
		g.send(SubjectVideoGate, []byte(ungated))
	case Hold:
		g.send(SubjectCmdVel, []byte(holdCmdVel))
		g.send(SubjectVideoGate, fmt.Appendf(nil, `{"gated":true,"mode":"HOLD","stale_ms":%d}`, ms))
	case Estop:
		if from == Armed {
			g.send(SubjectCmdVel, []byte(holdCmdVel))
			g.send(SubjectVideoGate, fmt.Appendf(nil, `{"gated":true,"mode":"HOLD","stale_ms":%d}`, ms))
		}
		g.send(SubjectEstop, []byte(estopCommand))
		g.send(SubjectVideoGate, fmt.Appendf(nil, `{"gated":true,"mode":"ESTOP","stale_ms":%d}`, ms))
	}
	if g.opts.OnTransition != nil {
		g.opts.OnTransition(from, to, age)
	}
}

func (g *Gate) send(subject string, payload []byte) {
	if g.publish == nil {
		return
	}
	if err := g.publish(subject, payload); err != nil && g.opts.OnError != nil {
		g.opts.OnError(subject, fmt.Errorf("publishing safety message on %s: %w", subject, err))
	}
}

// Interface guard.
var _ frame.MotionGate = (*Gate)(nil)
