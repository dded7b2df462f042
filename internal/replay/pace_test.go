package replay

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

var t0 = time.Date(2026, 12, 4, 2, 30, 0, 0, time.UTC)

const ms = time.Millisecond

// Each record is sent at its recorded time after From divided by the
// speed, counted from the end of the lead-in; the lead-in (the frames from
// the keyframe before From) goes without waiting.
func TestPacerSpeeds(t *testing.T) {
	t.Parallel()
	for _, speed := range []float64{1, 2, 0.25} {
		t.Run(fmt.Sprint(speed), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				ctx := t.Context()
				p := NewPacer(t0, speed)
				start := time.Now()
				for _, d := range []time.Duration{-1500 * ms, -1000 * ms, -20 * ms} {
					if err := p.Wait(ctx, t0.Add(d)); err != nil {
						t.Fatal(err)
					}
					if el := time.Since(start); el != 0 {
						t.Fatalf("lead-in record at %v sent after %v, want at once", d, el)
					}
				}
				for _, d := range []time.Duration{0, 10 * ms, 100 * ms, 250 * ms, time.Second, 3 * time.Second} {
					if err := p.Wait(ctx, t0.Add(d)); err != nil {
						t.Fatal(err)
					}
					want := time.Duration(float64(d) / speed)
					if el := time.Since(start); el != want {
						t.Fatalf("record at From+%v sent after %v at speed %g, want %v", d, el, speed, want)
					}
				}
			})
		})
	}
}

// Without a lead-in, and with the first record after From, the replay
// starts at that record at once: the time between From and the start of
// the recording is not waited out. A gap inside the recording is.
func TestPacerStartsAtFirstRecordAfterFrom(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		p := NewPacer(t0, 2)
		start := time.Now()
		for _, c := range []struct{ rec, want time.Duration }{
			{5 * time.Second, 0},
			{5*time.Second + 100*ms, 50 * ms},
			{9 * time.Second, 2 * time.Second}, // a gap of 3.9 s at speed 2
		} {
			if err := p.Wait(ctx, t0.Add(c.rec)); err != nil {
				t.Fatal(err)
			}
			if el := time.Since(start); el != c.want {
				t.Fatalf("record at From+%v sent after %v, want %v", c.rec, el, c.want)
			}
		}
	})
}

// A lead-in followed by a first record after From: the clock starts at
// From, so that record waits its distance from From.
func TestPacerLeadInStartsClockAtFrom(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		p := NewPacer(t0, 1)
		_ = p.Wait(ctx, t0.Add(-40*ms))
		start := time.Now()
		if err := p.Wait(ctx, t0.Add(30*ms)); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el != 30*ms {
			t.Fatalf("first record 30ms after From sent after %v, want 30ms", el)
		}
	})
}

// A sender that fell behind (a slow client) sends what is due at once
// until it has caught up; the schedule does not move.
func TestPacerCatchesUp(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		p := NewPacer(t0, 1)
		start := time.Now()
		for i, want := range []time.Duration{0, 100 * ms, 450 * ms, 450 * ms, 450 * ms, 500 * ms} {
			if err := p.Wait(ctx, t0.Add(time.Duration(i)*100*ms)); err != nil {
				t.Fatal(err)
			}
			if el := time.Since(start); el != want {
				t.Fatalf("record %d sent after %v, want %v", i, el, want)
			}
			if i == 1 {
				time.Sleep(350 * ms) // the send of record 1 takes 350 ms
			}
		}
	})
}

// Wait returns ctx's error when ctx ends during the wait.
func TestPacerWaitEndsWithContext(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		p := NewPacer(t0, 1)
		_ = p.Wait(ctx, t0)
		done := make(chan error, 1)
		go func() { done <- p.Wait(ctx, t0.Add(time.Hour)) }()
		time.Sleep(time.Second)
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Wait returned %v before its record was due", err)
		default:
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait after cancel: %v, want context.Canceled", err)
		}
	})
}
