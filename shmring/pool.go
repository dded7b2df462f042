package shmring

import (
	"sync"
	"sync/atomic"
)

// slotBuffer is one of a Reader's copy buffers: it receives the slot
// (header and payload) copied out of the mapping. Its references are the
// reader's own (the buffer it copies into next, or the last frame's bytes,
// kept to tell that frame's late commit) and, with
// ReaderConfig.PooledPayloads, one per delivered Frame whose payload lies in
// it. When the last reference is released the buffer goes back to its pool,
// and the reader may copy a later frame into it.
type slotBuffer struct {
	b    []byte
	refs atomic.Int32
	pool *slotPool
}

// release drops one reference; the last returns the buffer to its pool.
func (b *slotBuffer) release() {
	switch n := b.refs.Add(-1); {
	case n == 0:
		b.pool.put(b)
	case n < 0:
		panic("shmring: a ring buffer was released more often than it was referenced")
	}
}

// poolFree is how many unreferenced buffers a pool keeps for reuse; more
// are left to the garbage collector. A raw ring read by an encoder needs
// about three in use (the copy under way, the frame waiting for the
// encoder, the frame being encoded).
const poolFree = 4

// slotPool holds a Reader's unreferenced copy buffers. Buffers that
// receivers still hold are not in it: a receiver that never releases one
// costs an allocation later, never a buffer overwritten under it.
type slotPool struct {
	mu   sync.Mutex
	free []*slotBuffer
}

// get returns a buffer with one reference (the caller's) and a capacity of
// at least size bytes, so that the copy of a frame of that size allocates
// nothing.
func (p *slotPool) get(size int) *slotBuffer {
	p.mu.Lock()
	var b *slotBuffer
	if n := len(p.free); n > 0 {
		b = p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
	}
	p.mu.Unlock()
	if b == nil || cap(b.b) < size {
		b = &slotBuffer{b: make([]byte, 0, size), pool: p}
	}
	b.refs.Store(1)
	return b
}

// fresh returns a new buffer holding a copy of data, with one reference.
func (p *slotPool) fresh(data []byte) *slotBuffer {
	b := &slotBuffer{b: append(make([]byte, 0, len(data)), data...), pool: p}
	b.refs.Store(1)
	return b
}

func (p *slotPool) put(b *slotBuffer) {
	if poisonOnRelease {
		poison(b.b[:cap(b.b)])
	}
	p.mu.Lock()
	if len(p.free) < poolFree {
		p.free = append(p.free, b)
	}
	p.mu.Unlock()
}

// trim drops the free buffers larger than limit bytes.
func (p *slotPool) trim(limit uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := p.free[:0]
	for _, b := range p.free {
		if uint64(cap(b.b)) <= limit {
			keep = append(keep, b)
		}
	}
	clear(p.free[len(keep):])
	p.free = keep
}

// PoisonByte fills a ring buffer once its last reference is released, in
// builds with the shmring_poison tag (and in this package's tests): a
// receiver that reads a payload after releasing it, or a buffer reused
// while still referenced, then sees this byte instead of picture data.
const PoisonByte = 0xDB

// poisonOnRelease is set in builds with the shmring_poison tag and by this
// package's tests.
var poisonOnRelease = poisonBuild

func poison(b []byte) {
	for i := range b {
		b[i] = PoisonByte
	}
}

// payloadRef is one delivered Frame's reference to its buffer. Releasing it
// more than once releases the buffer once.
type payloadRef struct {
	buf  *slotBuffer
	done atomic.Bool
}

func (r *payloadRef) release() {
	if r.done.CompareAndSwap(false, true) {
		r.buf.release()
	}
}
