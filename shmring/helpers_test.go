package shmring

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// createWriter creates a ring file of size bytes at path; the writer is
// closed when the test ends.
func createWriter(t testing.TB, path string, size int64) *Writer {
	t.Helper()
	w, err := CreateWriter(path, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// createRing creates a ring file of size bytes in a new temporary directory;
// the writer is closed when the test ends.
func createRing(t testing.TB, size int64) (string, *Writer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "frames")
	return path, createWriter(t, path, size)
}

// attachReader maps the ring at path with a reader that the test drives
// through step; it is unmapped when the test ends.
func attachReader(t testing.TB, path string) *Reader {
	t.Helper()
	return attachReaderWith(t, path, ReaderConfig{})
}

// steadyCadence returns a cadence reset at t0 that has observed n commits
// found on time, one every period.
func steadyCadence(t0 time.Time, period time.Duration, n int) *cadence {
	var c cadence
	c.reset(t0)
	for i := 1; i <= n; i++ {
		c.observe(t0.Add(time.Duration(i)*period), 1, modeFine, finePoll)
	}
	return &c
}

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
		case <-testwait.After(5 * time.Second):
			t.Errorf("Run did not return within %v of its context ending", testwait.Timeout(5*time.Second))
		}
	})
	return ch, r
}

// next waits for one frame; within is the hang detector.
func next(t testing.TB, ch <-chan Frame, within time.Duration) Frame {
	t.Helper()
	return testwait.RecvWithin(t, ch, within, "a frame")
}

// eventually waits until cond holds; within is the hang detector.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.ForWithin(t, within, what, cond)
}

// attachReaderWith is attachReader with cfg (its Path is set to path).
func attachReaderWith(t testing.TB, path string, cfg ReaderConfig) *Reader {
	t.Helper()
	cfg.Path = path
	r, err := NewReader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.attach(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.detach)
	return r
}

// logLines is a slog.Handler that keeps the messages logged through it,
// and each record as a line of text (message, then key=value attributes).
type logLines struct {
	mu    sync.Mutex
	msgs  []string
	lines []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }

func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.String()
		return true
	})
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.lines = append(l.lines, line)
	l.mu.Unlock()
	return nil
}

// count reports how many records logged so far contain all of parts.
func (l *logLines) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }

// has reports whether msg was logged.
func (l *logLines) has(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.msgs, msg)
}

// Every test of this package runs with released ring buffers poisoned
// (PoisonByte): a payload read after its release, or a buffer reused while
// a frame still references it, shows up as wrong bytes.
func init() { poisonOnRelease = true }
