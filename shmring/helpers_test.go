package shmring

import (
	"context"
	"testing"
	"time"
)

// collect starts a reader on cfg whose frames arrive on the returned channel
// (buffered for n frames; more are dropped and fail the test). The reader
// stops when the test ends.
func collect(t testing.TB, cfg ReaderConfig, n int) (<-chan Frame, *Reader) {
	t.Helper()
	r, err := NewReader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan Frame, n)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(f Frame) {
			select {
			case ch <- f:
			default:
				t.Errorf("frame %d (seq %d) beyond the %d expected", f.Header.FrameSeq, f.Sequence, n)
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5 s of its context ending")
		}
	})
	return ch, r
}

// next waits for one frame.
func next(t testing.TB, ch <-chan Frame, within time.Duration) Frame {
	t.Helper()
	select {
	case f := <-ch:
		return f
	case <-time.After(within):
		t.Fatalf("no frame within %v", within)
	}
	return Frame{}
}

// eventually polls cond until it holds or the time runs out.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
