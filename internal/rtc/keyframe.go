package rtc

import (
	"sync"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/frame"
)

// KeyframeCoalescer passes keyframe requests on at most once per interval;
// a request inside the interval is sent when it ends. It serves sessions
// that have no stream hub to coalesce for them (WHEP).
type KeyframeCoalescer struct {
	r        frame.KeyframeRequester
	interval time.Duration

	mu     sync.Mutex
	last   time.Time
	timer  *time.Timer
	closed bool
}

// NewKeyframeCoalescer wraps r.
func NewKeyframeCoalescer(r frame.KeyframeRequester, interval time.Duration) *KeyframeCoalescer {
	if interval <= 0 {
		interval = DefaultKeyframeCoalesce
	}
	return &KeyframeCoalescer{r: r, interval: interval}
}

// RequestKeyframe asks for a keyframe.
func (k *KeyframeCoalescer) RequestKeyframe() {
	k.mu.Lock()
	if k.closed || k.timer != nil {
		k.mu.Unlock()
		return
	}
	now := time.Now()
	if wait := k.interval - now.Sub(k.last); !k.last.IsZero() && wait > 0 {
		k.timer = time.AfterFunc(wait, func() {
			k.mu.Lock()
			k.timer = nil
			closed := k.closed
			k.last = time.Now()
			k.mu.Unlock()
			if !closed {
				k.r.RequestKeyframe()
			}
		})
		k.mu.Unlock()
		return
	}
	k.last = now
	k.mu.Unlock()
	k.r.RequestKeyframe()
}

// Close drops a pending request; later requests do nothing.
func (k *KeyframeCoalescer) Close() {
	k.mu.Lock()
	k.closed = true
	if k.timer != nil {
		k.timer.Stop()
		k.timer = nil
	}
	k.mu.Unlock()
}
