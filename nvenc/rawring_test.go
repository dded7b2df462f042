package nvenc

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// checkingEncoder stands in for an encoder: it checks that every picture
// is the frame the ring writer committed (rawPicture), and, while hold is
// set, keeps the picture (its Encode blocks) until the test lets it go,
// then checks it again.
type checkingEncoder struct {
	cfg     Config
	holding chan uint64   // the frame number of a held picture
	letGo   chan struct{} // ends a hold
	hold    func(n uint64) bool

	mu       sync.Mutex
	problems []string
}

func (e *checkingEncoder) Encode(p Picture, key bool) ([]Packet, error) {
	n, bad := checkPicture(p)
	if bad == "" && e.hold != nil && e.hold(n) {
		e.holding <- n
		<-e.letGo
		if m, again := checkPicture(p); again != "" || m != n {
			bad = fmt.Sprintf("picture %d changed while the encoder held it: now %d (%s)", n, m, again)
		}
	}
	if bad != "" {
		e.mu.Lock()
		e.problems = append(e.problems, bad)
		e.mu.Unlock()
	}
	out := make([]byte, 8)
	binary.LittleEndian.PutUint64(out, n)
	return []Packet{{Data: out, Keyframe: key}}, nil
}
func (e *checkingEncoder) Backend() string     { return "checking" }
func (e *checkingEncoder) Attempts() []Attempt { return []Attempt{{Backend: "checking"}} }
func (e *checkingEncoder) Config() Config      { return e.cfg }
func (e *checkingEncoder) SPSPatched() bool    { return false }
func (e *checkingEncoder) Close()              {}

// rawPicture fills the planes of a raw payload for frame n: n in the first
// 8 bytes, then bytes that depend on n and their offset.
func rawPicture(payload []byte, n uint64) {
	pic := payload[shmring.RawDescriptorSize:]
	binary.LittleEndian.PutUint64(pic, n)
	for i := 8; i < len(pic); i++ {
		pic[i] = byte(n*131 + uint64(i)/7)
	}
}

// checkPicture returns the frame number a picture carries and what is
// wrong with the rest of it ("" when nothing).
func checkPicture(p Picture) (uint64, string) {
	n := binary.LittleEndian.Uint64(p.Data)
	for i := 8; i < len(p.Data); i++ {
		if want := byte(n*131 + uint64(i)/7); p.Data[i] != want {
			return n, fmt.Sprintf("picture %d: byte %d is %#x, want %#x (shmring.PoisonByte %#x)", n, i, p.Data[i], want, shmring.PoisonByte)
		}
	}
	return n, ""
}

// rawRingSession is a raw ring at 1080p NV12 with its writer, and a session
// reading it through RingInput with the reader sdr_encoder runs
// (PooledPayloads) into enc. The frames' payloads are made up front: the
// writer allocates nothing per frame.
type rawRingSession struct {
	w        *shmring.Writer
	r        *shmring.Reader
	s        *Session
	payloads [][]byte
	encoded  chan uint64 // frame numbers, in order, as the session publishes them
	n        uint64
}

func newRawRingSession(t *testing.T, enc *checkingEncoder) *rawRingSession {
	t.Helper()
	const w, h = 1920, 1080
	path := filepath.Join(t.TempDir(), "raw")
	d := shmring.RawDescriptor{Width: w, Height: h, Stride: w}
	x := &rawRingSession{encoded: make(chan uint64, 64)}
	for range 8 {
		p, l, err := shmring.NewRawPayload(shmring.CodecNV12, d)
		if err != nil {
			t.Fatal(err)
		}
		x.payloads = append(x.payloads, p)
		if x.w == nil {
			if x.w, err = shmring.CreateWriter(path, int64(shmring.OffPayload+l.PayloadSize+4096)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { x.w.Close() })
		}
	}
	var err error
	if x.r, err = shmring.NewReader(shmring.ReaderConfig{Path: path, MaxFrameSize: shmring.DefaultRawMaxFrameSize, PooledPayloads: true}); err != nil {
		t.Fatal(err)
	}
	x.r.Watch()
	x.s, err = NewSession(SessionConfig{Name: "raw", Encoder: Config{Codec: shmring.CodecH264},
		Open: func(c Config) (FrameEncoder, error) { enc.cfg = c; return enc, nil }}, RingInput{Reader: x.r})
	if err != nil {
		t.Fatal(err)
	}
	x.s.Subscribe(func(f frame.Frame) {
		select {
		case x.encoded <- binary.LittleEndian.Uint64(f.Payload):
		default:
			t.Error("encoded frames not collected")
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := testwait.Recv(t, done, "the session to stop"); err != nil {
			t.Error(err)
		}
	})
	return x
}

// write commits the next frame and returns its number.
func (x *rawRingSession) write(t *testing.T) uint64 {
	t.Helper()
	x.n++
	p := x.payloads[x.n%uint64(len(x.payloads))]
	rawPicture(p, x.n)
	if _, err := x.w.WriteFrame(shmring.Header{FrameID: x.n, Codec: shmring.CodecNV12}, p); err != nil {
		t.Fatal(err)
	}
	return x.n
}

// read waits until the reader has delivered frame n.
func (x *rawRingSession) read(t *testing.T, n uint64) {
	t.Helper()
	testwait.For(t, fmt.Sprintf("the reader to deliver frame %d", n), func() bool { return x.r.Stats().Frames >= n })
}

// Raw 1080p NV12 frames go from the ring through RingInput into the
// session's encoder without a picture-sized allocation per frame: the
// pictures reach the encoder in the reader's pooled buffers, which the
// session gives back. Every picture the encoder gets is the frame written.
func TestRawRingAllocatesNoPicturePerFrame(t *testing.T) { // not parallel: it measures the process's allocations
	enc := &checkingEncoder{}
	x := newRawRingSession(t, enc)
	frameOnce := func() {
		n := x.write(t)
		if got := testwait.Recv(t, x.encoded, fmt.Sprintf("frame %d encoded", n)); got != n {
			t.Fatalf("encoded frame %d, want %d", got, n)
		}
	}
	for range 10 {
		frameOnce()
	}
	const n = 30
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	for range n {
		frameOnce()
	}
	runtime.ReadMemStats(&b)
	size := len(x.payloads[0])
	perFrame := (b.TotalAlloc - a.TotalAlloc) / n
	t.Logf("%d bytes, %d allocations per %d-byte raw frame", perFrame, (b.Mallocs-a.Mallocs)/n, size)
	if perFrame >= 64<<10 {
		t.Errorf("%d bytes allocated per raw frame of %d bytes through ring, input and session, want under 64 KiB", perFrame, size)
	}
	enc.mu.Lock()
	defer enc.mu.Unlock()
	for _, p := range enc.problems {
		t.Error(p)
	}
}

// A picture the encoder holds keeps its bytes while later frames pass
// through the reader: the reader never copies a frame into a buffer the
// session has not given back (the frames that pass replace one another as
// the waiting picture, and are released unencoded).
func TestRawRingPictureKeptWhileEncoding(t *testing.T) {
	t.Parallel()
	enc := &checkingEncoder{holding: make(chan uint64), letGo: make(chan struct{}),
		hold: func(n uint64) bool { return n%3 == 1 }}
	x := newRawRingSession(t, enc)
	for round := range 4 {
		n := x.write(t)
		if n%3 != 1 {
			t.Fatalf("round %d writes frame %d", round, n)
		}
		if got := testwait.Recv(t, enc.holding, "the encoder to hold a picture"); got != n {
			t.Fatalf("the encoder holds frame %d, want %d", got, n)
		}
		// Meanwhile the writer commits more frames, each read whole; the
		// last of them is not one the encoder holds.
		var last uint64
		for range 5 {
			last = x.write(t)
			x.read(t, last)
		}
		enc.letGo <- struct{}{}
		if got := testwait.Recv(t, x.encoded, "the held frame encoded"); got != n {
			t.Fatalf("encoded %d, want the held %d", got, n)
		}
		// Then the newest picture, which waited.
		if got := testwait.Recv(t, x.encoded, "the waiting frame encoded"); got != last {
			t.Fatalf("encoded %d, want the newest %d", got, last)
		}
		// Frames are numbered so that the next round's first is held.
		for x.n%3 != 0 {
			n := x.write(t)
			x.read(t, n)
			if got := testwait.Recv(t, x.encoded, "a frame encoded"); got != n {
				t.Fatalf("encoded %d, want %d", got, n)
			}
		}
	}
	enc.mu.Lock()
	defer enc.mu.Unlock()
	for _, p := range enc.problems {
		t.Error(p)
	}
	if st := x.s.Stats(); st.Skipped == 0 {
		t.Errorf("no picture skipped (%+v): the frames written during a hold did not replace one another", st)
	}
}
