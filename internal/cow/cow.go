// Package cow holds a copy-on-write list for fan-outs: the sender reads a
// snapshot without a lock on every message, and the rare joins and leaves
// copy it.
package cow

import (
	"sync"
	"sync/atomic"
)

// List is a copy-on-write list of distinct values. The zero value is an
// empty list.
type List[T comparable] struct {
	mu sync.Mutex
	p  atomic.Pointer[[]T]
}

// Load returns the current snapshot; never modify it.
func (l *List[T]) Load() []T {
	if p := l.p.Load(); p != nil {
		return *p
	}
	return nil
}

// Add appends v.
func (l *List[T]) Add(v T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.Load()
	next := make([]T, len(old), len(old)+1)
	copy(next, old)
	next = append(next, v)
	l.p.Store(&next)
}

// Remove takes v out of the list.
func (l *List[T]) Remove(v T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.Load()
	next := make([]T, 0, len(old))
	for _, o := range old {
		if o != v {
			next = append(next, o)
		}
	}
	l.p.Store(&next)
}
