//go:build unix

package shmring

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// mapWithin runs mapFile on a goroutine of its own and fails the test when
// it does not return (opening a FIFO for reading blocks until a writer
// opens it).
func mapWithin(t *testing.T, path string, writable bool) (*mapping, error) {
	t.Helper()
	type result struct {
		m   *mapping
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := mapFile(path, writable)
		ch <- result{m, err}
	}()
	r := testwait.RecvWithin(t, ch, 10*time.Second, "mapFile of "+path+" to return")
	return r.m, r.err
}

// A ring path that names anything but a regular file is refused without
// blocking, with an error that names the path and what it is; a symbolic
// link to a regular ring file is followed.
func TestMapFileRefusesSpecialFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ring, _ := createRing(t, 8192)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(ring, link); err != nil {
		t.Fatal(err)
	}
	fifoLink := filepath.Join(dir, "fifo-link")
	if err := os.Symlink(fifo, fifoLink); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, kind string
	}{
		{fifo, "named pipe (FIFO)"},
		{fifoLink, "named pipe (FIFO)"},
		{sock, "socket"},
		{"/dev/null", "character device"},
		{dir, "directory"},
	} {
		for _, writable := range []bool{false, true} {
			m, err := mapWithin(t, tc.path, writable)
			if err == nil {
				m.unmap()
				t.Errorf("%s (writable %t): mapped", tc.path, writable)
				continue
			}
			if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.kind) {
				t.Errorf("%s (writable %t): error %q, want ErrNotRegular naming the path and %q", tc.path, writable, err, tc.kind)
			}
		}
	}
	m, err := mapWithin(t, link, false)
	if err != nil {
		t.Fatalf("symbolic link to a ring file: %v", err)
	}
	m.unmap()
}

// A FIFO at the ring path (issue 19's break-in: the reader used to open it
// and block until a writer came, forever) is reported, and the reader
// keeps waiting for a regular file as for an absent one: it takes the ring
// file that replaces the FIFO, and Run returns when its context ends
// (collect checks that).
func TestReaderWaitsPastFIFO(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "frames")
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &logLines{}
	frames, r := collect(t, ReaderConfig{Path: path, Logger: slog.New(logs)}, 16)
	testwait.For(t, "the reader to report the FIFO", func() bool { return logs.count(path, "named pipe (FIFO)") > 0 })
	// It keeps looking (polls with back-off) and logs the reason once.
	before := r.Stats()
	if before.Attached || before.Frames != 0 {
		t.Fatalf("stats at a FIFO: %+v", before)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	w := createWriter(t, path, 8192)
	f := writeAndWait(t, w, frames, Header{Flags: FlagKeyframe}, 1)
	if f.Restart || f.Gap != 0 {
		t.Errorf("first frame: %+v", f)
	}
	if n := logs.count("named pipe (FIFO)"); n != 1 {
		t.Errorf("the FIFO was reported %d times, want once", n)
	}
}

// A reader that sits at a FIFO stops when its context ends.
func TestReaderAtFIFOStops(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "frames")
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &logLines{}
	_, r := collect(t, ReaderConfig{Path: path, Logger: slog.New(logs)}, 1)
	testwait.For(t, "the reader to report the FIFO", func() bool { return logs.count("named pipe (FIFO)") > 0 })
	if r.Stats().Attached {
		t.Fatal("attached to a FIFO")
	}
	// collect's cleanup cancels Run and fails the test unless it returns.
}
