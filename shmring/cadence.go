package shmring

import "time"

// Tuning of the wait between polls. The ring has no notification, so the
// reader predicts when the next commit is due from the writer's learned frame
// period and sleeps until shortly before it, then polls, more often the
// closer it is to the due time.
const (
	finePoll       = 20 * time.Microsecond  // poll interval right at the due time
	maxFinePoll    = 250 * time.Microsecond // longest poll interval inside the window
	minGuard       = 150 * time.Microsecond // the window spans at least this either side of the due time
	lateMaxPoll    = time.Millisecond       // longest poll interval while a frame is late
	unknownPoll    = time.Millisecond       // poll interval while the period is unknown
	unknownFor     = time.Second            // ...for this long after the last commit
	stalledMinPoll = 5 * time.Millisecond   // first poll interval of a stalled writer
	stalledMaxPoll = 100 * time.Millisecond // longest poll interval of a stalled writer
	absentMaxPoll  = 500 * time.Millisecond // longest wait for an absent or short file
)

// pollMode says how the reader was waiting when it polled.
type pollMode uint8

const (
	modeCoarse pollMode = iota // after a long sleep (before the window, period unknown, stalled)
	modeFine                   // inside the window around the due time
	modeLate                   // after the window: the frame is late
)

// cadence learns the writer's frame period from commit observations and
// tells the reader how long to sleep before it polls again.
type cadence struct {
	period   time.Duration // EWMA of the interval between commits; 0 until learned
	jitter   time.Duration // EWMA of |observed - predicted| commit time
	last     time.Time     // estimated time of the last commit observed
	outliers int           // consecutive intervals far from the period
}

// reset forgets the learned period (a new mapping, a new writer).
func (c *cadence) reset(now time.Time) { *c = cadence{last: now} }

// observe records that steps commits (sequence increments) were observed at
// now, by a poll made in mode after a sleep of slept.
//
// Found by the first poll after a coarse sleep, the commit happened some time
// before now: the reader woke too late. Its time is estimated one guard
// earlier, and the prediction error is taken to be at least a guard, so the
// window widens. Found late, the error is how late it was.
func (c *cadence) observe(now time.Time, steps uint64, mode pollMode, slept time.Duration) {
	if steps == 0 {
		steps = 1
	}
	est := now
	switch mode {
	case modeCoarse:
		if c.period > 0 {
			est = now.Add(-min(c.guard(), slept))
		}
	case modeLate:
		est = now.Add(-slept / 2)
	}
	if !c.last.IsZero() && est.After(c.last) {
		iv := est.Sub(c.last) / time.Duration(steps)
		switch {
		case c.period == 0:
			c.period = iv
			c.jitter = iv / 16
		case iv >= c.period/2 && iv <= 2*c.period:
			var dev time.Duration
			if steps == 1 {
				dev = est.Sub(c.last.Add(c.period))
				if dev < 0 {
					dev = -dev
				}
				if mode == modeCoarse {
					dev = max(dev, c.guard())
				}
			} else {
				dev = c.jitter // missed commits say nothing of the timing
			}
			c.period += (iv - c.period) / 8
			c.jitter += (dev - c.jitter) / 8
			c.outliers = 0
		default:
			// A stall, a burst, or a writer that changed its rate: three in a
			// row and the new rate is believed.
			c.outliers++
			if c.outliers >= 3 {
				c.period, c.jitter, c.outliers = iv, iv/16, 0
			}
		}
	}
	c.last = est
}

// guard is how far either side of the due time the fine window reaches.
func (c *cadence) guard() time.Duration {
	g := minGuard + 5*c.jitter/2
	if c.period > 0 && g > c.period/2 {
		g = c.period / 2
	}
	return g
}

// next returns how long to sleep before polling again at now, and the mode
// of that poll.
func (c *cadence) next(now time.Time) (sleep time.Duration, mode pollMode) {
	since := now.Sub(c.last)
	if c.period == 0 {
		if since < unknownFor {
			return unknownPoll, modeCoarse
		}
		return stalled(since - unknownFor), modeCoarse
	}
	g := c.guard()
	off := now.Sub(c.last.Add(c.period)) // < 0 before the due time
	if off < -g {
		return -off - g, modeCoarse
	}
	if off < g {
		if off < 0 {
			off = -off
		}
		return clampDur(off/4, finePoll, maxFinePoll), modeFine
	}
	late := off - g
	if late < 4*c.period {
		return clampDur(late/4, maxFinePoll, lateMaxPoll), modeLate
	}
	return stalled(late - 4*c.period), modeCoarse
}

// stalled is the back-off of a writer that has not committed for a while.
func stalled(idle time.Duration) time.Duration {
	return clampDur(idle/10, stalledMinPoll, stalledMaxPoll)
}

func clampDur(d, lo, hi time.Duration) time.Duration {
	return max(lo, min(d, hi))
}
