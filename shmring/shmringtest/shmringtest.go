// Package shmringtest plays the simulator in tests: a Writer commits
// H.264-flagged frames into a real ring, one at a time or at a cadence,
// and ReadVideo reads them back as a client of /stream/ws does.
package shmringtest

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// Writer commits frames into a ring that it created; it is closed when the
// test ends. Its methods may be called from several goroutines.
type Writer struct {
	// Path is the ring file's path.
	Path string

	ring *shmring.Writer
	mu   sync.Mutex // one commit at a time; guards n
	n    int        // frames committed so far
}

// NewWriter creates a ring of size bytes at path, or at a new path in a
// temporary directory of the test when path is "".
func NewWriter(t testing.TB, path string, size int64) *Writer {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "frames")
	}
	ring, err := shmring.CreateWriter(path, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ring.Close() })
	return &Writer{Path: path, ring: ring}
}

// Ring is the shmring.Writer underneath, for frames of the test's own.
func (w *Writer) Ring() *shmring.Writer { return w.ring }

// Write commits one frame of size bytes, a keyframe when key, and returns
// its frame_seq. It fails the test when the commit fails: call it from the
// test's goroutine.
func (w *Writer) Write(t testing.TB, key bool, size int) uint64 {
	t.Helper()
	h, err := w.commit(key, func(i int) []byte { return pattern(i, size) })
	if err != nil {
		t.Fatal(err)
	}
	return h.FrameSeq
}

// commit writes the next frame, its payload made by payload from the
// frame's index among this writer's frames.
func (w *Writer) commit(key bool, payload func(i int) []byte) (shmring.Header, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	h := shmring.Header{Codec: shmring.CodecH264}
	if key {
		h.Flags = shmring.FlagKeyframe
	}
	h, err := w.ring.WriteFrame(h, payload(w.n))
	if err == nil {
		w.n++
	}
	return h, err
}

// pattern is a payload of size bytes, each the low byte of i: frames that
// differ by their content too.
func pattern(i, size int) []byte {
	p := make([]byte, size)
	for k := range p {
		p[k] = byte(i)
	}
	return p
}

// Cadence is how Play and Start write.
type Cadence struct {
	// Period is the time from one commit to the next.
	Period time.Duration
	// GOP makes every GOP-th frame a keyframe, the first one included;
	// with 0 every frame is a delta.
	GOP int
	// Size is the payload of each frame in bytes (each byte the frame's
	// index), unless Payload is set.
	Size int
	// Payload, when set, returns the payload of the i-th frame played
	// (from 0).
	Payload func(i int) []byte
}

// Play commits frames at cadence c until ctx ends: the first at once, the
// others on a ticker, so that one late commit does not shift the ones after
// it. A commit that fails fails the test (t.Errorf) and ends Play; the
// caller ends Play before the test ends.
func (w *Writer) Play(ctx context.Context, t testing.TB, c Cadence) {
	payload := c.Payload
	if payload == nil {
		payload = func(i int) []byte { return pattern(i, c.Size) }
	}
	tick := time.NewTicker(c.Period)
	defer tick.Stop()
	for i := 0; ; i++ {
		key := c.GOP > 0 && i%c.GOP == 0
		if _, err := w.commit(key, func(int) []byte { return payload(i) }); err != nil {
			t.Errorf("playing frames into %s: %v", w.Path, err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Start plays c in the background until the returned stop is called or the
// test ends; stop returns once the last frame is committed. Start again to
// resume: the cadence starts over, with a keyframe when c.GOP > 0.
func (w *Writer) Start(t testing.TB, c Cadence) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Play(ctx, t, c)
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return stop
}

// ReadVideo reads messages from c until a 0x01 video message and returns
// its header and payload; it fails the test when reading fails (set a read
// deadline on c) or the message does not parse.
func ReadVideo(t testing.TB, c *websocket.Conn) (shmring.Header, []byte) {
	t.Helper()
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("reading video: %v", err)
		}
		if len(msg) == 0 || msg[0] != wire.TypeVideo {
			continue
		}
		h, p, err := wire.ParseVideo(msg)
		if err != nil {
			t.Fatalf("reading video: %v", err)
		}
		return h, p
	}
}
