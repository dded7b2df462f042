package hub

import (
	"errors"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directSupported: the send round writes to sockets itself on Linux.
const directSupported = true

// directWriter does one non-blocking writev on a connection's socket. It is
// a client's, used under its wmu, so that neither the iovecs nor the
// callback are allocated per write.
type directWriter struct {
	iov  []syscall.Iovec
	n    int
	err  error
	call func(fd uintptr)
	// buf holds iov while a write has at most three buffers (a frame's
	// head and payload, and telemetry), beside the fields the send round
	// reads anyway.
	buf [3]syscall.Iovec
}

// write writes what the socket takes of bufs at once and returns how much
// that was: syscall.EAGAIN (or a short count) when the socket is full, or
// the error of the write or of the connection (closed, deadline passed).
func (d *directWriter) write(rc syscall.RawConn, bufs net.Buffers) (int, error) {
	if d.iov == nil {
		d.iov = d.buf[:0]
	}
	d.iov = d.iov[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		v := syscall.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		d.iov = append(d.iov, v)
	}
	if len(d.iov) == 0 {
		return 0, nil
	}
	if d.call == nil {
		d.call = d.writev
	}
	d.n, d.err = 0, nil
	// Control holds the descriptor open for the call, as Write would, but
	// takes neither the connection's write lock nor its poller state: the
	// send round is the only writer while it holds the client's wmu, and
	// its write never waits for the poller. Write's poller reset touched
	// one more cold cache line per client in every round.
	err := rc.Control(d.call)
	clear(d.iov) // no reference to a frame outlives the write
	if err != nil {
		return 0, err
	}
	return d.n, d.err
}

// writev is the raw write, called by RawConn.Control with the descriptor
// held open; it never waits for the socket.
//
// The socket is non-blocking, so the call cannot sleep: it is made as a raw
// system call, without telling the scheduler. Announced system calls at
// this rate kept the runtime's monitor polling every 20 µs to take their
// processors back, which cost about 6% of the server's CPU in context
// switches.
func (d *directWriter) writev(fd uintptr) {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd,
			uintptr(unsafe.Pointer(&d.iov[0])), uintptr(len(d.iov)))
		switch e {
		case 0:
			d.n = int(n)
		case syscall.EINTR:
			continue
		default:
			d.err = e
		}
		return
	}
}

// setSendQueue makes a TCP socket keep at most about n bytes unsent
// (TCP_NOTSENT_LOWAT): a write takes more only while less than n wait, and
// the socket polls writable only then. It fails on other sockets.
func setSendQueue(rc syscall.RawConn, n int) error {
	if rc == nil {
		return errors.New("no socket")
	}
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, n)
	})
	if err != nil {
		return err
	}
	return serr
}
