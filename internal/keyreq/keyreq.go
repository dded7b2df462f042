// Package keyreq coalesces keyframe requests: however many parts of a
// stream ask for a keyframe (joining clients, lagging clients, WebRTC
// receivers, NATS edges), the producer is asked at most once per interval.
// The stream hub, the NATS video edge and origin, and sdr_whep each put one
// Coalescer in front of their producer.
//
// The package imports nothing from Caddy.
package keyreq

import (
	"sync"
	"time"
)

// DefaultInterval is the shortest interval between two keyframe requests
// passed on, the old transport-server's SDR_IDR_COALESCE_MS.
const DefaultInterval = 500 * time.Millisecond

// Coalescer calls send at most once per interval. The first request after
// a quiet interval is sent at once; a request inside the interval is sent
// when the interval ends, and any number of requests in between become that
// one. A Coalescer is a frame.KeyframeRequester.
type Coalescer struct {
	interval time.Duration
	send     func()

	mu     sync.Mutex
	last   time.Time
	timer  *time.Timer
	closed bool
}

// New returns a Coalescer that calls send; an interval of zero or less
// takes DefaultInterval.
func New(interval time.Duration, send func()) *Coalescer {
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &Coalescer{interval: interval, send: send}
}

// RequestKeyframe asks for one send, now or at the end of the current
// interval.
func (c *Coalescer) RequestKeyframe() {
	c.mu.Lock()
	if c.closed || c.timer != nil {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	if wait := c.interval - now.Sub(c.last); !c.last.IsZero() && wait > 0 {
		c.timer = time.AfterFunc(wait, c.fire)
		c.mu.Unlock()
		return
	}
	c.last = now
	c.mu.Unlock()
	c.send()
}

// fire sends the request deferred to the end of an interval, unless Close
// came first.
func (c *Coalescer) fire() {
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

// Close drops a pending request; later requests do nothing.
func (c *Coalescer) Close() {
	c.mu.Lock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
}
