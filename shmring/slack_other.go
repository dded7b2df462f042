//go:build unix && !linux

package shmring

import "time"

func setTimerSlack(uintptr) (restore func()) { return func() {} }

func nanosleep(d time.Duration) { time.Sleep(d) }
