package shmring

import (
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// absurdJump is the sequence jump of issue 19's break-in: a commit whose
// sequence jumped by about 8.3e11. At a 60 fps period the commits it
// claims would take 440 years, more than a time.Duration holds.
const absurdJump = 830_000_000_000

// A commit whose sequence jumps by 8.3e11, found where the next commit was
// due, is one observation: the schedule is learned again, and observe
// returns (it used to multiply the jump by the period, overflow, and step
// the due time forward one period at a time, about 1e11 times).
func TestCadenceAbsurdJumpIsADiscontinuity(t *testing.T) {
	t.Parallel()
	const period = 16667 * time.Microsecond
	t0 := time.Unix(1000, 0)
	for _, mode := range []pollMode{modeFine, modeLate, modeCoarse} {
		c := steadyCadence(t0, period, 60)
		at := c.due
		done := make(chan struct{}, 1)
		go func() {
			c.observe(at, absurdJump, mode, finePoll)
			done <- struct{}{}
		}()
		testwait.RecvWithin(t, done, 10*time.Second, "observe of an 8.3e11 jump to return")
		// Nothing in the schedule lies beyond a frame period from the
		// commit, and the next sleep is an ordinary one.
		if c.due.After(at.Add(2 * period)) {
			t.Errorf("mode %d: next due %v after the jump, %v later", mode, c.due, c.due.Sub(at))
		}
		if d, _ := c.next(at.Add(time.Millisecond)); d <= 0 || d > stalledMaxPoll {
			t.Errorf("mode %d: sleep %v after the jump", mode, d)
		}
		// The writer goes on at its period: the schedule is found again.
		now := at
		for range 10 {
			now = now.Add(period)
			c.observe(now, 1, modeFine, finePoll)
		}
		if diff := c.period - period; diff < -time.Millisecond || diff > time.Millisecond {
			t.Errorf("mode %d: period %v ten frames after the jump, want about %v", mode, c.period, period)
		}
	}
}

// The same jump in a running reader, made by the writer at its own cadence
// (so that the reader finds it in its window, where the schedule is
// extrapolated): the reader goes on delivering every frame, the jumped one
// included, and Run returns when its context ends (collect checks that).
func TestReaderSurvivesAbsurdSequenceJump(t *testing.T) {
	t.Parallel()
	const period = 16667 * time.Microsecond
	path, w := createRing(t, 1<<16)
	frames, r := collect(t, ReaderConfig{Path: path}, 256)
	tick := time.NewTicker(period) // paces the writer: the subject of the test
	defer tick.Stop()
	seq := uint64(0)
	write := func(jump uint64) {
		t.Helper()
		<-tick.C
		seq++
		w.mu.Lock()
		w.sequence += jump
		w.mu.Unlock()
		if _, err := w.WriteFrame(Header{FrameSeq: seq, Codec: CodecH264}, payloadFor(seq, 200)); err != nil {
			t.Fatal(err)
		}
		f := next(t, frames, 10*time.Second)
		if f.Header.FrameSeq != seq {
			t.Fatalf("delivered frame_seq %d, want %d", f.Header.FrameSeq, seq)
		}
		if f.Sequence != w.Sequence() {
			t.Fatalf("frame %d delivered with sequence %d, the writer committed %d", seq, f.Sequence, w.Sequence())
		}
	}
	for range 30 {
		write(0)
	}
	eventually(t, 10*time.Second, "the reader to learn the period", func() bool { return r.Period() > 0 })
	for range 5 {
		write(absurdJump)
		for range 10 {
			write(0)
		}
	}
	if st := r.Stats(); st.Restarts != 0 || st.Gaps != 0 {
		t.Errorf("stats after the jumps %+v: a forward jump is neither a restart nor a gap", st)
	}
}
