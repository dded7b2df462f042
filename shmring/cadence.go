package shmring

import "time"

// Tuning of the wait between polls. The ring has no notification, so the
// reader predicts when the next commit is due from the writer's learned frame
// period and sleeps until shortly before it.
const (
	finePoll       = 20 * time.Microsecond  // poll interval around the due time
	minGuard       = 300 * time.Microsecond // wake at least this long before the due time
	lateMaxPoll    = 2 * time.Millisecond   // longest poll interval while a frame is late
	unknownPoll    = time.Millisecond       // poll interval while the period is unknown
	unknownFor     = time.Second            // ...for this long after the last commit
	stalledMinPoll = 5 * time.Millisecond   // first poll interval of a stalled writer
	stalledMaxPoll = 100 * time.Millisecond // longest poll interval of a stalled writer
	absentMaxPoll  = 500 * time.Millisecond // longest wait for an absent or short file
)

// cadence learns the writer's frame period from commit observations and
// tells the reader how long to sleep before it polls again.
type cadence struct {
	period   time.Duration // EWMA of the interval between commits; 0 until learned
	jitter   time.Duration // EWMA of |interval - period|
	last     time.Time     // when the last commit was observed (its estimated time)
	outliers int           // consecutive intervals far from the period
}

// reset forgets the learned period (a new mapping, a new writer).
func (c *cadence) reset(now time.Time) { *c = cadence{last: now} }

// observe records that steps commits (sequence increments) were observed at
// now. early is true when the commit was already there at the first poll
// after a long sleep: it happened some time before now, so the reader woke
// too late; the estimate of its time is moved back by one guard so that the
// next wake-up comes earlier.
func (c *cadence) observe(now time.Time, steps uint64, early bool) {
	if early {
		now = now.Add(-c.guard())
	}
	if steps == 0 {
		steps = 1
	}
	if !c.last.IsZero() && now.After(c.last) {
		iv := now.Sub(c.last) / time.Duration(steps)
		switch {
		case c.period == 0:
			c.period = iv
			c.jitter = iv / 8
		case iv >= c.period/2 && iv <= 2*c.period:
			dev := iv - c.period
			if dev < 0 {
				dev = -dev
			}
			c.period += (iv - c.period) / 8
			c.jitter += (dev - c.jitter) / 8
			c.outliers = 0
		default:
			// A stall, a burst, or a writer that changed its rate: three in a
			// row and the new rate is believed.
			c.outliers++
			if c.outliers >= 3 {
				c.period, c.jitter, c.outliers = iv, iv/8, 0
			}
		}
	}
	c.last = now
}

// guard is how long before the due time the reader wakes up.
func (c *cadence) guard() time.Duration {
	g := minGuard + 4*c.jitter
	if c.period > 0 && g > c.period/2 {
		g = c.period / 2
	}
	return g
}

// next returns how long to sleep before polling again at now, and whether the
// reader is in the fine polling window around the due time.
func (c *cadence) next(now time.Time) (sleep time.Duration, fine bool) {
	since := now.Sub(c.last)
	if c.period == 0 {
		if since < unknownFor {
			return unknownPoll, false
		}
		return stalled(since - unknownFor), false
	}
	g := c.guard()
	due := c.last.Add(c.period)
	early := due.Sub(now)
	if early > g {
		return early - g, false
	}
	late := -early
	window := g + minGuard + 4*c.jitter
	if late < window {
		return finePoll, true
	}
	if late < 4*c.period+window {
		return clampDur(late/8, 4*finePoll, lateMaxPoll), false
	}
	return stalled(late - 4*c.period - window), false
}

// stalled is the back-off of a writer that has not committed for a while.
func stalled(idle time.Duration) time.Duration {
	return clampDur(idle/10, stalledMinPoll, stalledMaxPoll)
}

func clampDur(d, lo, hi time.Duration) time.Duration {
	return max(lo, min(d, hi))
}
