package gate

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/shmring"
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

func (s *testSource) Emit(codec shmring.Codec) {
	now := time.Now()
	s.mu.Lock()
	s.last = now
	fns := make([]func(frame.Frame), 0, len(s.subs))
	for _, fn := range s.subs {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(frame.Frame{Header: shmring.Header{Codec: codec}, Arrived: now})
	}
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
func feed(src *testSource, codec shmring.Codec, period, d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		src.Emit(codec)
		time.Sleep(period)
	}
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
		feed(src, shmring.CodecH264, 16*time.Millisecond, 500*time.Millisecond)
		synctest.Wait()
		if m := rec.take(); len(m) != 0 {
			t.Fatalf("published while video was fresh: %v", subjects(m))
		}
		if ok, mode := g.Allow("set_cmd_vel"); !ok || mode != "ARMED" {
			t.Fatalf("Allow(set_cmd_vel) with fresh video = %v %s, want true ARMED", ok, mode)
		}
		stopped := time.Now()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		msgs := rec.take()
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
		feed(src, shmring.CodecH264, 20*time.Millisecond, 200*time.Millisecond)
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		if g.Mode() != Hold {
			t.Fatalf("mode after 1.5s without video = %s, want HOLD", g.Mode())
		}
		rec.take()
		back := time.Now()
		feed(src, shmring.CodecH264, 20*time.Millisecond, 2*time.Second)
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

func TestGateFromStartupWithoutSource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{})
		if ok, mode := g.Allow("set_cmd_vel"); ok {
			t.Fatalf("Allow(set_cmd_vel) with no source = true (%s), want false", mode)
		}
		if ok, _ := g.Allow("estop"); !ok {
			t.Fatalf("Allow(estop) with no source = false, want true")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		msgs := rec.take()
		if len(msgs) != 2 || msgs[1].subject != SubjectVideoGate || !strings.Contains(msgs[1].payload, `"mode":"HOLD"`) {
			t.Fatalf("2s after startup with no source published %q, want HOLD", subjects(msgs))
		}
		if msgs[1].at > 2*time.Second {
			t.Errorf("video_gate published %s after startup, want within 2s", msgs[1].at)
		}
		time.Sleep(4 * time.Second)
		synctest.Wait()
		msgs = rec.take()
		if len(msgs) != 2 || msgs[0].subject != SubjectEstop {
			t.Fatalf("6s after startup published %q, want ESTOP", subjects(msgs))
		}
	})
}

func TestGateCodecChangeGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, rec, _ := startGate(t, Config{})
		src := newTestSource()
		g.Bind(src)
		feed(src, shmring.CodecH264, 20*time.Millisecond, 200*time.Millisecond)
		// The codec switches to JPEG: two frames, then the new encoder stalls.
		src.Emit(shmring.CodecJPEG)
		src.Emit(shmring.CodecJPEG)
		stopped := time.Now()
		time.Sleep(6 * time.Second)
		synctest.Wait()
		for _, m := range rec.take() {
			if m.subject == SubjectEstop {
				t.Fatalf("ESTOP published %s after a codec change, want none within 7s", m.at-stopped.Sub(rec.t0))
			}
		}
		if g.Mode() != Hold {
			t.Fatalf("mode 6s into a codec change = %s, want HOLD", g.Mode())
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		// The threshold is 5s + 2s of grace: ESTOP 7s after the last frame.
		msgs := rec.take()
		if len(msgs) != 2 || msgs[0].subject != SubjectEstop {
			t.Fatalf("8s into the stall published %q, want ESTOP", subjects(msgs))
		}
		if d := msgs[0].at - stopped.Sub(rec.t0); d < 6900*time.Millisecond || d > 7100*time.Millisecond {
			t.Errorf("ESTOP %s after the stall, want 7s", d)
		}
		// A later episode, long after the change, gets the plain threshold.
		feed(src, shmring.CodecJPEG, 20*time.Millisecond, 5*time.Second)
		rec.take()
		stopped = time.Now()
		time.Sleep(6 * time.Second)
		synctest.Wait()
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
		feed(src, shmring.CodecH264, 20*time.Millisecond, 100*time.Millisecond)
		g.CodecChanging()
		start := time.Now()
		time.Sleep(8 * time.Second)
		synctest.Wait()
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
		go feed(b, shmring.CodecH264, 20*time.Millisecond, 3*time.Second)
		time.Sleep(2 * time.Second)
		synctest.Wait()
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
		time.Sleep(2 * time.Second)
		synctest.Wait()
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
		src.Emit(shmring.CodecH264)
		if ok, _ := g.Allow("set_cmd_vel"); !ok {
			t.Fatal("Allow with a fresh frame = false")
		}
		time.Sleep(1100 * time.Millisecond)
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
