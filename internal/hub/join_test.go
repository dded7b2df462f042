package hub

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sdr-os/sdr-caddy/internal/frame"
)

// A client that joins after the writer stopped is sent nothing older than
// JoinMaxAge: it waits for the next keyframe, which is requested, and starts
// there. One that joins in time gets the kept GOP at once.
func TestJoinSendsNothingStale(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := New(Config{})
		defer h.Close()
		h.Publish(mkFrame(1, true, 10))
		h.Publish(mkFrame(2, false, 10))
		elapse(DefaultJoinMaxAge / 2)
		early := h.Join()
		if got := seqs(t, h.Next(&early, nil, 1<<20)); fmt.Sprint(got) != "[1 2]" {
			t.Fatalf("client joining %v after the keyframe got %v, want the GOP [1 2]", DefaultJoinMaxAge/2, got)
		}
		elapse(DefaultJoinMaxAge) // the writer stopped: the GOP is stale
		sent := h.Stats().IDRSent
		late := h.Join()
		if w, _ := late.WaitingForKeyframe(); !w {
			t.Fatal("client joining a stale stream does not wait for a keyframe")
		}
		if got := h.Next(&late, nil, 1<<20); len(got) != 0 {
			t.Fatalf("client joining a stale stream got %v", seqs(t, got))
		}
		synctest.Wait()
		if h.Stats().IDRSent != sent+1 {
			t.Errorf("no keyframe requested for a client joining a stale stream")
		}
		h.Publish(mkFrame(3, false, 10)) // the writer resumes with deltas
		if got := h.Next(&late, nil, 1<<20); len(got) != 0 {
			t.Fatalf("waiting client got delta %v", seqs(t, got))
		}
		h.Publish(mkFrame(4, true, 10))
		h.Publish(mkFrame(5, false, 10))
		if got := seqs(t, h.Next(&late, nil, 1<<20)); fmt.Sprint(got) != "[4 5]" {
			t.Fatalf("client got %v after the fresh keyframe, want [4 5]", got)
		}
		if got := seqs(t, h.Next(&early, nil, 1<<20)); fmt.Sprint(got) != "[3 4 5]" {
			t.Fatalf("streaming client got %v, want [3 4 5]: the join rules are for joins only", got)
		}
	})
}

// A GOP longer than JoinMaxReplay (by arrival times) or JoinMaxReplayBytes
// is not replayed, however fresh: an intra-refresh stream's one keyframe
// and the seconds of deltas since would reach the browser in one burst.
func TestJoinReplayCaps(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		frames int
		every  time.Duration
		size   int
		replay bool
	}{
		{"within both caps", 50, 10 * time.Millisecond, 1000, true},
		{"1.5 s of deltas", 150, 10 * time.Millisecond, 1000, false},
		{"over 2 MiB", 30, time.Millisecond, 100_000, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				h := New(Config{JoinMaxAge: time.Minute, Capacity: 1000})
				defer h.Close()
				for i := range c.frames {
					h.Publish(mkFrame(uint64(i+1), i == 0, c.size))
					time.Sleep(c.every) // the subject: the writer's pace, on the bubble's clock
				}
				j := h.Join()
				got := h.Next(&j, nil, 1<<30)
				if c.replay && len(got) != c.frames {
					t.Fatalf("joining client got %d frames, want the whole GOP of %d", len(got), c.frames)
				}
				if !c.replay {
					if len(got) != 0 {
						t.Fatalf("joining client got %d frames, want none: it waits for the next keyframe", len(got))
					}
					h.Publish(mkFrame(uint64(c.frames+1), true, 10))
					if got := seqs(t, h.Next(&j, nil, 1<<30)); len(got) != 1 || got[0] != uint64(c.frames+1) {
						t.Fatalf("joining client got %v, want the next keyframe", got)
					}
				}
				synctest.Wait()
				if h.Stats().IDRSent != 1 {
					t.Errorf("%d keyframe requests sent, want 1", h.Stats().IDRSent)
				}
			})
		})
	}
}

// A writer restart drops the kept GOP at once: a client joining before the
// new run's keyframe waits for it. A gap keeps the GOP. Both ask for a
// keyframe.
func TestBreakRestartDropsGOP(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := New(Config{IDRCoalesce: time.Millisecond})
		defer h.Close()
		h.Publish(mkFrame(1, true, 10))
		h.Publish(mkFrame(2, false, 10))
		h.Break(frame.Break{})
		j := h.Join()
		if got := seqs(t, h.Next(&j, nil, 1<<20)); fmt.Sprint(got) != "[1 2]" {
			t.Fatalf("after a gap a joining client got %v, want the kept GOP [1 2]", got)
		}
		h.Break(frame.Break{Restart: true})
		j2 := h.Join()
		if got := h.Next(&j2, nil, 1<<20); len(got) != 0 {
			t.Fatalf("after a restart a joining client got %v, want nothing before the new run's keyframe", seqs(t, got))
		}
		h.Publish(mkFrame(1, true, 10))
		if got := seqs(t, h.Next(&j2, nil, 1<<20)); fmt.Sprint(got) != "[1]" {
			t.Fatalf("got %v, want the new run's keyframe", got)
		}
		if got := seqs(t, h.Next(&j, nil, 1<<20)); fmt.Sprint(got) != "[1]" {
			t.Fatalf("the streaming client got %v, want the new run's keyframe", got)
		}
		elapse(time.Second)
		if st := h.Stats(); st.IDRAsked != 4 || st.IDRSent < 2 {
			t.Errorf("keyframe requests asked %d sent %d, want 4 asked (2 breaks, 2 joins)", st.IDRAsked, st.IDRSent)
		}
	})
}

// A Tally counts over the hubs of one stream: their clients, each frame
// once, and the frames read while a client of any of them was connected.
func TestTallyCountsAcrossHubs(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		in := prometheus.NewCounter(prometheus.CounterOpts{Name: "frames_in"})
		a, b := New(Config{Capacity: 2}), New(Config{})
		defer a.Close()
		defer b.Close()
		old := mkFrame(1, true, 10) // arrived before the tally: a GOP replayed to it
		elapse(time.Millisecond)
		tl := NewTally(in)
		removeA := tl.Add(a)
		defer tl.Add(b)()
		tl.Frame(old)
		publish := func(seq uint64, key bool, size int) {
			f := mkFrame(seq, key, size)
			tl.Frame(f)
			a.Publish(f)
			b.Publish(f)
		}
		publish(2, true, 100) // no client anywhere
		cb := b.Join()        // a client of the second site
		publish(3, false, 300)
		publish(4, false, 500)
		st := tl.Stats()
		if st.Clients != 1 || st.FramesBroadcast != 2 || st.AvgFrameSize() != 400 {
			t.Fatalf("stats %+v, want 1 client and frames 3 and 4 broadcast (avg 400)", st)
		}
		var m dto.Metric
		if err := in.Write(&m); err != nil {
			t.Fatal(err)
		}
		if n := m.GetCounter().GetValue(); n != 3 {
			t.Fatalf("frames in %v, want 3: each frame once, the replayed one not", n)
		}
		ca := a.Join()
		_ = a.Next(&ca, nil, 1<<20) // caught up
		for seq := uint64(5); seq <= 10; seq++ {
			publish(seq, false, 10)
		}
		_ = a.Next(&ca, nil, 1<<20) // 6 behind with capacity 2: a lag skip
		_ = b.Next(&cb, nil, 1<<20)
		if st := tl.Stats(); st.Clients != 2 || st.LagSkips != 1 {
			t.Fatalf("stats %+v, want 2 clients and 1 lag skip", st)
		}
		a.Leave()
		b.Leave()
		removeA()
		removeA()
		if st := tl.Stats(); st.Clients != 0 || st.LagSkips != 1 || st.FramesBroadcast != 8 {
			t.Fatalf("stats after the clients left and a hub went %+v, want 0 clients, the lag skip kept, 8 frames", st)
		}
		publish(11, false, 10)
		if st := tl.Stats(); st.FramesBroadcast != 8 {
			t.Fatalf("frame read with no client counted as broadcast: %+v", st)
		}
	})
}
