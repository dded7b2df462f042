//go:build unix && !linux

package shmring

import (
	"errors"
	"time"
)

func setTimerSlack(uintptr) (restore func()) { return func() {} }

func nanosleep(d time.Duration) { time.Sleep(d) }

// hrSleeper is Linux's timerfd sleeper; elsewhere there is none and
// precise sleeps use nanosleep.
type hrSleeper struct{}

func newHRSleeper() (*hrSleeper, error) { return nil, errors.ErrUnsupported }

func (*hrSleeper) sleep(time.Duration) error { return errors.ErrUnsupported }

func (*hrSleeper) close() {}
