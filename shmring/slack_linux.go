package shmring

import (
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	prSetTimerSlack = 29
	prGetTimerSlack = 30
)

// setTimerSlack sets the calling thread's timer slack (how late the kernel
// may fire its sleeps, 50 us by default) and returns a function that restores
// it. The caller must have locked its goroutine to the thread.
func setTimerSlack(ns uintptr) (restore func()) {
	old, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerSlack, 0, 0)
	if errno != 0 {
		return func() {}
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, ns, 0); errno != 0 {
		return func() {}
	}
	return func() { syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, old, 0) }
}

// nanosleep sleeps for d with the kernel's precision (tens of microseconds,
// with the timer slack this thread runs with), unlike time.Sleep, whose
// wake-ups land on the runtime's millisecond timer granularity under load.
func nanosleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for {
		var rem syscall.Timespec
		err := syscall.Nanosleep(&ts, &rem)
		if err != syscall.EINTR {
			return
		}
		ts = rem
	}
}

// hrSleeper sleeps on a timerfd that the runtime's network poller waits
// on: the kernel's high-resolution timer (no timer slack) readies the
// goroutine, and no thread sits in a system call meanwhile. Its two calls
// (arm, read) are raw: neither can block. Any announced system call, like a
// thread asleep in nanosleep, wakes the runtime's monitor from its deep
// sleep into polling every 20 µs for a while, and the monitor takes a
// sleeping thread's processor away whenever the others are busy; at 60
// frames a second that was about a fifth of a streaming server's CPU at 100
// clients.
type hrSleeper struct {
	f    *os.File
	rc   syscall.RawConn
	fd   uintptr
	its  unix.ItimerSpec
	buf  [8]byte // the count of expirations
	err  error
	read func(fd uintptr) bool
}

func newHRSleeper() (*hrSleeper, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	// A non-blocking descriptor: os.NewFile puts it in the poller.
	s := &hrSleeper{f: os.NewFile(uintptr(fd), "timerfd"), fd: uintptr(fd)}
	if s.rc, err = s.f.SyscallConn(); err != nil {
		s.f.Close()
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	s.read = s.readRaw
	return s, nil
}

// sleep waits d (more than 0).
func (s *hrSleeper) sleep(d time.Duration) error {
	s.its.Value = unix.NsecToTimespec(int64(d))
	if _, _, e := unix.RawSyscall6(unix.SYS_TIMERFD_SETTIME, s.fd, 0,
		uintptr(unsafe.Pointer(&s.its)), 0, 0, 0); e != 0 {
		return fmt.Errorf("timerfd_settime: %w", e)
	}
	s.err = nil
	if err := s.rc.Read(s.read); err != nil {
		return fmt.Errorf("waiting on timerfd: %w", err)
	}
	return s.err
}

// readRaw reads the expiration count; false (not yet expired) makes the
// poller wait for the descriptor.
func (s *hrSleeper) readRaw(fd uintptr) bool {
	_, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)))
	switch e {
	case 0:
		return true
	case unix.EAGAIN, unix.EINTR:
		return false
	default:
		s.err = fmt.Errorf("reading timerfd: %w", e)
		return true
	}
}

func (s *hrSleeper) close() { _ = s.f.Close() }
