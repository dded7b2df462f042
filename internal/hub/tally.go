package hub

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdr-os/sdr-caddy/internal/frame"
)

// Tally counts one stream the way the old service's health JSON did, over
// every hub that serves it: a Caddyfile that imports the stream into two
// sites has a hub per site, and the old service had one for both. It counts
// the clients of all of them, each frame of the source once, and the frames
// read while at least one of them had a client ("frames_broadcast": the old
// service counted only those). Subscribe Frame to the stream's source once,
// and Add each hub.
type Tally struct {
	since    time.Time
	framesIn prometheus.Counter

	mu         sync.Mutex
	hubs       map[*Hub]struct{}
	retiredLag uint64 // lag skips of hubs removed since

	frames, bytes atomic.Uint64 // read while a client was connected
}

// TallyStats are a Tally's counts.
type TallyStats struct {
	Clients         int64  // clients of all the hubs
	FramesBroadcast uint64 // frames read while at least one client was connected
	BytesBroadcast  uint64 // their payload bytes
	LagSkips        uint64 // lag skips of all the hubs, those removed included
}

// AvgFrameSize is the mean payload size of the frames broadcast.
func (s TallyStats) AvgFrameSize() uint64 {
	if s.FramesBroadcast == 0 {
		return 0
	}
	return s.BytesBroadcast / s.FramesBroadcast
}

// NewTally returns a Tally that counts every frame it is given in framesIn
// (nil: not counted).
func NewTally(framesIn prometheus.Counter) *Tally {
	if framesIn == nil {
		framesIn = prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"})
	}
	return &Tally{since: time.Now(), framesIn: framesIn, hubs: make(map[*Hub]struct{})}
}

// Add counts h's clients from now on, until remove is called.
func (t *Tally) Add(h *Hub) (remove func()) {
	t.mu.Lock()
	t.hubs[h] = struct{}{}
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			if _, ok := t.hubs[h]; ok {
				delete(t.hubs, h)
				t.retiredLag += h.lagTotal.Load()
			}
			t.mu.Unlock()
		})
	}
}

// Frame counts one frame of the source; subscribe it to the source. The GOP
// a source replays to a new subscriber (frames that arrived before the
// Tally was made) is not counted again.
func (t *Tally) Frame(f frame.Frame) {
	if !f.Arrived.IsZero() && f.Arrived.Before(t.since) {
		return
	}
	t.framesIn.Inc()
	if t.Clients() > 0 {
		t.frames.Add(1)
		t.bytes.Add(uint64(len(f.Payload)))
	}
}

// Clients is the number of clients of all the hubs.
func (t *Tally) Clients() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for h := range t.hubs {
		n += h.clients.Load()
	}
	return n
}

// Stats returns the counts.
func (t *Tally) Stats() TallyStats {
	t.mu.Lock()
	var n int64
	lag := t.retiredLag
	for h := range t.hubs {
		n += h.clients.Load()
		lag += h.lagTotal.Load()
	}
	t.mu.Unlock()
	return TallyStats{Clients: n, FramesBroadcast: t.frames.Load(), BytesBroadcast: t.bytes.Load(), LagSkips: lag}
}
