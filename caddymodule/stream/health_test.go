package stream

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/moduletest"
	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// healthOf GETs the stream's health JSON.
func healthOf(t *testing.T, s *Stream) (int, health) {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil), nil); err != nil {
		t.Fatal(err)
	}
	var h health
	if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
		t.Fatalf("health JSON %q: %v", rec.Body.String(), err)
	}
	return rec.Code, h
}

// startStream provisions and starts a stream of the ring at path.
func startStream(t *testing.T, name, path string) *Stream {
	t.Helper()
	ctx, cancel := moduletest.Context(t)
	t.Cleanup(cancel)
	s := &Stream{Name: name, Source: &StreamSource{SHM: &SHMSource{Path: path}}}
	if err := s.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Cleanup() })
	if err := moduletest.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestHealthWedgedReader: a ring reader that stops going round its loop
// (here held inside a frame callback that blocks, as a bug in the fan-out
// would) turns the health into 503 with the ring failing; it recovers when
// the reader moves again.
func TestHealthWedgedReader(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "frames")
	w := moduletest.CreateRing(t, path, 1<<16)
	s := startStream(t, "wedge", path)
	s.stuckAfter = time.Second
	testwait.For(t, "the ring attached, health 200", func() bool {
		code, h := healthOf(t, s)
		return code == 200 && h.Status == "ok" && h.Ring != nil && h.Ring.State == "attached" && h.ReaderHeartbeatAgeMS != nil
	})

	block := make(chan struct{})
	release := sync.OnceFunc(func() { close(block) })
	blocked := make(chan struct{}, 1)
	unsub := s.source.src.Subscribe(func(frame.Frame) {
		select {
		case blocked <- struct{}{}:
		default:
		}
		<-block
	})
	defer unsub()
	defer release() // first: unsub and the stream's Cleanup wait for the reader
	if _, err := w.WriteFrame(shmring.Header{Codec: shmring.CodecH264, Flags: shmring.FlagKeyframe}, []byte{0, 0, 0, 1, 0x65}); err != nil {
		t.Fatal(err)
	}
	testwait.Recv(t, blocked, "the reader to deliver the frame into the blocking callback")
	var h health
	testwait.For(t, "health 503 with the reader stuck", func() bool {
		var code int
		code, h = healthOf(t, s)
		return code == http.StatusServiceUnavailable
	})
	if h.Status != "error" || h.Ring == nil || h.Ring.State != "failing" || !strings.Contains(h.Ring.Reason, "reader stuck") ||
		h.ReaderHeartbeatAgeMS == nil || *h.ReaderHeartbeatAgeMS < 1000 {
		t.Errorf("stuck reader's health: %+v ring %+v", h, h.Ring)
	}
	release()
	testwait.For(t, "health 200 once the reader moves again", func() bool {
		code, h := healthOf(t, s)
		return code == 200 && h.Ring.State == "attached"
	})
}

// TestHealthRingStates: a ring the writer has not created is waiting (200,
// the old fields as before); one that cannot be mapped is failing, still
// 200: the process is fine, the path is wrong.
func TestHealthRingStates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	absent := startStream(t, "absent", filepath.Join(dir, "frames"))
	testwait.For(t, "the absent ring waiting", func() bool {
		code, h := healthOf(t, absent)
		return code == 200 && h.Status == "ok" && h.Ring.State == "waiting" && strings.Contains(h.Ring.Reason, "no such file")
	})
	notARing := startStream(t, "dir", dir)
	testwait.For(t, "a directory failing", func() bool {
		code, h := healthOf(t, notARing)
		return code == 200 && h.Status == "ok" && h.Ring.State == "failing" && h.Ring.Path == dir
	})
}
