package keyreq

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// elapse lets d pass on a synctest bubble's clock, then waits until the
// bubble's goroutines have done all that this time called for.
func elapse(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// sends counts what a Coalescer sends; want fails the test when the count
// is not n.
type sends struct {
	t *testing.T
	n atomic.Int64
}

func (s *sends) send() { s.n.Add(1) }

func (s *sends) want(n int64, when string) {
	s.t.Helper()
	if got := s.n.Load(); got != n {
		s.t.Fatalf("%s: %d sends, want %d", when, got, n)
	}
}

func TestCoalescer(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := &sends{t: t}
		c := New(500*time.Millisecond, s.send)
		c.RequestKeyframe()
		s.want(1, "first request")
		for range 10 {
			c.RequestKeyframe()
		}
		elapse(499 * time.Millisecond)
		s.want(1, "inside the interval")
		elapse(2 * time.Millisecond)
		s.want(2, "end of the interval (the deferred one)")
		elapse(time.Second)
		s.want(2, "a second with nobody asking")
		c.RequestKeyframe()
		s.want(3, "request after a quiet second (at once)")
	})
}

// Requests spread over the interval are sent once, at the end of the
// interval that began with the last send, not at the end of an interval
// that each new request starts again.
func TestCoalescerDefersToTheEndOfTheInterval(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := &sends{t: t}
		c := New(500*time.Millisecond, s.send)
		c.RequestKeyframe()
		for range 10 {
			elapse(20 * time.Millisecond)
			c.RequestKeyframe()
		}
		elapse(299 * time.Millisecond)
		s.want(1, "requests inside the interval")
		elapse(2 * time.Millisecond)
		s.want(2, "the interval ended")
	})
}

func TestCoalescerCloseDropsPendingRequest(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := &sends{t: t}
		c := New(time.Second, s.send)
		c.RequestKeyframe()
		c.RequestKeyframe() // pending
		c.Close()
		elapse(2 * time.Second)
		c.RequestKeyframe()
		s.want(1, "after Close (the pending request dropped, the later one ignored)")
	})
}

func TestCoalescerDefaultInterval(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := &sends{t: t}
		c := New(0, s.send)
		defer c.Close()
		c.RequestKeyframe()
		c.RequestKeyframe()
		elapse(DefaultInterval - time.Millisecond)
		s.want(1, "inside the default interval")
		elapse(2 * time.Millisecond)
		s.want(2, "after the default interval")
	})
}
