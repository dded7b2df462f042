package replay

import (
	"context"
	"time"
)

// Pacer says when each record of a replay is due. Records before From (the
// video lead-in from the keyframe at or before From) are due at once. The
// first record at or after From starts the replay clock: recorded time
// From (or that record's time, when nothing came before From) is then, and
// every later record is due when its recorded time, counted from there and
// divided by Speed, has passed. A record already due (the sender fell
// behind) is due at once.
//
// It waits on the time package's clock, which a testing/synctest bubble
// replaces.
type Pacer struct {
	from  time.Time
	speed float64

	leadIn  bool      // a record came before from
	started bool      // the replay clock runs
	rec0    time.Time // the recorded time at wall0
	wall0   time.Time
}

// NewPacer returns a pacer of a replay from from at speed (> 0).
func NewPacer(from time.Time, speed float64) *Pacer {
	return &Pacer{from: from, speed: speed}
}

// Wait returns when the record recorded at t is due, or ctx's error when
// ctx ends first. Records are given in the order they are sent.
func (p *Pacer) Wait(ctx context.Context, t time.Time) error {
	if !p.started {
		if t.Before(p.from) {
			p.leadIn = true
			return ctx.Err()
		}
		p.started = true
		p.rec0 = t
		if p.leadIn {
			p.rec0 = p.from
		}
		p.wall0 = time.Now()
	}
	due := p.wall0.Add(time.Duration(float64(t.Sub(p.rec0)) / p.speed))
	wait := time.Until(due)
	if wait <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
