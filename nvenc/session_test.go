//go:build cgo

package nvenc

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/testpattern"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// collect runs a session until n frames arrived (or testwait.Default passed), calling
// each(i, f) on the encoding goroutine for every frame.
func collect(t *testing.T, s *Session, n int, each func(i int, f frame.Frame)) []frame.Frame {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu     sync.Mutex
		frames []frame.Frame
		done   = make(chan struct{})
	)
	stop := s.Subscribe(func(f frame.Frame) {
		mu.Lock()
		i := len(frames)
		if i < n {
			frames = append(frames, f)
		}
		mu.Unlock()
		if i < n && each != nil {
			each(i, f)
		}
		if i == n-1 {
			close(done)
		}
	})
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	select {
	case <-done:
	case <-testwait.After(testwait.Default):
		mu.Lock()
		t.Errorf("only %d of %d frames within %s; stats %+v", len(frames), n, testwait.Timeout(testwait.Default), s.Stats())
		mu.Unlock()
	}
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-testwait.After(10 * time.Second):
		t.Fatalf("Run did not return within %s of cancel", testwait.Timeout(10*time.Second))
	}
	mu.Lock()
	defer mu.Unlock()
	return append([]frame.Frame(nil), frames...)
}

func checkHeaders(t *testing.T, frames []frame.Frame) {
	t.Helper()
	for i, f := range frames {
		h := f.Header
		if h.FrameSeq != frames[0].Header.FrameSeq+uint64(i) {
			t.Errorf("frame %d: frame_seq %d, want %d", i, h.FrameSeq, frames[0].Header.FrameSeq+uint64(i))
		}
		if int(h.Size) != len(f.Payload) || h.CRC32 != frame.Checksum(f.Payload) {
			t.Errorf("frame %d: size %d crc %08x for %d bytes", i, h.Size, h.CRC32, len(f.Payload))
		}
		if i > 0 && h.FrameID <= frames[i-1].Header.FrameID {
			t.Errorf("frame %d: frame_id %d not after %d", i, h.FrameID, frames[i-1].Header.FrameID)
		}
	}
}

func TestSessionPatternH264(t *testing.T) {
	t.Parallel()
	s, err := NewSession(SessionConfig{Name: "t", Encoder: Config{GOP: 15, Backends: []string{"libx264"}, FPS: 60}},
		PatternInput{Width: 320, Height: 240, FPS: 60})
	if err != nil {
		t.Fatal(err)
	}
	frames := collect(t, s, 40, nil)
	if len(frames) != 40 {
		t.Fatalf("%d frames", len(frames))
	}
	checkHeaders(t, frames)
	if !frames[0].Header.Keyframe() || frames[0].Header.Codec != frame.CodecH264 {
		t.Fatalf("first frame %+v: want an H.264 keyframe", frames[0].Header)
	}
	dec, err := NewDecoder(frame.CodecH264)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var lastFrame uint64
	for i, f := range frames {
		pics, err := dec.Decode(f.Payload)
		if err != nil || len(pics) != 1 {
			t.Fatalf("frame %d: %d pictures, %v", i, len(pics), err)
		}
		st, err := testpattern.ReadLuma(pics[0].Y, pics[0].YStride, 320, 240)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		// frame_id is the commit time stamped into the picture.
		if uint64(st.Time.UnixNano()) != f.Header.FrameID {
			t.Errorf("frame %d: stamp time %d, frame_id %d", i, st.Time.UnixNano(), f.Header.FrameID)
		}
		if i > 0 && st.Frame <= lastFrame {
			t.Errorf("frame %d: pattern frame %d after %d", i, st.Frame, lastFrame)
		}
		lastFrame = st.Frame
	}
	st := s.Stats()
	if st.Backend != "libx264" || st.Frames < 40 || st.Keyframes < 3 {
		t.Errorf("stats %+v", st)
	}
	if fs, ok := s.LastFrame(); !ok || fs.Codec != "h264" || fs.FrameBytes == 0 {
		t.Errorf("last frame stats %+v", fs)
	}
}

func TestSessionKeyframeRequestAndSettings(t *testing.T) {
	t.Parallel()
	s, err := NewSession(SessionConfig{Name: "t", Encoder: Config{GOP: 1000, Backends: []string{"libx264"}}},
		PatternInput{Width: 320, Height: 240, FPS: 60})
	if err != nil {
		t.Fatal(err)
	}
	jpeg, h264, rate := frame.CodecJPEG, frame.CodecH264, 800
	bad := "warp"
	frames := collect(t, s, 30, func(i int, f frame.Frame) {
		switch i {
		case 5:
			s.RequestKeyframe()
		case 10:
			if err := s.Reconfigure(Settings{Preset: &bad}); err == nil {
				t.Error("invalid preset accepted")
			}
			if err := s.Reconfigure(Settings{Codec: &jpeg}); err != nil {
				t.Error(err)
			}
		case 20:
			if err := s.Reconfigure(Settings{Codec: &h264, BitrateKbps: &rate}); err != nil {
				t.Error(err)
			}
		}
	})
	checkHeaders(t, frames)
	for i, f := range frames {
		wantKey := i == 0 || i == 6 || (i >= 11 && i <= 20) || i == 21
		wantCodec := frame.CodecH264
		if i >= 11 && i <= 20 {
			wantCodec = frame.CodecJPEG
		}
		if f.Header.Keyframe() != wantKey || f.Header.Codec != wantCodec {
			t.Errorf("frame %d: keyframe %v codec %s, want %v %s", i, f.Header.Keyframe(), f.Header.Codec, wantKey, wantCodec)
		}
	}
	if st := s.Stats(); st.Reopens != 2 || st.Config.BitrateKbps != 800 || st.Config.Codec != frame.CodecH264 {
		t.Errorf("stats %+v", st)
	}
	// Back on H.264, the configured backends apply again (no NVENC attempt).
	if st := s.Stats(); st.Backend != "libx264" || len(st.Attempts) != 1 {
		t.Errorf("backend %s attempts %+v, want libx264 alone", st.Backend, st.Attempts)
	}
}

// blockingEncoder holds every Encode until released: encoding that falls
// far behind, deterministically.
type blockingEncoder struct {
	cfg     Config
	release chan struct{}
	entered chan struct{}
	pics    []Picture
}

func (b *blockingEncoder) Encode(p Picture, key bool) ([]Packet, error) {
	b.entered <- struct{}{}
	<-b.release
	b.pics = append(b.pics, p)
	return []Packet{{Data: []byte{0, 0, 0, 1, 0x65, byte(len(b.pics))}, Keyframe: key}}, nil
}
func (b *blockingEncoder) Backend() string     { return "blocking" }
func (b *blockingEncoder) Attempts() []Attempt { return []Attempt{{Backend: "blocking"}} }
func (b *blockingEncoder) Config() Config      { return b.cfg }
func (b *blockingEncoder) SPSPatched() bool    { return false }
func (b *blockingEncoder) Close()              {}

// burstInput offers n pictures as fast as it can, the second once the test
// says that the encoder holds the first, then waits for ctx.
type burstInput struct {
	n        int
	held     chan struct{} // closed by the test once the encoder holds picture 1
	returned chan struct{}
	released *int
	mu       *sync.Mutex
}

func (in burstInput) Run(ctx context.Context, fn func(RawFrame)) error {
	for i := 0; i < in.n; i++ {
		fn(RawFrame{Picture: Picture{Format: frame.CodecI420, Width: 16, Height: 16, Stride: 16, Data: make([]byte, 384)},
			FrameID: uint64(i + 1), Release: func() { in.mu.Lock(); *in.released++; in.mu.Unlock() }})
		if i == 0 {
			<-in.held
		}
	}
	close(in.returned)
	<-ctx.Done()
	return nil
}

func TestSessionNeverBlocksInput(t *testing.T) {
	t.Parallel()
	be := &blockingEncoder{release: make(chan struct{}), entered: make(chan struct{}, 10)}
	var mu sync.Mutex
	released := 0
	in := burstInput{n: 100, held: make(chan struct{}), returned: make(chan struct{}), released: &released, mu: &mu}
	s, err := NewSession(SessionConfig{Name: "t", Open: func(c Config) (FrameEncoder, error) { be.cfg = c; return be, nil }}, in)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan uint64, 10)
	s.Subscribe(func(f frame.Frame) { got <- f.Header.FrameID })
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	testwait.Recv(t, be.entered, "the encoder to take picture 1")
	close(in.held)
	select {
	case <-in.returned: // all 100 offers returned while the encoder was stuck
	case <-testwait.After(20 * time.Second):
		t.Fatal("the input blocked while the encoder was busy")
	}
	close(be.release)
	if id := <-got; id != 1 {
		t.Fatalf("first frame_id %d, want 1", id)
	}
	if id := <-got; id != 100 {
		t.Fatalf("second frame_id %d, want 100 (the newest picture)", id)
	}
	st := s.Stats()
	if st.Frames != 2 || st.Skipped != 98 {
		t.Fatalf("frames %d skipped %d, want 2 and 98", st.Frames, st.Skipped)
	}
	cancel()
	if err := testwait.Recv(t, ran, "Run to return"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if released != 100 {
		t.Errorf("%d of 100 pictures released back to the input", released)
	}
}

func TestSessionRawRing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "raw")
	const w, h = 320, 240
	wr, err := shmring.CreateWriter(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer wr.Close()
	rd, err := shmring.NewReader(shmring.ReaderConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "frames")
	ow, err := shmring.CreateWriter(out, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer ow.Close()
	s, err := NewSession(SessionConfig{Name: "ring", Encoder: Config{Codec: frame.CodecJPEG}, Output: ow}, RingInput{Reader: rd})
	if err != nil {
		t.Fatal(err)
	}
	pat, _ := testpattern.New(w, h, testpattern.NV12)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the writer: 30 fps until the test ends
		for n := uint64(0); ctx.Err() == nil; n++ {
			now := time.Now()
			payload, l, _ := shmring.NewRawPayload(frame.CodecNV12, shmring.RawDescriptor{Width: w, Height: h, Stride: w})
			copy(payload[l.Planes[0].Offset:], pat.Render(nil, n, now))
			if _, err := wr.WriteFrame(frame.Header{FrameID: uint64(now.UnixNano()), Codec: frame.CodecNV12}, payload); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(33 * time.Millisecond) // the subject: a writer at 30 frames/s
		}
	}()
	frames := collect(t, s, 10, nil)
	checkHeaders(t, frames)
	dec, _ := NewDecoder(frame.CodecJPEG)
	defer dec.Close()
	for i, f := range frames {
		if f.Header.Codec != frame.CodecJPEG || !f.Header.Keyframe() {
			t.Fatalf("frame %d: %+v", i, f.Header)
		}
		pics, err := dec.Decode(f.Payload)
		if err != nil || len(pics) != 1 {
			t.Fatalf("frame %d: %v", i, err)
		}
		st, err := testpattern.ReadLuma(pics[0].Y, pics[0].YStride, w, h)
		if err != nil || uint64(st.Time.UnixNano()) != f.Header.FrameID {
			t.Fatalf("frame %d: stamp %+v %v, frame_id %d", i, st, err, f.Header.FrameID)
		}
	}
	// The encoded ring holds the last frame, as written.
	if ow.Sequence() < 10 {
		t.Fatalf("encoded ring sequence %d, want >= 10", ow.Sequence())
	}
}

// handInput gives the test the session's offer function, so that the test
// decides when each picture comes.
type handInput struct{ offer chan func(RawFrame) }

func (in handInput) Run(ctx context.Context, fn func(RawFrame)) error {
	in.offer <- fn
	<-ctx.Done()
	return nil
}

// echoEncoder encodes each picture into one packet at once.
type echoEncoder struct{ cfg Config }

func (e *echoEncoder) Encode(p Picture, key bool) ([]Packet, error) {
	return []Packet{{Data: []byte{0, 0, 0, 1, 0x65}, Keyframe: key}}, nil
}
func (e *echoEncoder) Backend() string     { return "echo" }
func (e *echoEncoder) Attempts() []Attempt { return []Attempt{{Backend: "echo"}} }
func (e *echoEncoder) Config() Config      { return e.cfg }
func (e *echoEncoder) SPSPatched() bool    { return false }
func (e *echoEncoder) Close()              {}

// A wake that finds no picture waiting (an offer that raced the previous
// wake) must not use up a Reconfigure: the next picture still gets the new
// settings. On a loaded machine this lost a codec change.
func TestSessionReconfigureSurvivesEmptyWake(t *testing.T) {
	t.Parallel()
	in := handInput{offer: make(chan func(RawFrame), 1)}
	s, err := NewSession(SessionConfig{Name: "t", Encoder: Config{Codec: frame.CodecH264},
		Open: func(c Config) (FrameEncoder, error) { return &echoEncoder{cfg: c}, nil }}, in)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan frame.Frame, 4)
	s.Subscribe(func(f frame.Frame) { got <- f })
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := testwait.Recv(t, ran, "Run to return"); err != nil {
			t.Error(err)
		}
	}()
	offer := testwait.Recv(t, in.offer, "the input to start")
	pic := func(id uint64) RawFrame {
		return RawFrame{Picture: Picture{Format: frame.CodecI420, Width: 16, Height: 16, Stride: 16, Data: make([]byte, 384)}, FrameID: id}
	}
	offer(pic(1))
	if f := testwait.Recv(t, got, "frame 1"); f.Header.Codec != frame.CodecH264 {
		t.Fatalf("frame 1: codec %s", f.Header.Codec)
	}
	jpeg := frame.CodecJPEG
	if err := s.Reconfigure(Settings{Codec: &jpeg}); err != nil {
		t.Fatal(err)
	}
	// Three wakes with no picture: once the third is in the channel, Run
	// has handled the first one completely.
	for range 3 {
		s.wake <- struct{}{}
	}
	offer(pic(2))
	f := testwait.Recv(t, got, "frame 2")
	if f.Header.Codec != frame.CodecJPEG || !f.Header.Keyframe() {
		t.Errorf("frame 2 after Reconfigure: codec %s keyframe %v, want a JPEG keyframe", f.Header.Codec, f.Header.Keyframe())
	}
}
