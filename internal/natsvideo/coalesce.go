package natsvideo

import (
	"sync"
	"time"
)

// DefaultIDRCoalesce is the shortest interval between two keyframe requests
// sent on, the old service's SDR_IDR_COALESCE_MS.
const DefaultIDRCoalesce = 500 * time.Millisecond

// coalescer runs send at most once per interval: a request inside the
// interval is sent when the interval ends, and any number of requests in
// between become that one.
type coalescer struct {
	every time.Duration
	send  func()

	mu     sync.Mutex
	last   time.Time
	timer  *time.Timer
	closed bool
}

func newCoalescer(every time.Duration, send func()) *coalescer {
	if every <= 0 {
		every = DefaultIDRCoalesce
	}
	return &coalescer{every: every, send: send}
}

// request asks for one send, now or at the end of the current interval.
func (c *coalescer) request() {
	c.mu.Lock()
	if c.closed || c.timer != nil {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	if wait := c.every - now.Sub(c.last); !c.last.IsZero() && wait > 0 {
		c.timer = time.AfterFunc(wait, c.fire)
		c.mu.Unlock()
		return
	}
	c.last = now
	c.mu.Unlock()
	c.send()
}

func (c *coalescer) fire() {
	c.mu.Lock()
	c.timer = nil
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.last = time.Now()
	c.mu.Unlock()
	c.send()
}

// close drops a pending request; later requests do nothing.
func (c *coalescer) close() {
	c.mu.Lock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
}
