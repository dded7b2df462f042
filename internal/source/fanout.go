package source

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/sdr-os/sdr-caddy/internal/frame"
)

// DefaultMaxGOPBytes bounds the payload of the current GOP kept for late
// subscribers: by a Fanout (a ring or a NATS video source), and by the
// stream hub for joining clients.
const DefaultMaxGOPBytes = 32 << 20

// Fanout hands every frame of a source to each subscriber, in order and
// never concurrently, and keeps the current GOP (the latest keyframe and the
// frames since, up to a byte cap) so that a subscriber that comes later,
// such as the hub of a reloaded configuration, starts with a decodable
// picture at once. A subscriber that panics loses that frame; the source and
// the other subscribers go on. Ring and the NATS video source share it.
type Fanout struct {
	maxGOP int
	log    *slog.Logger

	mu       sync.Mutex
	subs     map[uint64]func(frame.Frame)
	breaks   map[uint64]func(frame.Break)
	nextID   uint64
	gop      []frame.Frame
	gopBytes int
}

// NewFanout returns a Fanout that keeps at most maxGOPBytes of payload for
// late subscribers (DefaultMaxGOPBytes when <= 0).
func NewFanout(maxGOPBytes int, log *slog.Logger) *Fanout {
	if maxGOPBytes <= 0 {
		maxGOPBytes = DefaultMaxGOPBytes
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Fanout{maxGOP: maxGOPBytes, log: log, subs: make(map[uint64]func(frame.Frame)),
		breaks: make(map[uint64]func(frame.Break))}
}

// Publish keeps f in the GOP and hands it to every subscriber. A keyframe
// starts a new GOP. A delta with no keyframe before it is handed on but not
// kept. With dropOnGap, a delta marked Discontinuity drops the GOP (what
// came before can no longer be decoded with it); without, it stays, and a
// new subscriber still starts at the keyframe. A GOP over the byte cap is
// dropped until the next keyframe.
func (x *Fanout) Publish(f frame.Frame, dropOnGap bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	switch {
	case f.Header.Keyframe():
		clear(x.gop)
		x.gop = append(x.gop[:0], f)
		x.gopBytes = len(f.Payload)
	case len(x.gop) == 0:
	case dropOnGap && f.Discontinuity:
		x.dropGOP()
	default:
		x.gopBytes += len(f.Payload)
		if x.gopBytes > x.maxGOP {
			x.dropGOP()
		} else {
			x.gop = append(x.gop, f)
		}
	}
	for _, fn := range x.subs {
		x.call(fn, f)
	}
}

// Break hands a break the source detected to every break subscriber, in
// order with the frames. A restart drops the kept GOP first: a subscriber
// that comes later must not start with the old run's pictures.
func (x *Fanout) Break(b frame.Break) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if b.Restart {
		x.dropGOP()
	}
	for _, fn := range x.breaks {
		x.callBreak(fn, b)
	}
}

// NotifyBreaks calls fn with every break handed to Break, in order with the
// frames and never concurrently with them, until cancel is called. fn must
// not block.
func (x *Fanout) NotifyBreaks(fn func(frame.Break)) (cancel func()) {
	x.mu.Lock()
	id := x.nextID
	x.nextID++
	x.breaks[id] = fn
	x.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			x.mu.Lock()
			delete(x.breaks, id)
			x.mu.Unlock()
		})
	}
}

func (x *Fanout) callBreak(fn func(frame.Break), b frame.Break) {
	defer func() {
		if v := recover(); v != nil {
			x.log.Error("break subscriber panicked", "restart", b.Restart, "panic", fmt.Sprint(v))
		}
	}()
	fn(b)
}

// DropGOP forgets the kept GOP: new subscribers wait for the next keyframe.
func (x *Fanout) DropGOP() {
	x.mu.Lock()
	x.dropGOP()
	x.mu.Unlock()
}

func (x *Fanout) dropGOP() {
	clear(x.gop)
	x.gop = x.gop[:0]
	x.gopBytes = 0
}

// call hands f to one subscriber, containing its panic.
func (x *Fanout) call(fn func(frame.Frame), f frame.Frame) {
	defer func() {
		if v := recover(); v != nil {
			x.log.Error("frame subscriber panicked; frame dropped for it",
				"frame_seq", f.Header.FrameSeq, "panic", fmt.Sprint(v))
		}
	}()
	fn(f)
}

// Subscribe calls fn with the current GOP at once, then with every new
// frame, in order and never concurrently, until cancel is called. fn must
// not block.
func (x *Fanout) Subscribe(fn func(frame.Frame)) (cancel func()) {
	x.mu.Lock()
	id := x.nextID
	x.nextID++
	for _, f := range x.gop {
		x.call(fn, f)
	}
	x.subs[id] = fn
	x.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			x.mu.Lock()
			delete(x.subs, id)
			x.mu.Unlock()
		})
	}
}

// Close drops every subscriber and the GOP; no frame is handed on after it
// returns.
func (x *Fanout) Close() {
	x.mu.Lock()
	clear(x.subs)
	clear(x.breaks)
	x.dropGOP()
	x.mu.Unlock()
}
