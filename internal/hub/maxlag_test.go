package hub

import (
	"fmt"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// With MaxLag set, a client whose next frame arrived more than MaxLag ago
// skips to the newest keyframe when one is newer, counted as a lag skip
// and waiting for nothing; a frame exactly MaxLag old is still sent. With
// no newer keyframe, a delta older than MaxLag and the rest of its GOP are
// dropped and the client waits for the next keyframe, counted as a lag
// skip and a keyframe wait. Without MaxLag (the default) only Capacity
// skips, and the same client gets every frame. (Capacity is the default
// 64: no skip here is by depth.)
func TestMaxLagSkipsToNewerKeyframe(t *testing.T) {
	t.Parallel()
	const lag = 100 * time.Millisecond
	for _, tc := range []struct {
		maxLag   time.Duration
		late     string // what the client gets once frame 3 is older than lag
		old      string // once frame 7 is older than lag, with no newer keyframe
		after    string // then, up to the next keyframe and a delta after it
		lagSkips uint64
	}{
		{0, "[3 4 5]", "[7]", "[8 9 10]", 0},
		{lag, "[4 5]", "[]", "[9 10]", 2},
	} {
		synctest.Test(t, func(t *testing.T) {
			h := New(Config{MaxLag: tc.maxLag})
			defer h.Close()
			h.Publish(mkFrame(1, true, 10))
			c := h.Join()
			next := func(maxBytes int) string { return fmt.Sprint(seqs(t, h.Next(&c, nil, maxBytes))) }
			if got := next(1 << 20); got != "[1]" {
				t.Fatalf("max lag %v: joining client got %v, want [1]", tc.maxLag, got)
			}
			h.Publish(mkFrame(2, false, 10))
			h.Publish(mkFrame(3, false, 10))
			elapse(lag)
			h.Publish(mkFrame(4, true, 10))
			h.Publish(mkFrame(5, false, 10))
			if got := next(1); got != "[2]" {
				t.Fatalf("max lag %v: got %v with frame 2 exactly %v old, want [2]", tc.maxLag, got, lag)
			}
			elapse(time.Millisecond)
			if got := next(1 << 20); got != tc.late {
				t.Fatalf("max lag %v: got %v with frame 3 older than %v, want %v", tc.maxLag, got, lag, tc.late)
			}
			// Old deltas and no newer keyframe: one exactly MaxLag old is
			// sent, one older is dropped with the rest of the GOP.
			h.Publish(mkFrame(6, false, 10))
			h.Publish(mkFrame(7, false, 10))
			elapse(lag)
			if got := next(1); got != "[6]" {
				t.Fatalf("max lag %v: got %v with frame 6 exactly %v old and no newer keyframe, want [6]", tc.maxLag, got, lag)
			}
			elapse(time.Millisecond)
			if got := next(1 << 20); got != tc.old {
				t.Fatalf("max lag %v: got %v with frame 7 older than %v and no newer keyframe, want %v", tc.maxLag, got, lag, tc.old)
			}
			if w, _ := c.WaitingForKeyframe(); w != (tc.maxLag > 0) {
				t.Errorf("max lag %v: waiting for a keyframe %v, want %v", tc.maxLag, w, tc.maxLag > 0)
			}
			var got []uint64
			for seq := uint64(8); seq <= 10; seq++ {
				h.Publish(mkFrame(seq, seq == 9, 10))
				got = append(got, seqs(t, h.Next(&c, nil, 1<<20))...)
			}
			if fmt.Sprint(got) != tc.after {
				t.Fatalf("max lag %v: got %v after frame 7, want %v", tc.maxLag, got, tc.after)
			}
			if w, _ := c.WaitingForKeyframe(); w {
				t.Errorf("max lag %v: client still waits for a keyframe", tc.maxLag)
			}
			waits := uint64(0)
			if tc.maxLag > 0 {
				waits = 1
			}
			if st := h.Stats(); st.LagSkips != tc.lagSkips || st.KeyframeWaits != waits {
				t.Errorf("max lag %v: lag skips %d (want %d), keyframe waits %d (want %d)",
					tc.maxLag, st.LagSkips, tc.lagSkips, st.KeyframeWaits, waits)
			}
		})
	}
}

// A client that waits for a keyframe because its next delta was too old
// (MaxLag) is not given up on while keyframes come: the keyframe timeout
// counts only the video that passes it while it waits, as after a skip by
// Capacity, and so closes it only when the source stops sending keyframes.
// The newest keyframe is sent however old it is when the client gets to
// it.
func TestMaxLagWaitTimesOutOnlyWithoutKeyframes(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const lag, timeout = 100 * time.Millisecond, time.Second
		h := New(Config{MaxLag: lag})
		defer h.Close()
		h.Publish(mkFrame(1, true, 10))
		c := h.Join()
		h.Next(&c, nil, 1<<20)
		var seq uint64 = 1
		publish := func(key bool) {
			seq++
			h.Publish(mkFrame(seq, key, 10))
		}
		// Ten GOPs of 10 frames, 100 ms apart, the client always too late
		// for the deltas: 9 s of video, each wait ending at a keyframe
		// within the timeout.
		for gop := 0; gop < 10; gop++ {
			for i := 0; i < 10; i++ {
				publish(i == 9)
				elapse(lag + time.Millisecond)
				got := seqs(t, h.Next(&c, nil, 1<<20))
				if i < 9 && len(got) != 0 {
					t.Fatalf("GOP %d: got %v, deltas older than %v", gop, got, lag)
				}
				if i == 9 && fmt.Sprint(got) != fmt.Sprint([]uint64{seq}) {
					t.Fatalf("GOP %d: got %v, want the keyframe %d, older than %v but the newest", gop, got, seq, lag)
				}
				if c.KeyframeOverdue(timeout) {
					t.Fatalf("GOP %d, frame %d: keyframe overdue while keyframes come every %v", gop, seq, 10*(lag+time.Millisecond))
				}
			}
		}
		// The source stops sending keyframes: past the timeout of video
		// the wait is overdue.
		for i := 0; i < 15 && !c.KeyframeOverdue(timeout); i++ {
			publish(false)
			elapse(lag + time.Millisecond)
			h.Next(&c, nil, 1<<20)
		}
		if !c.KeyframeOverdue(timeout) {
			t.Fatalf("no keyframe in 1.5 s of video: the wait is not overdue (timeout %v)", timeout)
		}
	})
}

// A client that joined and catches up through the kept GOP skips to a
// keyframe that arrives meanwhile once its next frame is older than
// MaxLag: the GOP's catch-up is exempt from Capacity, not from MaxLag.
// (Capacity, the default 64, keeps the old GOP in the log.)
func TestMaxLagAppliesWhileCatchingUp(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const lag = 50 * time.Millisecond
		h := New(Config{MaxLag: lag})
		defer h.Close()
		for seq := uint64(1); seq <= 6; seq++ {
			h.Publish(mkFrame(seq, seq == 1, 10))
		}
		c := h.Join()
		if got := fmt.Sprint(seqs(t, h.Next(&c, nil, 1))); got != "[1]" {
			t.Fatalf("joining client got %v, want the kept keyframe [1]", got)
		}
		elapse(2 * lag)
		h.Publish(mkFrame(7, true, 10))
		if got := fmt.Sprint(seqs(t, h.Next(&c, nil, 1<<20))); got != "[7]" {
			t.Fatalf("catching-up client got %v with its next frame %v old, want [7]", got, 2*lag)
		}
		if n := h.Stats().LagSkips; n != 1 {
			t.Errorf("lag skips %d, want 1", n)
		}
	})
}

// A joining client is sent the kept GOP whole, one frame a call, though
// its deltas are older than MaxLag and no newer keyframe is kept: Join
// bounds the replay's age (JoinMaxAge), and a client catching up is not
// made to wait for the next keyframe for it.
func TestMaxLagKeepsJoinReplay(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const lag = 50 * time.Millisecond
		h := New(Config{MaxLag: lag})
		defer h.Close()
		for seq := uint64(1); seq <= 6; seq++ {
			h.Publish(mkFrame(seq, seq == 1, 10))
		}
		elapse(4 * lag)
		c := h.Join()
		var got []uint64
		for i := 0; i < 7; i++ {
			got = append(got, seqs(t, h.Next(&c, nil, 1))...)
		}
		if fmt.Sprint(got) != "[1 2 3 4 5 6]" {
			t.Fatalf("joining client got %v, want the kept GOP [1 2 3 4 5 6]", got)
		}
		if st := h.Stats(); st.LagSkips != 0 {
			t.Errorf("lag skips %d, want 0", st.LagSkips)
		}
	})
}

// A client waiting for a keyframe that finds one older than MaxLag, and a
// newer one behind it, starts at the newer one.
func TestMaxLagWaitingClientTakesNewestKeyframe(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const lag = 100 * time.Millisecond
		h := New(Config{MaxLag: lag})
		defer h.Close()
		c := h.Join() // no keyframe yet: it waits
		h.Publish(mkFrame(1, true, 10))
		h.Publish(mkFrame(2, false, 10))
		elapse(lag + time.Millisecond)
		h.Publish(mkFrame(3, true, 10))
		h.Publish(mkFrame(4, false, 10))
		if got := fmt.Sprint(seqs(t, h.Next(&c, nil, 1<<20))); got != "[3 4]" {
			t.Fatalf("waiting client got %v with keyframe 1 older than %v, want [3 4]", got, lag)
		}
		if st := h.Stats(); st.LagSkips != 1 || st.KeyframeWaits != 1 {
			t.Errorf("lag skips %d (want 1), keyframe waits %d (want 1, the join's)", st.LagSkips, st.KeyframeWaits)
		}
	})
}

// Through a client's own goroutine (a connection without a socket of its
// own, as on a link too slow for the stream): while a write is under way
// the frames behind it age, and the next write starts at the newest
// keyframe, the telemetry broadcast meanwhile still first and whole.
func TestMaxLagClientSkipsToKeyframe(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const lag = 100 * time.Millisecond
		h := New(Config{MaxLag: lag})
		defer h.Close()
		_, cli := runPiped(t, h, ClientConfig{KeyframeTimeout: time.Hour, PingInterval: -1})
		h.Publish(mkFrame(1, true, 1000))
		synctest.Wait() // the client's goroutine is writing frame 1, which nobody reads yet
		h.Publish(mkFrame(2, false, 100))
		h.Publish(mkFrame(3, false, 100))
		telemetry := broadcastTelemetry(t, h, `{"c":3}`)
		elapse(lag + time.Millisecond)
		h.Publish(mkFrame(4, true, 1000))
		h.Publish(mkFrame(5, false, 100))
		var got []string
		for len(got) < 4 {
			msg, err := readServerMessage(cli)
			if err != nil {
				t.Fatalf("after %v: %v", got, err)
			}
			switch msg[0] {
			case wire.TypeVideo:
				hdr, _, err := wire.ParseVideo(msg)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprint(hdr.FrameSeq))
			default:
				if string(msg) != string(telemetry) {
					t.Fatalf("after %v: message %q, want the telemetry %q", got, msg, telemetry)
				}
				got = append(got, "telemetry")
			}
		}
		if s := fmt.Sprint(got); s != "[1 telemetry 4 5]" {
			t.Fatalf("client got %s, want [1 telemetry 4 5]: frames 2 and 3 skipped for their age", s)
		}
		if n := h.Stats().LagSkips; n != 1 {
			t.Errorf("lag skips %d, want 1", n)
		}
	})
}

// The send round judges ages too, by a time it reads once per round: over
// TCP, with the socket free, a GOP that arrived long ago and a fresh
// keyframe, published back to back (one processor: the round runs once the
// test waits), reach the client as the fresh keyframe alone, written by
// the round itself. Should the scheduler run a round between two of the
// publishes (then nothing is behind yet), the test tries again.
func TestMaxLagSendRound(t *testing.T) {
	if !directSupported {
		t.Skip("the send round writes to sockets on Linux only")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h := New(Config{MaxLag: time.Second, Capacity: 1000})
	t.Cleanup(h.Close)
	url, clients := serveOne(t, h, ClientConfig{KeyframeTimeout: time.Minute, PingInterval: -1})
	ws := dial(t, url, nil)
	<-clients
	testwait.For(t, "the client in the send round", func() bool { return len(h.members.Load()) == 1 })
	var seq uint64
	publish := func(key bool, arrived time.Time) uint64 {
		seq++
		f := mkFrame(seq, key, 1000)
		f.Arrived = arrived
		h.Publish(f)
		return seq
	}
	for attempt := 1; ; attempt++ {
		before := h.Stats()
		old := time.Now().Add(-2 * time.Second)
		first := publish(true, old)
		publish(false, old)
		publish(false, old)
		fresh := publish(true, time.Now())
		last := publish(false, time.Now())
		_ = ws.SetReadDeadline(testwait.Deadline(testwait.Default))
		got := readVideo(t, ws)
		if got == fresh {
			if next := readVideo(t, ws); next != last {
				t.Fatalf("frame %d after the fresh keyframe %d, want %d", next, fresh, last)
			}
			st := h.Stats()
			if st.LagSkips != before.LagSkips+1 || st.DirectWrites == before.DirectWrites {
				t.Fatalf("lag skips %d -> %d (want one more), direct writes %d -> %d (want more)",
					before.LagSkips, st.LagSkips, before.DirectWrites, st.DirectWrites)
			}
			return
		}
		if got != first {
			t.Fatalf("first frame %d, want the fresh keyframe %d (or, after a round between the publishes, %d)", got, fresh, first)
		}
		if attempt == 5 {
			t.Fatalf("the send round sent the GOP that arrived 2s ago in %d tries, never skipping it for its age (max lag 1s)", attempt)
		}
		t.Logf("try %d: the old keyframe went out, the round ran between the publishes", attempt)
		for got != last {
			got = readVideo(t, ws)
		}
	}
}
