package gate

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sdr-os/sdr-caddy/frame"
)

// testSource is a frame source driven by the test: Emit delivers a frame
// now, as a ring reader would.
type testSource struct {
	mu   sync.Mutex
	last time.Time
	subs map[int]func(frame.Frame)
	next int
}

func newTestSource() *testSource { return &testSource{subs: map[int]func(frame.Frame){}} }

func (s *testSource) Subscribe(fn func(frame.Frame)) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.next
	s.next++
	s.subs[id] = fn
	return func() {
		s.mu.Lock()
		delete(s.subs, id)
		s.mu.Unlock()
	}
}

func (s *testSource) LastArrival() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *testSource) Emit(codec frame.Codec) {
	now := time.Now()
	s.mu.Lock()
	s.last = now
	fns := make([]func(frame.Frame), 0, len(s.subs))
	for _, fn := range s.subs {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(frame.Frame{Header: frame.Header{Codec: codec}, Arrived: now})
	}
}

// HoldBack reads a frame that the source holds back (it waits for a
// keyframe): LastArrival moves, no subscriber is called.
func (s *testSource) HoldBack() {
	s.mu.Lock()
	s.last = time.Now()
	s.mu.Unlock()
}

func (s *testSource) subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// published is one message the gate sent, with when (bubble time) it left.
type published struct {
	at      time.Duration
	subject string
	payload string
}

type recorder struct {
	mu    sync.Mutex
	t0    time.Time
	msgs  []published
	trans []string
}

func newRecorder() *recorder { return &recorder{t0: time.Now()} }

func (r *recorder) publish(subject string, payload []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, published{time.Since(r.t0), subject, string(payload)})
	return nil
}

func (r *recorder) take() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msgs
	r.msgs = nil
	return m
}

func (r *recorder) options() Options {
	return Options{OnTransition: func(from, to Mode, _ time.Duration) {
		r.mu.Lock()
		r.trans = append(r.trans, from.String()+">"+to.String())
		r.mu.Unlock()
	}}
}

// startGate creates a gate inside the bubble and runs it until the test ends.
func startGate(t *testing.T, cfg Config) (*Gate, *recorder, context.CancelFunc) {
	t.Helper()
	rec := newRecorder()
	g := New(cfg, rec.publish, rec.options())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return g, rec, cancel
}

// feed emits frames every period for d (bubble time).
func feed(src *testSource, codec frame.Codec, period, d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		src.Emit(codec)
		time.Sleep(period) // the subject: a source's pace, on the bubble's clock
	}
}

// elapse lets d pass on the bubble's clock, then waits until the gate has
// done all that this time called for: what a test of a timer means by
// "later".
func elapse(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// transitions drops the state repeats of a closed gate: a video_gate
// message that says what the one before it said, apart from stale_ms.
func transitions(msgs []published) []published {
	var out []published
	prev := ""
	for _, m := range msgs {
		if m.subject == SubjectVideoGate {
			state, _, _ := strings.Cut(m.payload, `,"stale_ms"`)
			if state == prev {
				continue
			}
			prev = state
		}
		out = append(out, m)
	}
	return out
}

// staleMS reads stale_ms from a video_gate state message, -1 if none.
func staleMS(payload string) int {
	var v struct {
		StaleMS *int `json:"stale_ms"`
	}
	if json.Unmarshal([]byte(payload), &v) != nil || v.StaleMS == nil {
		return -1
	}
	return *v.StaleMS
}

func subjects(msgs []published) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.subject+" "+m.payload)
	}
	return out
}

func TestGateHoldThenEstopOnceEach(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{})
		src := newTestSource()
		g.Bind(src)
		feed(src, frame.CodecH264, 16*time.Millisecond, 500*time.Millisecond)
		synctest.Wait()
		if m := rec.take(); len(m) != 0 {
			t.Fatalf("published while video was fresh: %v", subjects(m))
		}
		if ok, mode := g.Allow("set_cmd_vel"); !ok || mode != "ARMED" {
			t.Fatalf("Allow(set_cmd_vel) with fresh video = %v %s, want true ARMED", ok, mode)
		}
		stopped := time.Now()
		elapse(10 * time.Second)
		msgs := transitions(rec.take())
		want := []string{
			SubjectCmdVel + " " + holdCmdVel,
			SubjectVideoGate + ` {"gated":true,"mode":"HOLD","stale_ms":1001}`,
			SubjectEstop + " " + estopCommand,
			SubjectVideoGate + ` {"gated":true,"mode":"ESTOP","stale_ms":5001}`,
		}
		// Video stopped 16 ms after the last frame at most: the last frame is the reference.
		got := subjects(msgs)
		if len(got) != len(want) {
			t.Fatalf("published %d messages, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("message %d = %s, want %s", i, got[i], want[i])
			}
		}
		holdAt := msgs[0].at - stopped.Sub(rec.t0)
		estopAt := msgs[2].at - stopped.Sub(rec.t0)
		if holdAt < 900*time.Millisecond || holdAt > 1100*time.Millisecond {
			t.Errorf("HOLD published %s after video stopped, want about 1s", holdAt)
		}
		if estopAt < 4900*time.Millisecond || estopAt > 5100*time.Millisecond {
			t.Errorf("ESTOP published %s after video stopped, want about 5s", estopAt)
		}
		if ok, mode := g.Allow("set_cmd_vel"); ok || mode != "ESTOP" {
			t.Errorf("Allow(set_cmd_vel) in ESTOP = %v %s, want false ESTOP", ok, mode)
		}
		for _, a := range []string{"estop", "estop_clear", "pause", "reset", "load_robot", "settings"} {
			if ok, _ := g.Allow(a); !ok {
				t.Errorf("Allow(%s) in ESTOP = false, want true", a)
			}
		}
		for _, a := range []string{"set_alpha", "set_skill"} {
			if ok, _ := g.Allow(a); ok {
				t.Errorf("Allow(%s) in ESTOP = true, want false", a)
			}
		}
	})
}

func TestGateRecoveryPublishesUngatedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{})
		src := newTestSource()
		g.Bind(src)
		feed(src, frame.CodecH264, 20*time.Millisecond, 200*time.Millisecond)
		elapse(1500 * time.Millisecond)
		if g.Mode() != Hold {
			t.Fatalf("mode after 1.5s without video = %s, want HOLD", g.Mode())
		}
		rec.take()
		back := time.Now()
		feed(src, frame.CodecH264, 20*time.Millisecond, 2*time.Second)
		synctest.Wait()
		msgs := rec.take()
		if got := subjects(msgs); len(got) != 1 || got[0] != SubjectVideoGate+` {"gated":false}` {
			t.Fatalf("after video came back published %q, want one {\"gated\":false}", got)
		}
		if d := msgs[0].at - back.Sub(rec.t0); d > 10*time.Millisecond {
			t.Errorf("recovery published %s after the first frame, want at once", d)
		}
		if ok, mode := g.Allow("set_cmd_vel"); !ok || mode != "ARMED" {
			t.Errorf("Allow(set_cmd_vel) after recovery = %v %s, want true ARMED", ok, mode)
		}
		rec.mu.Lock()
		trans := strings.Join(rec.trans, ",")
		rec.mu.Unlock()
		if trans != "ARMED>HOLD,HOLD>ARMED" {
			t.Errorf("transitions = %s", trans)
		}
	})
}

func TestGateCodecChangeGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{})
		src := newTestSource()
		g.Bind(src)
		feed(src, frame.CodecH264, 20*time.Millisecond, 200*time.Millisecond)
		// The codec switches to JPEG: two frames, then the new encoder stalls.
		src.Emit(frame.CodecJPEG)
		src.Emit(frame.CodecJPEG)
		stopped := time.Now()
		elapse(6 * time.Second)
		for _, m := range rec.take() {
			if m.subject == SubjectEstop {
				t.Fatalf("ESTOP published %s after a codec change, want none within 7s", m.at-stopped.Sub(rec.t0))
			}
		}
		if g.Mode() != Hold {
			t.Fatalf("mode 6s into a codec change = %s, want HOLD", g.Mode())
		}
		elapse(2 * time.Second)
		// The threshold is 5s + 2s of grace: ESTOP 7s after the last frame
		// (between the HOLD state's repeats).
		var estops []published
		for _, m := range rec.take() {
			if m.subject == SubjectEstop {
				estops = append(estops, m)
			}
		}
		if len(estops) != 1 {
			t.Fatalf("8s into the stall published %d ESTOP commands, want 1", len(estops))
		}
		if d := estops[0].at - stopped.Sub(rec.t0); d < 6900*time.Millisecond || d > 7100*time.Millisecond {
			t.Errorf("ESTOP %s after the stall, want 7s", d)
		}
		// A later episode, long after the change, gets the plain threshold.
		feed(src, frame.CodecJPEG, 20*time.Millisecond, 5*time.Second)
		rec.take()
		stopped = time.Now()
		elapse(6 * time.Second)
		for _, m := range rec.take() {
			if m.subject == SubjectEstop {
				if d := m.at - stopped.Sub(rec.t0); d > 5100*time.Millisecond {
					t.Errorf("ESTOP %s after a stall far from any codec change, want 5s", d)
				}
				return
			}
		}
		t.Errorf("no ESTOP 6s into a stall far from any codec change")
	})
}

func TestGateCodecChangingRaisesEstopThreshold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{Hold: time.Second, Estop: 3 * time.Second, CodecGrace: 4 * time.Second})
		src := newTestSource()
		g.Bind(src)
		feed(src, frame.CodecH264, 20*time.Millisecond, 100*time.Millisecond)
		g.CodecChanging()
		start := time.Now()
		elapse(8 * time.Second)
		var estopAt time.Duration = -1
		for _, m := range rec.take() {
			if m.subject == SubjectEstop {
				estopAt = m.at - start.Sub(rec.t0)
			}
		}
		// Threshold 3s + 4s of grace: the video stopped just before the
		// settings command announced the codec change.
		if estopAt < 6900*time.Millisecond || estopAt > 7100*time.Millisecond {
			t.Errorf("ESTOP at %s, want 7s", estopAt)
		}
	})
}

func TestGateRebindAndStaleUnbind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{})
		a, b := newTestSource(), newTestSource()
		unbindA := g.Bind(a)
		unbindB := g.Bind(b)
		if a.subscribers() != 0 || b.subscribers() != 1 {
			t.Fatalf("after rebinding: %d subscribers on a, %d on b; want 0 and 1", a.subscribers(), b.subscribers())
		}
		// The old binding going away must not unbind the new one.
		unbindA()
		go feed(b, frame.CodecH264, 20*time.Millisecond, 3*time.Second)
		elapse(2 * time.Second)
		if ok, mode := g.Allow("set_cmd_vel"); !ok {
			t.Fatalf("Allow(set_cmd_vel) after stale unbind = false %s, want true", mode)
		}
		rec.take()
		unbindB()
		if ok, _ := g.Allow("set_cmd_vel"); ok {
			t.Fatalf("Allow(set_cmd_vel) with the source unbound = true, want false")
		}
		if b.subscribers() != 0 {
			t.Fatalf("unbind left %d subscribers", b.subscribers())
		}
		elapse(2 * time.Second)
		if g.Mode() != Hold {
			t.Errorf("mode 1s after unbinding a stopped source = %s, want HOLD", g.Mode())
		}
	})
}

func TestGateAllowStaleBeforeTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A long poll: Allow must not rely on the timer to refuse stale video.
		g := New(Config{}, nil, Options{})
		src := newTestSource()
		g.Bind(src)
		src.Emit(frame.CodecH264)
		if ok, _ := g.Allow("set_cmd_vel"); !ok {
			t.Fatal("Allow with a fresh frame = false")
		}
		elapse(1100 * time.Millisecond)
		if ok, mode := g.Allow("set_cmd_vel"); ok || mode != "HOLD" {
			t.Fatalf("Allow 1.1s after the last frame (gate not running) = %v %s, want false HOLD", ok, mode)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{Hold: 2 * time.Second, Estop: time.Second}, false},
		{Config{Hold: 6 * time.Second}, false},
		{Config{Hold: 100 * time.Millisecond, Estop: 200 * time.Millisecond}, true},
	} {
		err := c.cfg.Validate()
		if (err == nil) != c.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", c.cfg, err, c.ok)
		}
	}
}

func TestModeString(t *testing.T) {
	t.Parallel()
	for m, want := range map[Mode]string{Armed: "ARMED", Hold: "HOLD", Estop: "ESTOP", Mode(7): "Mode(7)"} {
		if got := m.String(); got != want {
			t.Errorf("%d.String() = %s, want %s", int(m), got, want)
		}
	}
}

// videoGate is a video_gate state message as the gate spells it.
func videoGate(mode string, staleMS int) string {
	return SubjectVideoGate + ` {"gated":true,"mode":"` + mode + `","stale_ms":` + strconv.Itoa(staleMS) + `}`
}

func wantMessages(t *testing.T, what string, got []published, want ...string) {
	t.Helper()
	g := subjects(got)
	if strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s: published\n  %s\nwant\n  %s", what, strings.Join(g, "\n  "), strings.Join(want, "\n  "))
	}
}

func (r *recorder) transitions() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.trans, ",")
}

// A gate whose video never delivers a frame (no simulator, or one still
// starting) is not armed and publishes nothing on its own: no HOLD, and
// above all no ESTOP, which the simulator would latch.
func TestGateWithoutVideoPublishesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{})
		elapse(3 * time.Second)
		g.Bind(newTestSource()) // a ring with no writer
		elapse(10 * time.Second)
		wantMessages(t, "13s without video", rec.take())
		if g.Armed() || g.Mode() != Armed {
			t.Errorf("without video: armed %v, mode %s; want not armed, ARMED", g.Armed(), g.Mode())
		}
		if tr := rec.transitions(); tr != "" {
			t.Errorf("transitions without video: %s", tr)
		}
	})
}

// Before arming, a motion command is judged as the old transport-server
// judged it, by the time since the gate was created: it passes during the
// first second, then gets HOLD (zero velocity and the HOLD state published
// once), after five seconds ESTOP (the emergency stop and the ESTOP state
// published once). Nothing is published without a command. The first frame
// arms the gate and clears it with {"gated":false}.
func TestGateBeforeArmingJudgesCommandsLikeTheOldServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{})
		elapse(500 * time.Millisecond)
		if ok, mode := g.Allow("set_cmd_vel"); !ok || mode != "ARMED" {
			t.Fatalf("Allow(set_cmd_vel) 0.5s after start = %v %s, want true ARMED", ok, mode)
		}
		elapse(time.Second)
		wantMessages(t, "1.5s after start, before any refusal", rec.take())
		for _, a := range []string{"set_cmd_vel", "set_alpha", "set_skill"} {
			if ok, mode := g.Allow(a); ok || mode != "HOLD" {
				t.Fatalf("Allow(%s) 1.5s after start = %v %s, want false HOLD", a, ok, mode)
			}
		}
		for _, a := range []string{"estop", "estop_clear", "pause", "reset", "settings"} {
			if ok, _ := g.Allow(a); !ok {
				t.Errorf("Allow(%s) before arming = false, want true", a)
			}
		}
		synctest.Wait()
		msgs := rec.take()
		wantMessages(t, "the first refusal for HOLD", msgs,
			SubjectCmdVel+" "+holdCmdVel, videoGate("HOLD", 1500))
		if msgs[0].at != 1500*time.Millisecond {
			t.Errorf("HOLD published %s after start, want at once (1.5s)", msgs[0].at)
		}
		elapse(4 * time.Second)
		if ok, mode := g.Allow("set_cmd_vel"); ok || mode != "ESTOP" {
			t.Fatalf("Allow(set_cmd_vel) 5.5s after start = %v %s, want false ESTOP", ok, mode)
		}
		synctest.Wait()
		wantMessages(t, "the first refusal for ESTOP", rec.take(),
			SubjectEstop+" "+estopCommand, videoGate("ESTOP", 5500))
		elapse(3 * time.Second)
		if ok, _ := g.Allow("set_skill"); ok {
			t.Fatal("Allow(set_skill) 8.5s after start = true")
		}
		synctest.Wait()
		wantMessages(t, "refusals after the first ESTOP, no repeats before arming", rec.take())
		if g.Mode() != Estop {
			t.Errorf("mode after the ESTOP refusal = %s", g.Mode())
		}

		src := newTestSource()
		g.Bind(src)
		src.Emit(frame.CodecH264)
		synctest.Wait()
		wantMessages(t, "the first frame", rec.take(), SubjectVideoGate+" "+ungated)
		if ok, mode := g.Allow("set_cmd_vel"); !ok || mode != "ARMED" || !g.Armed() {
			t.Errorf("after the first frame: Allow = %v %s, armed %v; want true ARMED, armed", ok, mode, g.Armed())
		}
		if tr := rec.transitions(); tr != "ARMED>HOLD,HOLD>ESTOP,ESTOP>ARMED" {
			t.Errorf("transitions = %s", tr)
		}
	})
}

// The old server's ESTOP-first escalation (the first command came after the
// ESTOP threshold) publishes no HOLD; the old server then never cleared the
// gate, and the simulator, which refuses estop_clear while gated, stayed in
// ESTOP. The first frame clears it.
func TestGateEstopFirstIsClearedByTheFirstFrame(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{})
		elapse(6 * time.Second)
		wantMessages(t, "6s without video or command", rec.take())
		if ok, mode := g.Allow("set_cmd_vel"); ok || mode != "ESTOP" {
			t.Fatalf("Allow 6s after start = %v %s, want false ESTOP", ok, mode)
		}
		elapse(500 * time.Millisecond)
		if ok, mode := g.Allow("set_cmd_vel"); ok || mode != "ESTOP" {
			t.Fatalf("Allow 6.5s after start = %v %s, want false ESTOP", ok, mode)
		}
		synctest.Wait()
		wantMessages(t, "ESTOP first", rec.take(), SubjectEstop+" "+estopCommand, videoGate("ESTOP", 6000))
		src := newTestSource()
		g.Bind(src)
		src.Emit(frame.CodecJPEG)
		synctest.Wait()
		wantMessages(t, "the first frame after ESTOP first", rec.take(), SubjectVideoGate+" "+ungated)
		if tr := rec.transitions(); tr != "ARMED>ESTOP,ESTOP>ARMED" {
			t.Errorf("transitions = %s", tr)
		}
	})
}

// Armed, a closed gate repeats its state once a second, so that a
// subscriber that came late learns it; the zero velocity and the emergency
// stop go out once. Commands seen on NATS add nothing to the repeats.
// Recovery from ESTOP says {"gated":false} once.
func TestGateArmedRepeatsStateWhileClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{})
		src := newTestSource()
		g.Bind(src)
		src.Emit(frame.CodecH264)
		synctest.Wait()
		g.Observe("set_cmd_vel", []byte(`{"action":"set_cmd_vel","data":{"linear_x":1}}`)) // fresh: nothing to say
		elapse(2500 * time.Millisecond)
		for range 5 {
			g.Observe("set_cmd_vel", []byte(`{"action":"set_cmd_vel","data":{"linear_x":1}}`))
			elapse(100 * time.Millisecond)
		}
		elapse(5500 * time.Millisecond) // 8.5s after the frame
		msgs := rec.take()
		wantMessages(t, "8.5s after the last frame", msgs,
			SubjectCmdVel+" "+holdCmdVel, videoGate("HOLD", 1001),
			videoGate("HOLD", 2001), videoGate("HOLD", 3001), videoGate("HOLD", 4001),
			SubjectEstop+" "+estopCommand, videoGate("ESTOP", 5001),
			videoGate("ESTOP", 6001), videoGate("ESTOP", 7001), videoGate("ESTOP", 8001))
		for i, m := range msgs {
			if m.subject == SubjectVideoGate {
				if d := m.at - time.Duration(staleMS(m.payload))*time.Millisecond; d < 0 || d > time.Millisecond {
					t.Errorf("message %d at %s says stale_ms %d", i, m.at, staleMS(m.payload))
				}
			}
		}
		go feed(src, frame.CodecH264, 20*time.Millisecond, 3*time.Second)
		synctest.Wait()
		wantMessages(t, "video back after ESTOP", rec.take(), SubjectVideoGate+" "+ungated)
		elapse(3 * time.Second)
		wantMessages(t, "fresh video", rec.take())
	})
}

// A motion command that someone else publishes on NATS before the gate is
// armed gets an answer at once on telemetry.safety.video_gate (the old
// service's smoke test waits for it): gated, mode HOLD even past the ESTOP
// threshold, one answer per command and at most one a second, no repeats.
// The gate's own messages and non-motion commands get none. Arming clears.
func TestGateAnswersCommandsSeenBeforeArming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{})
		cmd := []byte(`{"action":"set_cmd_vel","cmd_seq":999,"data":{"linear_x":1.0,"linear_y":0,"angular_z":0}}`)
		elapse(2 * time.Second)
		g.Observe("set_cmd_vel", cmd)
		synctest.Wait()
		msgs := rec.take()
		wantMessages(t, "a command 2s after start", msgs, videoGate("HOLD", 2000))
		if msgs[0].at != 2*time.Second {
			t.Errorf("answered %s after start, want at once (2s)", msgs[0].at)
		}

		elapse(1500 * time.Millisecond)
		g.Observe("set_cmd_vel", []byte(holdCmdVel))
		g.Observe("estop", []byte(estopCommand))
		g.Observe("estop", []byte(`{"action":"estop"}`))
		g.Observe("pause", []byte(`{"action":"pause"}`))
		synctest.Wait()
		wantMessages(t, "the gate's own messages and non-motion commands", rec.take())

		// 3.5s: answered at once; five more within the second get one
		// answer, a second after the last.
		g.Observe("set_alpha", []byte(`{"action":"set_alpha","data":{"alpha":1}}`))
		for range 5 {
			elapse(100 * time.Millisecond)
			g.Observe("set_skill", []byte(`{"action":"set_skill"}`))
		}
		elapse(6 * time.Second) // 10s
		msgs = rec.take()
		wantMessages(t, "six commands from 3.5s", msgs, videoGate("HOLD", 3500), videoGate("HOLD", 4500))

		g.Observe("set_cmd_vel", cmd)
		synctest.Wait()
		wantMessages(t, "a command past the ESTOP threshold", rec.take(), videoGate("HOLD", 10000))
		if g.Mode() != Armed || g.Armed() {
			t.Errorf("answers changed the gate: mode %s, armed %v", g.Mode(), g.Armed())
		}

		src := newTestSource()
		g.Bind(src)
		src.Emit(frame.CodecH264)
		synctest.Wait()
		wantMessages(t, "the first frame after answers", rec.take(), SubjectVideoGate+" "+ungated)
	})
}

// A command seen within the first second is not stale by the old server's
// clock: it is answered at the HOLD threshold, unless a frame arms the gate
// first; then there is nothing to answer and nothing to clear.
func TestGateAnswersEarlyCommandsAtTheHoldThreshold(t *testing.T) {
	cmd := []byte(`{"action":"set_cmd_vel","data":{"linear_x":1}}`)
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{})
		elapse(300 * time.Millisecond)
		g.Observe("set_cmd_vel", cmd)
		synctest.Wait()
		wantMessages(t, "a command at 0.3s", rec.take())
		elapse(time.Second)
		msgs := rec.take()
		wantMessages(t, "1.3s", msgs, videoGate("HOLD", 1001))
	})
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{})
		elapse(300 * time.Millisecond)
		g.Observe("set_cmd_vel", cmd)
		elapse(200 * time.Millisecond)
		src := newTestSource()
		g.Bind(src)
		go feed(src, frame.CodecH264, 20*time.Millisecond, 3*time.Second)
		elapse(3 * time.Second)
		wantMessages(t, "a command at 0.3s, video from 0.5s", rec.take())
	})
}

// Once armed, a gate stays armed: unbinding its source (a reload) or binding
// one that has no frames yet does not make it a gate without video again,
// and a new gate (a reload that changed the thresholds) bound to a source
// that delivered frames before is armed at once.
func TestGateStaysArmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		armed := 0
		opts := rec.options()
		opts.OnArmed = func() { armed++ }
		g := New(Config{}, rec.publish, opts)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go g.Run(ctx)
		a := newTestSource()
		unbind := g.Bind(a)
		a.Emit(frame.CodecH264)
		synctest.Wait()
		unbind()
		if !g.Armed() {
			t.Fatal("unbinding the source disarmed the gate")
		}
		if ok, mode := g.Allow("set_cmd_vel"); ok || mode != "HOLD" {
			t.Errorf("armed, no source: Allow = %v %s, want false HOLD", ok, mode)
		}
		g.Bind(newTestSource())
		elapse(1500 * time.Millisecond)
		if g.Mode() != Hold || !g.Armed() {
			t.Errorf("armed, rebound to a silent source, 1.5s: mode %s, armed %v; want HOLD, armed", g.Mode(), g.Armed())
		}
		if armed != 1 {
			t.Errorf("OnArmed called %d times, want 1", armed)
		}

		g2 := New(Config{Hold: 2 * time.Second}, nil, Options{})
		if g2.Armed() {
			t.Fatal("a new gate is armed before any source")
		}
		g2.Bind(a)
		if !g2.Armed() {
			t.Error("a new gate bound to a source that delivered frames is not armed")
		}
		if ok, mode := g2.Allow("set_cmd_vel"); !ok || mode != "ARMED" {
			t.Errorf("new gate, frame 1.5s old, hold 2s: Allow = %v %s, want true ARMED", ok, mode)
		}
	})
}

// Frames that the source holds back while it waits for a keyframe reach no
// subscriber, but they are video: they arm the gate within a poll, which
// then clears what it said before.
func TestGateArmedByFramesHeldBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder()
		armed := false
		opts := rec.options()
		opts.OnArmed = func() { armed = true }
		g := New(Config{}, rec.publish, opts)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go g.Run(ctx)
		src := newTestSource()
		g.Bind(src)
		elapse(2 * time.Second)
		g.Observe("set_cmd_vel", []byte(`{"action":"set_cmd_vel"}`))
		synctest.Wait()
		wantMessages(t, "a command 2s after start", rec.take(), videoGate("HOLD", 2000))
		src.HoldBack()
		elapse(DefaultPoll)
		wantMessages(t, "a frame held back", rec.take(), SubjectVideoGate+" "+ungated)
		if !armed {
			t.Error("OnArmed not called for a frame held back")
		}
	})
}
