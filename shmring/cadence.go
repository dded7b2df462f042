package shmring

import "time"

// Tuning of the wait between polls. The ring has no notification, so the
// reader predicts when the next commit is due and sleeps until shortly before
// it, then polls, more often the closer it is to the due time.
const (
	finePoll       = 20 * time.Microsecond  // poll interval right at the due time
	maxFinePoll    = 250 * time.Microsecond // longest poll interval inside the window
	minGuard       = 150 * time.Microsecond // the window spans at least this either side of the due time
	lateMaxPoll    = time.Millisecond       // longest poll interval while a commit is overdue
	unknownPoll    = time.Millisecond       // poll interval while the period is unknown
	unknownFor     = time.Second            // ...for this long after the last commit
	overdueSlots   = 4                      // due times without a commit before the writer counts as stalled...
	stalledAfter   = 50 * time.Millisecond  // ...and at least this long without one
	minPeriod      = 100 * time.Microsecond // no frame writer commits faster than 10 kHz...
	maxBurst       = 1024                   // ...except in bursts of at most this many commits
	maxPeriod      = 10 * time.Second       // a slower writer is stalled, not periodic
	maxWakeGuard   = time.Millisecond       // most the window opens earlier for the reader's own late wake-ups
	maxCoarseSleep = 4 * time.Millisecond   // longest sleep while the writer commits: bounds what an unforeseen commit waits
	stalledMinPoll = 5 * time.Millisecond   // first poll interval of a stalled writer
	stalledMaxPoll = 100 * time.Millisecond // longest poll interval of a stalled writer
	maxWatchedPoll = 5 * time.Millisecond   // ...while its frames are watched (Reader.Watch)
	minWatchedPoll = 500 * time.Microsecond // ...and never shorter than this
	absentMaxPoll  = 500 * time.Millisecond // longest wait for an absent or short file
	zeroConfirm    = 100 * time.Millisecond // how long sequence must read 0 to be a writer's reset
)

// pollMode says how the reader was waiting when it polled.
type pollMode uint8

const (
	modeCoarse pollMode = iota // after a long sleep (before the window, period unknown, stalled)
	modeFine                   // inside the window around the due time
	modeLate                   // a commit is overdue
)

// cadence is a phase-locked estimate of the writer's commits: their period
// and the time the next one is due. Each observed commit pulls the due time
// and the period a little towards what was seen, so one late frame (a writer
// descheduled for a few milliseconds) does not shift the window off the
// frames that follow it on time.
type cadence struct {
	period  time.Duration // 0 until learned
	due     time.Time     // when the next commit is expected
	jitter  time.Duration // EWMA of |observed - expected| commit time
	lastObs time.Time     // estimated time of the last commit observed; zero before the first
	start   time.Time     // when observing began (the mapping)
	overdue int           // due times passed without a commit
	misses  int           // consecutive commits far from their due time
	catchup bool          // the last commit came late: the next may follow at once
	search  time.Duration // extra half-width of the next window after a commit found late
	missAt  time.Time     // the last of the consecutive misses
	missIv  time.Duration // the interval it ended, 0 for the first
	wake    time.Duration // how late the reader's own sleeps end (EWMA, quick to rise)
	idleCap time.Duration // longest poll interval of a stalled writer; 0: stalledMaxPoll
}

// overslept records that a sleep ended late by over: on a loaded machine
// the reader's own wake-up comes late, and the window must open that much
// earlier for the commit not to land before it.
func (c *cadence) overslept(over time.Duration) {
	over = max(over, 0)
	if over > c.wake {
		c.wake += (over - c.wake) / 2
	} else {
		c.wake += (over - c.wake) / 32
	}
}

// reset forgets what was learned (a new mapping, a new writer).
func (c *cadence) reset(now time.Time) { *c = cadence{start: now, wake: c.wake} }

// observe records that steps commits (sequence increments) were observed at
// now, by a poll made in mode after a sleep of slept. It reports whether
// steps was absurd: more commits than any writer can have made since the
// last one observed (maxSteps). Such a jump (a corrupt or hostile write of
// the sequence) is taken as one commit of unknown place in the schedule:
// the period stays, the phase is found again from the next commit.
func (c *cadence) observe(now time.Time, steps uint64, mode pollMode, slept time.Duration) (absurd bool) {
	steps = max(steps, 1)
	if steps > c.maxSteps(now) {
		c.discontinuity(now, mode, slept)
		return true
	}
	prev, overdue, searching := c.lastObs, c.overdue, c.search > 0
	c.overdue, c.catchup, c.search = 0, false, 0
	if c.period == 0 {
		// The first period comes from two observed commits (the first one
		// may have been committed any time before the mapping).
		c.lastObs = now
		if !prev.IsZero() && now.After(prev) {
			c.setPeriod(now.Sub(prev) / time.Duration(steps))
			c.due = now.Add(c.period)
		}
		return false
	}
	if mode == modeCoarse {
		// Found by the first poll after a long sleep: the commit came at
		// some time during that sleep, the reader cannot tell when. Guess
		// the middle, and open the next window over the whole span so
		// that the next commit is seen as it happens.
		est := now.Add(-slept / 2)
		c.lastObs = est
		if iv := est.Sub(prev) / time.Duration(steps); iv < c.period/2 || iv > 2*c.period {
			if c.miss(est, steps) {
				return false
			}
		}
		c.search = slept / 2
		c.due = est.Add(c.period)
		return false
	}
	est := now
	if mode == modeLate {
		est = now.Add(-slept / 2)
	}
	c.lastObs = est
	if searching {
		// The due time was a guess; this observation is not.
		c.misses = 0
		c.due = est.Add(c.period)
		return false
	}
	// The commit seen is the steps-th since the last one expected; the
	// overdue due times were already rolled forward by next.
	expected := c.due.Add(mulDur(steps-1, c.period))
	err := est.Sub(expected)
	// A commit that comes only after due times passed without one is a
	// miss too: a writer that skips a frame now and then costs one, but
	// one whose period is a multiple of the learned one (a lock on a
	// harmonic) makes every commit a miss, and the period is relearned.
	if err < -c.period/2 || err > c.period/2 || overdue > 0 {
		// Far off: a writer descheduled for a while, a burst after a
		// stall, or a writer that changed its rate. One miss keeps the
		// schedule (a writer that fell behind usually catches up on it);
		// three in a row and the period and phase are learned again.
		c.catchup = err > 0
		if c.miss(est, steps) {
			return false
		}
		c.due = expected.Add(c.period)
		if behind := est.Sub(c.due); behind > 0 {
			// The first due time of the schedule not before est.
			c.due = est.Add((c.period - behind%c.period) % c.period)
		} else if -behind > overdueSlots*c.period {
			// Several frames more than the time allows at this period:
			// nothing of the schedule is left to keep.
			c.due = est.Add(c.period)
		}
		return false
	}
	c.misses = 0
	// A writer that fell behind its schedule often commits the next frame
	// right after this one to catch up: poll for it until the window.
	c.catchup = err > c.guard()
	abs := max(err, -err)
	c.jitter += (abs - c.jitter) / 8
	c.period = clampDur(c.period+err/16, minPeriod, maxPeriod)
	c.due = expected.Add(err / 4).Add(c.period)
	return false
}

// maxSteps is the most commits a writer can have made between the last
// commit observed (or the start of observing) and now: one per minPeriod,
// plus a burst.
func (c *cadence) maxSteps(now time.Time) uint64 {
	since := c.lastObs
	if since.IsZero() {
		since = c.start
	}
	d := now.Sub(since)
	if since.IsZero() || d < 0 {
		d = 0
	}
	return uint64(d/minPeriod) + maxBurst
}

// discontinuity records a commit observed at now whose place in the
// schedule is unknown: the period stays, the next window spans a whole
// period around the next due time, and the commit after it sets the phase
// again.
func (c *cadence) discontinuity(now time.Time, mode pollMode, slept time.Duration) {
	est := now
	if mode != modeFine {
		est = now.Add(-slept / 2)
	}
	c.lastObs = est
	c.overdue, c.catchup, c.misses, c.missIv = 0, false, 0, 0
	if c.period > 0 {
		c.due = est.Add(c.period)
		c.search = c.period / 2
	}
}

// mulDur is n*d, saturated at the largest Duration (d >= 0).
func mulDur(n uint64, d time.Duration) time.Duration {
	const maxDur = time.Duration(1<<63 - 1)
	if d <= 0 || n == 0 {
		return 0
	}
	if n > uint64(maxDur/d) {
		return maxDur
	}
	return time.Duration(n) * d
}

// miss counts an observation far from the schedule. When two consecutive
// intervals between such observations agree (within a quarter), the writer
// has a new rate: period and phase are learned again from them, and miss
// reports true. A stall, or the irregular bursts of a writer catching up,
// never teach a period.
func (c *cadence) miss(est time.Time, steps uint64) bool {
	c.misses++
	if c.misses == 1 || !est.After(c.missAt) {
		c.missAt, c.missIv = est, 0
		return false
	}
	iv := est.Sub(c.missAt) / time.Duration(steps)
	prevIv := c.missIv
	c.missAt, c.missIv = est, iv
	if prevIv == 0 || max(iv-prevIv, prevIv-iv) > max(iv, prevIv)/4 {
		return false
	}
	c.setPeriod((iv + prevIv) / 2)
	c.misses, c.missIv = 0, 0
	c.due = est.Add(c.period)
	return true
}

func (c *cadence) setPeriod(p time.Duration) {
	c.period = clampDur(p, minPeriod, maxPeriod)
	c.jitter = c.period / 16
}

// guard is how far either side of the due time the fine window reaches.
func (c *cadence) guard() time.Duration {
	// Moderate lateness of the reader's own wake-ups is made up for by
	// waking earlier; a machine that freezes the reader for tens of
	// milliseconds cannot be, and would only keep it polling.
	g := max(minGuard+5*c.jitter/2, minGuard+c.search) + min(2*c.wake, maxWakeGuard)
	if c.period > 0 && g > c.period/2 {
		g = c.period / 2
	}
	return g
}

// next returns how long to sleep before polling again at now, and the mode
// of that poll. A commit that has not come by halfway to the following due
// time is overdue: the window moves on to the next due time, and until then
// the reader polls at most lateMaxPoll apart, so a late frame still arrives
// within about a millisecond. After a late commit it polls as often until the
// next window: a writer catching up on its schedule commits back to back.
func (c *cadence) next(now time.Time) (sleep time.Duration, mode pollMode) {
	if c.period == 0 {
		since := now.Sub(c.start)
		if !c.lastObs.IsZero() {
			since = now.Sub(c.lastObs)
		}
		if since < unknownFor {
			return unknownPoll, modeCoarse
		}
		return c.backoff(since - unknownFor), modeCoarse
	}
	for now.Sub(c.due) > c.period/2 && c.overdue < overdueSlots {
		c.due = c.due.Add(c.period)
		c.overdue++
	}
	if c.stalled(now) {
		return c.backoff(now.Sub(c.lastObs)), modeCoarse
	}
	g := c.guard()
	off := now.Sub(c.due) // < 0 before the due time
	switch {
	case off < -g && (c.overdue > 0 || c.catchup):
		return min(-off-g, lateMaxPoll), modeLate
	case off < -g:
		return min(-off-g, maxCoarseSleep), modeCoarse
	case off < g:
		return clampDur(max(off, -off)/4, finePoll, maxFinePoll), modeFine
	default:
		return clampDur((off-g)/4, maxFinePoll, lateMaxPoll), modeLate
	}
}

// idle reports whether the writer is stalled or its period unknown: waits
// need no precision then.
func (c *cadence) idle() bool { return c.period == 0 || c.stalled(time.Now()) }

// stalled reports whether the writer has missed overdueSlots due times, and
// stalledAfter has passed, since its last commit.
func (c *cadence) stalled(now time.Time) bool {
	return c.overdue >= overdueSlots && now.Sub(c.lastObs) >= max(stalledAfter, overdueSlots*c.period)
}

// backoff is the poll interval of a writer that has not committed for
// idle: a tenth of that, from 5 ms up to 100 ms, or up to idleCap.
func (c *cadence) backoff(idle time.Duration) time.Duration {
	d := clampDur(idle/10, stalledMinPoll, stalledMaxPoll)
	if c.idleCap > 0 {
		d = min(d, c.idleCap)
	}
	return d
}

// watchedPoll is the longest poll interval of a paused writer whose frames
// are watched: the frame that ends a pause stays in the slot for a frame
// period (until the next one replaces it), so it is polled at least twice a
// period, and at least every 5 ms.
func watchedPoll(period time.Duration) time.Duration {
	if period <= 0 {
		return maxWatchedPoll
	}
	return clampDur(period/2, minWatchedPoll, maxWatchedPoll)
}

func clampDur(d, lo, hi time.Duration) time.Duration {
	return max(lo, min(d, hi))
}
