package shmring

import (
	"testing"
	"time"
)

func TestCadenceLearnsPeriodAndWakesBeforeDue(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	var c cadence
	c.reset(t0)
	if d, mode := c.next(t0.Add(time.Millisecond)); d != unknownPoll || mode != modeCoarse {
		t.Fatalf("unknown period: %v %v", d, mode)
	}
	const period = 16667 * time.Microsecond
	now := t0
	for i := range 120 {
		now = now.Add(period + time.Duration(i%3-1)*50*time.Microsecond) // +-50 us jitter
		c.observe(now, 1, modeFine, finePoll)
	}
	if diff := c.period - period; diff < -200*time.Microsecond || diff > 200*time.Microsecond {
		t.Fatalf("period %v, want about %v", c.period, period)
	}
	if c.jitter > 200*time.Microsecond {
		t.Fatalf("jitter %v", c.jitter)
	}
	// Right after a frame: long sleeps, none longer than maxCoarseSleep,
	// up to a guard before the due time.
	d, mode := c.next(now)
	if mode != modeCoarse || d != maxCoarseSleep {
		t.Errorf("sleep after a frame: %v mode %v", d, mode)
	}
	d, mode = c.next(c.due.Add(-3 * time.Millisecond))
	if mode != modeCoarse || d != 3*time.Millisecond-c.guard() {
		t.Errorf("sleep 3 ms before the due time: %v mode %v (guard %v)", d, mode, c.guard())
	}
	// At the due time: the finest polling; a little off it, coarser.
	if d, mode := c.next(now.Add(c.period)); mode != modeFine || d != finePoll {
		t.Errorf("at due time: %v mode %v", d, mode)
	}
	g := c.guard()
	if d, mode := c.next(now.Add(c.period - g + time.Microsecond)); mode != modeFine || d <= finePoll || d > maxFinePoll {
		t.Errorf("at the window's start: %v mode %v", d, mode)
	}
	// Past the window: polls slow down, bounded.
	if d, mode := c.next(now.Add(period + g + time.Millisecond)); mode != modeLate || d > lateMaxPoll || d < maxFinePoll {
		t.Errorf("a millisecond past the window: %v mode %v", d, mode)
	}
	// Halfway to the next due time the commit is overdue: the window moves
	// on, and until it opens the reader polls every lateMaxPoll at most.
	if d, mode := c.next(now.Add(period + period/2 + time.Millisecond)); mode != modeLate || d != lateMaxPoll {
		t.Errorf("overdue: %v mode %v", d, mode)
	}
	if d, mode := c.next(now.Add(2 * period)); mode != modeFine || d != finePoll {
		t.Errorf("at the next due time: %v mode %v", d, mode)
	}
	// A stalled writer: back-off, bounded.
	if d, _ := c.next(now.Add(time.Minute)); d != stalledMaxPoll {
		t.Errorf("stalled a minute: %v", d)
	}
}

func TestCadenceAdoptsNewRate(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(0, 0)
	c := steadyCadence(t0, 10*time.Millisecond, 20)
	now := t0.Add(20 * 10 * time.Millisecond)
	// One stall does not change the period...
	now = now.Add(time.Second)
	c.observe(now, 1, modeFine, finePoll)
	if c.period < 9*time.Millisecond || c.period > 11*time.Millisecond {
		t.Fatalf("period after one stall: %v", c.period)
	}
	// ...a writer that now runs at 40 ms does, after three intervals.
	for range 3 {
		now = now.Add(40 * time.Millisecond)
		c.observe(now, 1, modeFine, finePoll)
	}
	if c.period != 40*time.Millisecond {
		t.Fatalf("period after rate change: %v", c.period)
	}
	// Missed commits divide the interval.
	now = now.Add(120 * time.Millisecond)
	c.observe(now, 3, modeFine, finePoll)
	if c.period != 40*time.Millisecond {
		t.Fatalf("period after 3 steps in 120 ms: %v", c.period)
	}
}

// A commit found at the first poll after the long sleep was missed by that
// sleep: the next wake-up comes earlier and the window widens.
func TestCadenceFoundAfterLongSleepWakesEarlier(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(0, 0)
	a, b := steadyCadence(t0, 10*time.Millisecond, 10), steadyCadence(t0, 10*time.Millisecond, 10)
	now := t0.Add(11 * 10 * time.Millisecond)
	a.observe(now, 1, modeFine, finePoll)
	b.observe(now, 1, modeCoarse, 9*time.Millisecond)
	da, _ := a.next(now)
	db, _ := b.next(now)
	if db >= da {
		t.Errorf("after a coarse find the sleep is %v, after a fine one %v; want shorter", db, da)
	}
	if b.guard() <= a.guard() {
		t.Errorf("guard %v after a coarse find, %v after a fine one; want wider", b.guard(), a.guard())
	}
}

// One frame that comes late (a writer descheduled for 4 ms) does not move
// the window off the frames that follow on schedule.
func TestCadenceOneLateFrameKeepsPhase(t *testing.T) {
	t.Parallel()
	const period = 16667 * time.Microsecond
	t0 := time.Unix(0, 0)
	c := steadyCadence(t0, period, 60)
	late := t0.Add(61*period + 4*time.Millisecond)
	for now := t0.Add(60 * period); now.Before(late); {
		d, _ := c.next(now)
		now = now.Add(d)
	}
	c.observe(late, 1, modeLate, lateMaxPoll)
	onTime := t0.Add(62 * period)
	if off := c.due.Sub(onTime); off < -c.guard() || off > c.guard() {
		t.Errorf("after one late frame the next is expected %v off schedule; window reaches %v", off, c.guard())
	}
}

// After a late commit the writer may commit again at once to catch up on
// its schedule: the reader polls for it until the next window instead of
// sleeping through it.
func TestCadencePollsForCatchUpAfterLateCommit(t *testing.T) {
	t.Parallel()
	const period = 16667 * time.Microsecond
	t0 := time.Unix(0, 0)
	c := steadyCadence(t0, period, 60)
	now := t0.Add(60 * period)
	if d, mode := c.next(now); mode != modeCoarse || d != maxCoarseSleep {
		t.Fatalf("on schedule: %v mode %v, want a long sleep", d, mode)
	}
	late := t0.Add(61*period + 5*time.Millisecond)
	c.observe(late, 1, modeLate, lateMaxPoll)
	if d, mode := c.next(late); mode != modeLate || d > lateMaxPoll {
		t.Errorf("after a late commit: %v mode %v, want polls at most %v apart", d, mode, lateMaxPoll)
	}
	c.observe(t0.Add(62*period), 1, modeFine, finePoll)
	if d, mode := c.next(t0.Add(62 * period)); mode != modeCoarse || d != maxCoarseSleep {
		t.Errorf("back on schedule: %v mode %v, want a long sleep", d, mode)
	}
}

// A cadence locked on half the writer's period (every other window empty)
// relearns the period; and the first period comes from two commits, not
// from the time of the mapping.
func TestCadenceLeavesHarmonic(t *testing.T) {
	t.Parallel()
	const period = 16667 * time.Microsecond
	t0 := time.Unix(0, 0)
	var c cadence
	c.reset(t0)
	c.observe(t0.Add(8*time.Millisecond), 1, modeCoarse, unknownPoll)
	if c.period != 0 {
		t.Fatalf("period %v learned from one commit", c.period)
	}
	c.period, c.due, c.jitter = period/2, t0.Add(8*time.Millisecond+period/2), 0
	now := t0.Add(8 * time.Millisecond)
	for i := 1; i <= 10; i++ {
		commit := t0.Add(8*time.Millisecond + time.Duration(i)*period)
		for {
			d, _ := c.next(now)
			if now.Add(d).After(commit) {
				break
			}
			now = now.Add(d)
		}
		now = commit
		c.observe(now, 1, modeFine, finePoll)
	}
	if c.period < period-time.Millisecond || c.period > period+time.Millisecond {
		t.Errorf("period %v after 10 commits every %v", c.period, period)
	}
}

// A commit found by the first poll after a long sleep happened at some
// unknown time during that sleep: the next window spans the whole sleep, so
// that the next commit is seen as it happens and the phase is found.
func TestCadenceSearchesAfterCommitFoundLate(t *testing.T) {
	t.Parallel()
	const period = 16667 * time.Microsecond
	t0 := time.Unix(0, 0)
	c := steadyCadence(t0, period, 30)
	// The writer's phase moved 12 ms earlier: commits at 31P-12ms, 32P-12ms...
	shift := -12 * time.Millisecond
	now := t0.Add(30 * period)
	commit := t0.Add(31*period + shift)
	var d time.Duration
	for !now.After(commit) { // long sleeps until one ends after the shifted commit
		var mode pollMode
		d, mode = c.next(now)
		if mode != modeCoarse {
			t.Fatalf("%v after the last commit: mode %v", now.Sub(t0.Add(30*period)), mode)
		}
		now = now.Add(d)
	}
	c.observe(now, 1, modeCoarse, d)
	// The next commit must fall inside the next window.
	next := t0.Add(32*period + shift)
	for {
		d, mode := c.next(now)
		if now.Add(d).After(next) {
			if mode == modeCoarse {
				t.Fatalf("slept through the commit at %v (poll at %v, mode coarse)", next.Sub(t0), now.Add(d).Sub(t0))
			}
			if now.Add(d).Sub(next) > maxFinePoll {
				t.Fatalf("commit at %v seen only at %v", next.Sub(t0), now.Add(d).Sub(t0))
			}
			break
		}
		now = now.Add(d)
	}
	c.observe(next, 1, modeFine, finePoll)
	if off := c.due.Sub(t0.Add(33*period + shift)); off < -time.Millisecond || off > time.Millisecond {
		t.Errorf("phase not found: next due %v off", off)
	}
}

// A writer catching up commits in irregular bursts: the period must not be
// relearned from them.
func TestCadenceBurstDoesNotTeachPeriod(t *testing.T) {
	t.Parallel()
	const period = time.Millisecond
	t0 := time.Unix(0, 0)
	c := steadyCadence(t0, period, 30)
	now := t0.Add(30*period + 20*time.Millisecond)                 // the writer was away 20 ms...
	for _, gap := range []time.Duration{0, 30, 170, 60, 400, 90} { // ...and catches up
		now = now.Add(gap * time.Microsecond)
		c.observe(now, 1, modeLate, 250*time.Microsecond)
	}
	if c.period < 900*time.Microsecond || c.period > 1100*time.Microsecond {
		t.Errorf("period %v after a burst, want about %v", c.period, period)
	}
}

// A stalled writer is polled at most every 100 ms, or at most every idleCap
// while its frames are watched; the same with the period still unknown.
func TestCadenceWatchedBackoff(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	period := 33 * time.Millisecond
	c := steadyCadence(t0, period, 30)
	stall := t0.Add(30*period + 2*time.Second)
	c.next(stall) // rolls the due times over
	if d, mode := c.next(stall); d != stalledMaxPoll || mode != modeCoarse {
		t.Fatalf("stalled 2 s: sleep %v (%v), want %v", d, mode, stalledMaxPoll)
	}
	c.idleCap = watchedPoll(c.period)
	if d, _ := c.next(stall); d != maxWatchedPoll {
		t.Fatalf("stalled 2 s, watched: sleep %v, want %v", d, maxWatchedPoll)
	}
	var u cadence
	u.reset(t0)
	late := t0.Add(unknownFor + 2*time.Second)
	if d, _ := u.next(late); d != stalledMaxPoll {
		t.Fatalf("period unknown, 3 s: sleep %v, want %v", d, stalledMaxPoll)
	}
	u.idleCap = watchedPoll(0)
	if d, _ := u.next(late); d != maxWatchedPoll {
		t.Fatalf("period unknown, 3 s, watched: sleep %v, want %v", d, maxWatchedPoll)
	}
	for _, c := range []struct{ period, want time.Duration }{
		{0, maxWatchedPoll}, {33 * time.Millisecond, maxWatchedPoll}, {8 * time.Millisecond, 4 * time.Millisecond},
		{time.Millisecond, minWatchedPoll},
	} {
		if got := watchedPoll(c.period); got != c.want {
			t.Errorf("watchedPoll(%v) = %v, want %v", c.period, got, c.want)
		}
	}
}
