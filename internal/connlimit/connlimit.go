// Package connlimit caps the connections a process accepts, so that a flood
// of idle connections cannot use up its file descriptors: the ring file's
// remap, NATS and rosbridge reconnects, and new health checks need some.
//
// A Limiter counts the connections open through every listener it wraps.
// At its cap a new connection takes the place of the oldest connection that
// has not sent a byte yet (an idle connection of a flood, which the HTTP
// server's header timeout would otherwise hold for its whole length); when
// every open connection has spoken (browsers watching video, requests in
// progress), the new one is closed at once. Either way the newcomer never
// waits in the kernel's backlog, and the process never runs out of
// descriptors through its listeners.
//
// The package imports nothing from Caddy.
package connlimit

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// DefaultMinReserve is the fewest descriptors Reserve keeps.
const DefaultMinReserve = 128

// Reserve returns the descriptors to keep for everything but accepted
// connections when the process may open limit in all: an eighth, and at
// least DefaultMinReserve.
func Reserve(limit int) int { return max(DefaultMinReserve, limit/8) }

// Limiter caps the connections open through its listeners together. The
// zero value is not usable; see New.
type Limiter struct {
	max atomic.Int64

	mu     sync.Mutex
	open   int
	silent connList // connections that have not sent a byte, oldest first

	refused, evicted atomic.Uint64
}

// New returns a limiter of at most max open connections (0: no cap).
func New(max int) *Limiter {
	l := &Limiter{}
	l.SetMax(max)
	return l
}

// SetMax changes the cap (0: none). Connections open beyond a lowered cap
// stay; new ones are admitted again once fewer are open.
func (l *Limiter) SetMax(n int) { l.max.Store(int64(max(0, n))) }

// Max returns the cap (0: none).
func (l *Limiter) Max() int { return int(l.max.Load()) }

// Stats are a limiter's counts.
type Stats struct {
	Open    int    // connections open now
	Silent  int    // of which have not sent a byte
	Refused uint64 // connections closed at once at the cap
	Evicted uint64 // silent connections closed to make room at the cap
}

// Stats returns the limiter's counts.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Open: l.open, Silent: l.silent.n, Refused: l.refused.Load(), Evicted: l.evicted.Load()}
}

// Wrap returns ln with its connections counted against l.
func (l *Limiter) Wrap(ln net.Listener) net.Listener { return &listener{Listener: ln, l: l} }

type listener struct {
	net.Listener
	l *Limiter
}

// Accept returns the next connection admitted; connections refused at the
// cap are closed and the next one is waited for.
func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc := ln.l.admit(c); tc != nil {
			return tc, nil
		}
	}
}

// admit counts c in, making room at the cap, and returns it wrapped; nil
// when it was refused (and closed).
func (l *Limiter) admit(c net.Conn) net.Conn {
	tc := &Conn{Conn: c, l: l}
	var victim *Conn
	l.mu.Lock()
	if limit := int(l.max.Load()); limit > 0 && l.open >= limit {
		victim = l.silent.front()
		if victim == nil {
			l.mu.Unlock()
			l.refused.Add(1)
			_ = c.Close()
			return nil
		}
		l.silent.remove(victim)
	}
	l.open++
	l.silent.pushBack(tc)
	l.mu.Unlock()
	if victim != nil {
		l.evicted.Add(1)
		_ = victim.Close()
	}
	if sc, ok := c.(sysConn); ok {
		return &tcpConn{Conn: tc, sys: sc}
	}
	return tc
}

// spoke takes c off the silent list.
func (l *Limiter) spoke(c *Conn) {
	l.mu.Lock()
	l.silent.remove(c)
	l.mu.Unlock()
}

// release counts c out.
func (l *Limiter) release(c *Conn) {
	l.mu.Lock()
	l.silent.remove(c)
	l.open--
	l.mu.Unlock()
}

// Conn is an admitted connection.
type Conn struct {
	net.Conn
	l          *Limiter
	spoken     atomic.Bool
	closed     atomic.Bool
	prev, next *Conn // on the silent list, under l.mu
	listed     bool
}

// Read reads from the connection and, on its first bytes, takes it off the
// list of silent connections that the cap may close.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.spoken.Load() && c.spoken.CompareAndSwap(false, true) {
		c.l.spoke(c)
	}
	return n, err
}

// Close closes the connection and counts it out, once.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.l.release(c)
	}
	return err
}

// sysConn is what a TCP or Unix socket offers beyond net.Conn that the
// HTTP server and its handlers use: the descriptor (direct writes),
// sendfile, and a half close.
type sysConn interface {
	syscall.Conn
	io.ReaderFrom
	CloseWrite() error
}

// tcpConn is an admitted socket, which keeps offering sysConn.
type tcpConn struct {
	*Conn
	sys sysConn
}

func (c *tcpConn) SyscallConn() (syscall.RawConn, error) { return c.sys.SyscallConn() }
func (c *tcpConn) ReadFrom(r io.Reader) (int64, error)   { return c.sys.ReadFrom(r) }
func (c *tcpConn) CloseWrite() error                     { return c.sys.CloseWrite() }

// connList is an intrusive doubly linked list of connections.
type connList struct {
	head, tail *Conn
	n          int
}

func (q *connList) front() *Conn { return q.head }

func (q *connList) pushBack(c *Conn) {
	c.prev, c.next, c.listed = q.tail, nil, true
	if q.tail != nil {
		q.tail.next = c
	} else {
		q.head = c
	}
	q.tail = c
	q.n++
}

func (q *connList) remove(c *Conn) {
	if !c.listed {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		q.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		q.tail = c.prev
	}
	c.prev, c.next, c.listed = nil, nil, false
	q.n--
}
