//go:build unix

package source

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// logged is a slog.Handler that keeps each record as a line of text.
type logged struct {
	mu    sync.Mutex
	lines []string
}

func (l *logged) Enabled(context.Context, slog.Level) bool { return true }
func (l *logged) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logged) WithGroup(string) slog.Handler            { return l }

func (l *logged) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
	return nil
}

func (l *logged) has(part string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, part) {
			return true
		}
	}
	return false
}

// closeWithin calls src.Close on a goroutine and fails the test when it
// does not return: a config unload and the process's shutdown wait for it.
func closeWithin(t *testing.T, src *Ring) error {
	t.Helper()
	ch := make(chan error, 1)
	go func() { ch <- src.Close() }()
	return testwait.RecvWithin(t, ch, 20*time.Second, "Close to return")
}

// A FIFO at the ring path (issue 19: the reader opened it and blocked
// until a writer came, and Close, which config unload and shutdown wait
// for, never returned) is reported, and Close returns.
func TestRingClosesAtFIFO(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "frames")
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &logged{}
	src, err := OpenRing(shmring.ReaderConfig{Path: path, Logger: slog.New(logs)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the reader to report the FIFO", func() bool { return logs.has("named pipe (FIFO)") })
	if err := closeWithin(t, src); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// Close returns, with an error that says so, even when the reader cannot
// stop: here a subscriber that blocks, against the rule. The reader stops
// and unmaps the ring once the subscriber returns.
func TestRingCloseDoesNotWaitForABlockedReader(t *testing.T) {
	t.Parallel()
	path, w := createRing(t)
	writerMaps := mapped(t, path)
	src, err := OpenRing(shmring.ReaderConfig{Path: path}, 0)
	if err != nil {
		t.Fatal(err)
	}
	src.stopWait = 100 * time.Millisecond
	entered, release := make(chan struct{}, 1), make(chan struct{})
	cancel := src.Subscribe(func(frame.Frame) {
		entered <- struct{}{}
		<-release
	})
	defer cancel()
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock() // runs first: a failing test must not leave the reader blocked
	writeH264(t, w, 1, true, []byte{1})
	testwait.Recv(t, entered, "the subscriber to get the frame")
	err = closeWithin(t, src)
	if err == nil || !strings.Contains(err.Error(), "did not stop") {
		t.Fatalf("Close with the reader blocked: %v, want an error saying it did not stop", err)
	}
	unblock()
	testwait.For(t, "the reader to unmap the ring once unblocked", func() bool { return mapped(t, path) == writerMaps })
	if err := closeWithin(t, src); err != nil {
		t.Fatalf("Close after the reader stopped: %v", err)
	}
}
