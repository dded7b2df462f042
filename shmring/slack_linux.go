package shmring

import (
	"syscall"
	"time"
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
