//go:build !linux

package shmring

import (
	"errors"
	"time"
)

// Precise sleeps are Linux's (slack_linux.go); elsewhere the reader sleeps
// on the runtime's timers.

func setTimerSlack(uintptr) (restore func()) { return func() {} }

func nanosleep(d time.Duration) { time.Sleep(d) }

// hrSleeper is Linux's timerfd sleeper; elsewhere there is none and
// precise sleeps use nanosleep.
type hrSleeper struct{}

func newHRSleeper() (*hrSleeper, error) { return nil, errors.ErrUnsupported }

func (*hrSleeper) sleep(time.Duration) error { return errors.ErrUnsupported }

func (*hrSleeper) close() {}
