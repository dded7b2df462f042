// Package gate is the safety gate of one video source: when the video an
// operator steers by goes stale, motion commands stop and the robot is told
// to hold, then to stop (docs/sdr_nats.md, "Safety gate").
//
// A gate is armed by the first frame of its source and stays armed for its
// lifetime. Before that there is no video that could go stale (a simulator
// still starting, or a stack that has none): the gate publishes nothing on
// its own, and Allow judges a motion command the way the old transport-server
// did, by the time since the gate was created. Armed, the gate is driven by
// frame arrival and its own timer, not by commands: with no browser attached
// it publishes HOLD about one second and ESTOP about five seconds after the
// last frame, repeats its state every second while closed, and publishes
// {"gated":false} when the video is back.
//
// Every path that can move the robot asks the same gate: 0x04 commands on
// /stream/ws, the sdr_nats endpoint and DataChannel commands through Allow;
// ROS publishes through Armed and Allow (before arming they pass, as they did
// in the old stack). Motion commands that others publish on NATS reach the
// gate through Observe, which answers them on telemetry.safety.video_gate
// while the video is stale.
//
// The package imports nothing from Caddy and nothing from NATS: what the gate
// publishes goes through a Publish function.
package gate

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/sdr-os/sdr-caddy/frame"
	sdrframe "github.com/sdr-os/sdr-caddy/internal/frame"
)

// Mode is the state of a gate.
type Mode int

// The three states of the gate, as SDR_OS names them.
const (
	// Armed: the video is fresh (or, before the gate is armed by its first
	// frame, nothing has been refused yet); every command passes.
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

// Subjects and payloads the gate publishes.
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
	// Repeat is how often an armed gate repeats its state on
	// telemetry.safety.video_gate while closed, and the least time between
	// two answers to motion commands seen on NATS.
	Repeat = time.Second
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

// MotionActions returns the actions that move the robot, sorted: the
// command.genesis.<action> subjects whose messages Observe takes.
func MotionActions() []string { return []string{"set_alpha", "set_cmd_vel", "set_skill"} }

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
	// OnArmed is called once, when the first frame has armed the gate.
	OnArmed func()
}

// Gate is the safety gate of one video source.
type Gate struct {
	cfg     Config
	publish Publish
	opts    Options
	wake    chan struct{}

	mu        sync.Mutex
	armed     bool // a frame of the source has arrived: for good
	toldArmed bool // OnArmed has been called
	mode      Mode // the mode last announced
	src       frame.Source
	cancelSub func()
	binding   uint64
	last      time.Time // latest arrival seen, kept when the source goes away
	start     time.Time // creation: the reference while no frame ever arrived
	codec     frame.Codec
	graceTill time.Time

	// Before arming, Allow judges motion commands as the old server did and
	// leaves what it decided for Run to publish, HOLD and ESTOP once each.
	due                 []verdict
	holdSent, estopSent bool
	// gated: a gated:true went out and no gated:false since.
	gated bool
	// said: when the last gated:true went out; the repeat and the answers
	// to commands seen on NATS are paced by it.
	said time.Time
	// asked: a motion command published by someone else, seen on NATS
	// before arming, waits for its answer.
	asked bool
}

// verdict is one refusal of Allow before arming, to be published.
type verdict struct {
	mode Mode
	age  time.Duration
}

// New returns a gate that is not armed, in mode ARMED, with no source. It
// publishes nothing until a bound source delivers its first frame, except
// what Allow and Observe call for. Run must be called for the timer to work.
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
// then old handler unbinds) keeps the new one. A source that has delivered
// frames before arms the gate at once; unbinding never disarms it.
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
	wake := !g.armed || g.mode != Armed
	g.armed = true
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

// arrivalLocked returns the latest frame arrival seen, zero if none.
func (g *Gate) arrivalLocked() time.Time {
	ref := g.last
	if g.src != nil {
		if t := g.src.LastArrival(); t.After(ref) {
			ref = t
		}
	}
	return ref
}

// armedLocked reports whether the gate is armed, arming it when its source
// has delivered a frame that onFrame has not seen (one read before Bind).
func (g *Gate) armedLocked() bool {
	if !g.armed && !g.arrivalLocked().IsZero() {
		g.armed = true
	}
	return g.armed
}

// Mode returns the mode last announced. Before arming it is ARMED unless
// Allow has refused a motion command for HOLD or ESTOP.
func (g *Gate) Mode() Mode {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mode
}

// Armed reports whether the first frame of the gate's source has arrived.
// An armed gate stays armed, across rebinding and config reloads.
func (g *Gate) Armed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.armedLocked()
}

// Allow reports whether a command with this action may pass now, and the
// mode. Non-motion actions always pass.
//
// Armed, motion actions pass only while the mode is ARMED, a source is bound
// and that source has delivered a frame no older than the HOLD threshold.
//
// Not armed, a motion action is judged as the old transport-server judged it,
// with the time since the gate was created as the video age: it passes up to
// the HOLD threshold; after it, it is refused with HOLD and, the first time,
// the zero velocity and the HOLD state are published; after the ESTOP
// threshold it is refused with ESTOP and, the first time, the emergency stop
// and the ESTOP state are published (without the HOLD messages before them).
func (g *Gate) Allow(action string) (ok bool, mode string) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if !IsMotion(action) {
		return true, g.mode.String()
	}
	if !g.armedLocked() {
		return g.allowUnarmedLocked(now)
	}
	if g.mode != Armed {
		return false, g.mode.String()
	}
	if g.src == nil {
		return false, Hold.String()
	}
	arr := g.src.LastArrival()
	if arr.IsZero() || now.Sub(arr) > g.cfg.Hold {
		// Stale, and the timer has not caught up yet.
		return false, Hold.String()
	}
	return true, Armed.String()
}

func (g *Gate) allowUnarmedLocked(now time.Time) (bool, string) {
	age := now.Sub(g.start)
	switch {
	case age > g.cfg.Estop:
		if !g.estopSent {
			g.estopSent = true
			g.due = append(g.due, verdict{Estop, age})
			g.poke()
		}
		return false, Estop.String()
	case age > g.cfg.Hold:
		if !g.holdSent {
			g.holdSent = true
			g.due = append(g.due, verdict{Hold, age})
			g.poke()
		}
		return false, Hold.String()
	}
	return true, Armed.String()
}

// Observe takes a message seen on NATS on command.genesis.<action>,
// published by anyone. Before arming, a motion command that is not the
// gate's own (one with a "_safety" field) is answered on
// telemetry.safety.video_gate with {"gated":true,"mode":"HOLD",...} as soon
// as the time since creation exceeds the HOLD threshold (never ESTOP: the
// simulator latches it), one answer per command and at most one per Repeat;
// if the gate arms first, there is nothing to answer. Armed, it does
// nothing: a closed gate repeats its state every Repeat anyway.
func (g *Gate) Observe(action string, payload []byte) {
	if !IsMotion(action) || fromGate(payload) {
		return
	}
	g.mu.Lock()
	if g.armedLocked() {
		g.mu.Unlock()
		return
	}
	g.asked = true
	g.mu.Unlock()
	g.poke()
}

// fromGate reports whether payload is one of the gate's own commands: a JSON
// object with a "_safety" field.
func fromGate(payload []byte) bool {
	var m struct {
		Safety json.RawMessage `json:"_safety"`
	}
	return json.Unmarshal(payload, &m) == nil && len(m.Safety) > 0
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

// outbox is what one evaluation publishes and reports, in order, once the
// lock is released.
type outbox struct {
	msgs  []message
	trans []transition
}

type message struct {
	subject string
	payload []byte
}

type transition struct {
	from, to Mode
	age      time.Duration
}

func (o *outbox) add(subject string, payload []byte) {
	o.msgs = append(o.msgs, message{subject, payload})
}

func stateMessage(m Mode, age time.Duration) []byte {
	return fmt.Appendf(nil, `{"gated":true,"mode":"%s","stale_ms":%d}`, m, age.Milliseconds())
}

// evaluate publishes what is due and returns how long to wait before the
// next evaluation.
func (g *Gate) evaluate(now time.Time) time.Duration {
	var out outbox
	g.mu.Lock()
	for _, v := range g.due {
		// What the old server published when a command found the video
		// stale: HOLD or ESTOP alone, never one before the other.
		if v.mode == Hold {
			out.add(SubjectCmdVel, []byte(holdCmdVel))
		} else {
			out.add(SubjectEstop, []byte(estopCommand))
		}
		out.add(SubjectVideoGate, stateMessage(v.mode, v.age))
		if v.mode != g.mode {
			out.trans = append(out.trans, transition{g.mode, v.mode, v.age})
			g.mode = v.mode
		}
		g.gated, g.said = true, now
	}
	g.due = nil
	var next time.Duration
	justArmed := false
	if g.armedLocked() {
		justArmed = !g.toldArmed
		g.toldArmed = true
		next = g.evaluateArmed(now, &out)
	} else {
		next = g.answerLocked(now, &out)
	}
	g.mu.Unlock()

	if justArmed && g.opts.OnArmed != nil {
		g.opts.OnArmed()
	}
	for _, m := range out.msgs {
		g.send(m.subject, m.payload)
	}
	if g.opts.OnTransition != nil {
		for _, t := range out.trans {
			g.opts.OnTransition(t.from, t.to, t.age)
		}
	}
	return next
}

// answerLocked answers a command seen on NATS before arming, when its time
// has come, and returns how long to wait. A gate that is not armed looks
// for its first frame every Poll: frames held back while the source waits
// for a keyframe arm it too, and reach no onFrame.
func (g *Gate) answerLocked(now time.Time, out *outbox) time.Duration {
	if !g.asked {
		return g.cfg.Poll
	}
	age := now.Sub(g.start)
	if age <= g.cfg.Hold {
		// Not stale yet by the old server's clock: answer at the HOLD
		// threshold unless a frame arms the gate first.
		return min(g.cfg.Hold-age+time.Millisecond, g.cfg.Poll)
	}
	if !g.said.IsZero() && now.Sub(g.said) < Repeat {
		return min(g.said.Add(Repeat).Sub(now), g.cfg.Poll)
	}
	out.add(SubjectVideoGate, stateMessage(Hold, age))
	g.asked, g.gated, g.said = false, true, now
	return g.cfg.Poll
}

// evaluateArmed applies the current video age to an armed gate and returns
// how long to wait before the next evaluation.
func (g *Gate) evaluateArmed(now time.Time, out *outbox) time.Duration {
	g.asked = false
	ref := g.arrivalLocked()
	if ref.After(g.last) {
		g.last = ref
	}
	if ref.IsZero() {
		ref = g.start // not reached: armed means a frame arrived
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
	if want != from {
		out.trans = append(out.trans, transition{from, want, age})
	}

	switch want {
	case Armed:
		// Video back, or the first frame: say so once if anything said
		// otherwise, whatever the mode was (HOLD, ESTOP, or answers only).
		if g.gated {
			out.add(SubjectVideoGate, []byte(ungated))
			g.gated = false
		}
		// Sleep until this frame would be stale.
		d := g.cfg.Hold - age + time.Millisecond
		if d < time.Millisecond {
			d = time.Millisecond
		}
		return d
	case Hold:
		if want != from {
			out.add(SubjectCmdVel, []byte(holdCmdVel))
			out.add(SubjectVideoGate, stateMessage(Hold, age))
			g.gated, g.said = true, now
		} else if now.Sub(g.said) >= Repeat {
			out.add(SubjectVideoGate, stateMessage(Hold, age))
			g.said = now
		}
		d := estop - age + time.Millisecond
		d = min(d, g.cfg.Poll, g.said.Add(Repeat).Sub(now))
		return max(d, time.Millisecond)
	default:
		if want != from {
			// A jump from ARMED straight to ESTOP publishes the HOLD
			// messages first.
			if from == Armed {
				out.add(SubjectCmdVel, []byte(holdCmdVel))
				out.add(SubjectVideoGate, stateMessage(Hold, age))
			}
			out.add(SubjectEstop, []byte(estopCommand))
			out.add(SubjectVideoGate, stateMessage(Estop, age))
			g.gated, g.said = true, now
		} else if now.Sub(g.said) >= Repeat {
			out.add(SubjectVideoGate, stateMessage(Estop, age))
			g.said = now
		}
		return max(min(g.cfg.Poll, g.said.Add(Repeat).Sub(now)), time.Millisecond)
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
var _ sdrframe.MotionGate = (*Gate)(nil)
