// Package testwait is how sdr-caddy's tests wait: on the event itself (a
// channel, a condition), with a deadline that only detects a hang.
//
// Every deadline a test sets goes through Timeout, which multiplies it by
// SDR_TEST_TIMEOUT_SCALE (default 1), so that a slow or busy CI machine can
// stretch all of them at once, and by RaceFactor more in a binary built
// with -race, whose code runs 2-20 times slower. A deadline is never a
// performance assertion: speed is measured in bench/, not here.
package testwait

import (
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Default is the hang detector of For and Recv: generous, so that a loaded
// machine that is merely slow never fails a test.
const Default = 30 * time.Second

// ScaleVar names the environment variable that stretches every deadline.
const ScaleVar = "SDR_TEST_TIMEOUT_SCALE"

// RaceFactor stretches every deadline of a binary built with -race.
const RaceFactor = 5

var scale = sync.OnceValue(func() float64 {
	f, err := strconv.ParseFloat(os.Getenv(ScaleVar), 64)
	if err != nil || f <= 0 {
		f = 1 // unset, or not a positive number
	}
	if RaceEnabled {
		f *= RaceFactor
	}
	return f
})

// Scale returns the factor that SDR_TEST_TIMEOUT_SCALE sets (1 when unset or
// not a positive number), times RaceFactor under -race.
func Scale() float64 { return scale() }

// SkipRealTime skips a test of a real-time property (what a reader sees
// within a frame period) under -race, which slows the code 2-20 times: the
// property is checked in the plain suite, and measured in bench/.
func SkipRealTime(t testing.TB) {
	t.Helper()
	if RaceEnabled {
		t.Skip("a real-time property, meaningless under the race detector's slowdown; checked without -race")
	}
}

// Timeout returns d stretched by Scale.
func Timeout(d time.Duration) time.Duration { return time.Duration(float64(d) * Scale()) }

// After is time.After(Timeout(d)).
func After(d time.Duration) <-chan time.Time { return time.After(Timeout(d)) }

// Deadline returns the time Timeout(d) from now, for SetReadDeadline and
// context.WithDeadline.
func Deadline(d time.Duration) time.Time { return time.Now().Add(Timeout(d)) }

// For looks at its condition (the event waited for: a counter, a state)
// until it holds: first after poll, then twice as long each time up to
// maxPoll, so that a cheap condition is seen at once and a costly one (an
// HTTP scrape of /metrics) does not run 500 times a second on a loaded
// machine.
const (
	poll    = 2 * time.Millisecond
	maxPoll = 50 * time.Millisecond
)

// For waits until cond holds, failing the test when it does not within
// Timeout(Default); what says what was waited for.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ForWithin(t, Default, what, cond)
}

// ForWithin is For with another hang detector than Default.
func ForWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Until(d, cond) {
		t.Fatalf("timed out after %s waiting for %s", Timeout(d), what)
	}
}

// Until reports whether cond held within Timeout(d), for callers that fail
// in their own words.
func Until(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(Timeout(d))
	for wait := poll; ; wait = min(2*wait, maxPoll) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return cond()
		}
		time.Sleep(wait)
	}
}

// Recv returns the next value from ch, failing the test when none comes
// within Timeout(Default) or ch is closed.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	return RecvWithin(t, ch, Default, what)
}

// RecvWithin is Recv with another hang detector than Default.
func RecvWithin[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return v
	case <-After(d):
		t.Fatalf("timed out after %s waiting for %s", Timeout(d), what)
	}
	var zero T
	return zero
}

// Closed waits until ch is closed (or yields a value), failing the test when
// it is not within Timeout(Default).
func Closed[T any](t testing.TB, ch <-chan T, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-After(Default):
		t.Fatalf("timed out after %s waiting for %s", Timeout(Default), what)
	}
}
