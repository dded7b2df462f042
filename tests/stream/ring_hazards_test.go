package stream

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
)

// fifoServer starts the binary with sdr_stream reading a ring path where a
// FIFO sits, and waits until the reader has reported it.
func fifoServer(t *testing.T) (*server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "frames")
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, "", streamBody(path, ""))
	testwait.For(t, "the ring reader to report the FIFO", func() bool {
		return strings.Contains(s.caddy.Output(), "named pipe (FIFO)")
	})
	return s, path
}

// A FIFO at the ring path (issue 19's break-in: the reader opened it,
// blocked for good, and SIGTERM then hung in shutdown) is reported, the
// server keeps answering, and SIGTERM ends the process.
func TestFIFOAtRingPathStopsOnSIGTERM(t *testing.T) {
	s, _ := fifoServer(t)
	if h := s.health(t, "/stream/health"); h["status"] != "ok" || h["shm_seq"] != float64(0) {
		t.Fatalf("health with a FIFO at the ring path: %v", h)
	}
	s.caddy.Stop(t)
}

// The reader keeps waiting past a FIFO, as for an absent file: a ring file
// put in its place is read, and video reaches a client.
func TestFIFOAtRingPathReplacedByRing(t *testing.T) {
	s, path := fifoServer(t)
	c := dial(t, s.ws+"/stream/ws")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	w := shmringtest.NewWriter(t, path, 1<<20)
	w.Write(t, true, 1000)
	if h, _ := shmringtest.ReadVideo(t, c); h.FrameSeq != 1 || !h.Keyframe() {
		t.Fatalf("first frame from the ring that replaced the FIFO: %+v", h)
	}
}
