package hub

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// mkFrame returns frame seq; keyframes carry the KEYFRAME flag.
func mkFrame(seq uint64, key bool, size int) frame.Frame {
	h := shmring.Header{FrameID: seq * 1000, FrameSeq: seq, Size: uint32(size), Codec: shmring.CodecH264}
	if key {
		h.Flags = shmring.FlagKeyframe
	}
	return frame.Frame{Header: h, Payload: make([]byte, size), Arrived: time.Now()}
}

// seqs returns the frame_seq of each entry, read back from the framed message.
func seqs(t *testing.T, es []*Entry) []uint64 {
	t.Helper()
	var out []uint64
	for _, e := range es {
		body := e.Head[2:]
		switch e.Head[1] {
		case 126:
			body = e.Head[4:]
		case 127:
			body = e.Head[10:]
		}
		h, _, err := wire.ParseVideo(body)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.FrameSeq)
	}
	return out
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestJoinStartsAtLatestKeyframe(t *testing.T) {
	t.Parallel()
	h := New(Config{Capacity: 8})
	defer h.Close()
	for i, key := range []bool{true, false, false, true, false, false} {
		h.Publish(mkFrame(uint64(i+1), key, 10))
	}
	c := h.Join()
	got := h.Next(&c, nil, 1<<20)
	if want := []uint64{4, 5, 6}; !equal(seqs(t, got), want) {
		t.Fatalf("joining client got %v, want the current GOP %v", seqs(t, got), want)
	}
	if st := h.Stats(); st.IDRAsked != 1 || st.IDRSent != 1 || st.KeyframeWaits != 0 {
		t.Errorf("stats after join: %+v", st)
	}
}

func TestNoDeltaBeforeKeyframe(t *testing.T) {
	t.Parallel()
	h := New(Config{})
	defer h.Close()
	h.Publish(mkFrame(1, false, 10))
	c := h.Join()
	if w, _ := c.WaitingForKeyframe(); !w {
		t.Fatal("client joined a hub without keyframe is not waiting for one")
	}
	got := h.Next(&c, nil, 1<<20)
	if len(got) != 0 {
		t.Fatalf("got %v before any keyframe", seqs(t, got))
	}
	h.Publish(mkFrame(2, false, 10))
	if got = h.Next(&c, nil, 1<<20); len(got) != 0 {
		t.Fatalf("got delta %v before any keyframe", seqs(t, got))
	}
	h.Publish(mkFrame(3, true, 10))
	h.Publish(mkFrame(4, false, 10))
	got = h.Next(&c, nil, 1<<20)
	if want := []uint64{3, 4}; !equal(seqs(t, got), want) {
		t.Fatalf("got %v, want %v", seqs(t, got), want)
	}
	if h.Stats().KeyframeWaits != 1 {
		t.Errorf("keyframe waits %d, want 1", h.Stats().KeyframeWaits)
	}
}

func TestLaggingClientSkipsToKeyframe(t *testing.T) {
	t.Parallel()
	h := New(Config{Capacity: 4})
	defer h.Close()
	h.Publish(mkFrame(1, true, 10))
	c := h.Join()
	got := h.Next(&c, nil, 1<<20)
	if !equal(seqs(t, got), []uint64{1}) {
		t.Fatalf("got %v", seqs(t, got))
	}
	// The client stalls while 7 frames arrive, a keyframe among them.
	for i, key := range []bool{false, false, false, true, false, false, false} {
		h.Publish(mkFrame(uint64(i+2), key, 10))
	}
	got = h.Next(&c, nil, 1<<20)
	if want := []uint64{5, 6, 7, 8}; !equal(seqs(t, got), want) {
		t.Fatalf("lagging client got %v, want %v from the newest keyframe", seqs(t, got), want)
	}
	// Stalled again, with no keyframe in reach: it waits for the next one.
	for i := range 6 {
		h.Publish(mkFrame(uint64(9+i), false, 10))
	}
	got = h.Next(&c, nil, 1<<20)
	if len(got) != 0 {
		t.Fatalf("lagging client without keyframe in reach got %v", seqs(t, got))
	}
	if w, _ := c.WaitingForKeyframe(); !w {
		t.Fatal("not waiting for a keyframe after the second skip")
	}
	h.Publish(mkFrame(15, true, 10))
	got = h.Next(&c, nil, 1<<20)
	if !equal(seqs(t, got), []uint64{15}) {
		t.Fatalf("got %v, want [15]", seqs(t, got))
	}
	if st := h.Stats(); st.LagSkips != 2 || st.KeyframeWaits != 1 {
		t.Errorf("lag skips %d (want 2), keyframe waits %d (want 1)", st.LagSkips, st.KeyframeWaits)
	}
}

func TestLogKeepsGOPWithinCap(t *testing.T) {
	t.Parallel()
	h := New(Config{Capacity: 4, MaxGOPBytes: 2000})
	defer h.Close()
	h.Publish(mkFrame(1, true, 100))
	for i := range 10 {
		h.Publish(mkFrame(uint64(i+2), false, 100))
	}
	if st := h.Stats(); !st.HasKeyframe || st.LogFrames != 11 {
		t.Fatalf("after an 11-frame GOP: keyframe %v, %d frames in the log", st.HasKeyframe, st.LogFrames)
	}
	for i := range 10 {
		h.Publish(mkFrame(uint64(i+12), false, 100))
	}
	st := h.Stats()
	if st.HasKeyframe || st.LogFrames != 4 {
		t.Fatalf("GOP over MaxGOPBytes: keyframe %v, %d frames in the log (want none, 4)", st.HasKeyframe, st.LogFrames)
	}
	c := h.Join()
	if w, _ := c.WaitingForKeyframe(); !w {
		t.Fatal("client joined without a kept GOP is not waiting for a keyframe")
	}
}

func TestDiscontinuityKeepsGOP(t *testing.T) {
	t.Parallel()
	h := New(Config{})
	defer h.Close()
	h.Publish(mkFrame(1, true, 10))
	f := mkFrame(5, false, 10)
	f.Discontinuity = true
	h.Publish(f)
	c := h.Join()
	if got := h.Next(&c, nil, 1<<20); !equal(seqs(t, got), []uint64{1, 5}) {
		t.Fatalf("client joined after a gap got %v, want the kept keyframe and what followed", seqs(t, got))
	}
	if w, _ := c.WaitingForKeyframe(); w {
		t.Fatal("client joined after a gap waits for a keyframe")
	}
}

func TestBatchBytes(t *testing.T) {
	t.Parallel()
	h := New(Config{})
	defer h.Close()
	h.Publish(mkFrame(1, true, 1000))
	h.Publish(mkFrame(2, false, 1000))
	h.Publish(mkFrame(3, false, 1000))
	c := h.Join()
	got := h.Next(&c, nil, 1500)
	if !equal(seqs(t, got), []uint64{1, 2}) {
		t.Fatalf("first batch %v, want [1 2]", seqs(t, got))
	}
	got = h.Next(&c, got[:0], 10)
	if !equal(seqs(t, got), []uint64{3}) {
		t.Fatalf("second batch %v, want [3]", seqs(t, got))
	}
}

// elapse lets d pass on a synctest bubble's clock, then waits until the
// bubble's goroutines have done all that this time called for.
func elapse(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

type countingRequester struct{ n atomic.Int64 }

func (r *countingRequester) RequestKeyframe() { r.n.Add(1) }

func TestKeyframeRequestsCoalesce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := New(Config{IDRCoalesce: 500 * time.Millisecond})
		defer h.Close()
		var r countingRequester
		h.SetKeyframeRequester(&r)
		h.RequestKeyframe()
		if r.n.Load() != 1 {
			t.Fatalf("first request not sent at once: %d", r.n.Load())
		}
		for range 10 {
			elapse(20 * time.Millisecond)
			h.RequestKeyframe()
		}
		if r.n.Load() != 1 {
			t.Fatalf("requests inside the interval sent: %d", r.n.Load())
		}
		elapse(400 * time.Millisecond)
		if r.n.Load() != 2 {
			t.Fatalf("trailing request not sent when the interval ended: %d", r.n.Load())
		}
		elapse(time.Second)
		if r.n.Load() != 2 {
			t.Fatalf("extra requests with nobody asking: %d", r.n.Load())
		}
		h.RequestKeyframe()
		if r.n.Load() != 3 {
			t.Fatalf("request after a quiet interval not sent at once: %d", r.n.Load())
		}
		if st := h.Stats(); st.IDRAsked != 12 || st.IDRSent != 3 {
			t.Errorf("asked %d sent %d, want 12 and 3", st.IDRAsked, st.IDRSent)
		}
	})
}

func TestCloseDropsPendingRequest(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := New(Config{IDRCoalesce: time.Second})
		var r countingRequester
		h.SetKeyframeRequester(&r)
		h.RequestKeyframe()
		h.RequestKeyframe()
		h.Close()
		elapse(2 * time.Second)
		if r.n.Load() != 1 {
			t.Fatalf("%d requests sent, want 1 (the pending one dropped on Close)", r.n.Load())
		}
	})
}

func TestJoinCatchesUpThroughGOPLongerThanCapacity(t *testing.T) {
	t.Parallel()
	h := New(Config{Capacity: 4})
	defer h.Close()
	h.Publish(mkFrame(1, true, 10))
	for i := range 19 {
		h.Publish(mkFrame(uint64(i+2), false, 10))
	}
	c := h.Join()
	got := h.Next(&c, nil, 50) // a few at a time, like a slow socket
	for len(got) < 20 {
		var more []*Entry
		more = h.Next(&c, nil, 50)
		if len(more) == 0 {
			break
		}
		got = append(got, more...)
	}
	if s := seqs(t, got); len(s) != 20 || s[0] != 1 || s[19] != 20 {
		t.Fatalf("joining client got %v, want the whole GOP 1..20", s)
	}
	for _, e := range got {
		if c.Live(e) {
			t.Fatalf("GOP frame %d counted as live", e.Seq)
		}
	}
	h.Publish(mkFrame(21, false, 10))
	got = h.Next(&c, nil, 50)
	if len(got) != 1 || !c.Live(got[0]) {
		t.Fatalf("frame after the GOP: %v, live %v", seqs(t, got), len(got) == 1 && c.Live(got[0]))
	}
	if st := h.Stats(); st.LagSkips != 0 {
		t.Errorf("%d lag skips while catching up", st.LagSkips)
	}
}
