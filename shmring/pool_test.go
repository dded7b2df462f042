package shmring

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

// The frames of these tests carry payloadFor(frame_seq % patterns): 251
// distinct payloads, so that a buffer reused for a later frame shows.
const patterns = 251

func patternFor(seq uint64, n int) []byte { return payloadFor(seq%patterns, n) }

// holdsPayload reports where f's payload differs from patternFor its
// frame_seq, or "" when it is intact.
func holdsPayload(f Frame, n int) string {
	if len(f.Payload) != n {
		return fmt.Sprintf("frame %d: %d bytes, want %d", f.Header.FrameSeq, len(f.Payload), n)
	}
	for i, b := range f.Payload {
		if want := byte((f.Header.FrameSeq%patterns)*31 + uint64(i)); b != want {
			return fmt.Sprintf("frame %d: byte %d is %#x, want %#x (poison is %#x)", f.Header.FrameSeq, i, b, want, PoisonByte)
		}
	}
	return ""
}

// pooledStepper drives a step reader with PooledPayloads over a ring whose
// frames carry patternFor(frame_seq, size).
type pooledStepper struct {
	t    *testing.T
	w    *Writer
	r    *Reader
	now  time.Time
	seq  uint64
	data [][]byte // the payloads written: patternFor(i, size) at i
	size int
	got  []Frame
}

func newPooledStepper(t *testing.T, size int, cfg ReaderConfig) *pooledStepper {
	path, w := createRing(t, int64(OffPayload+size+4096))
	cfg.PooledPayloads = true
	s := &pooledStepper{t: t, w: w, r: attachReaderWith(t, path, cfg), now: time.Now(), size: size}
	s.r.clock = func() time.Time { return s.now }
	s.data = make([][]byte, patterns)
	return s
}

// frame writes the next frame, steps the reader once and returns what it
// delivered.
func (s *pooledStepper) frame() Frame {
	s.t.Helper()
	s.seq++
	// Each payload is made once: a steady run allocates nothing here.
	p := s.data[s.seq%patterns]
	if p == nil {
		p = patternFor(s.seq, s.size)
		s.data[s.seq%patterns] = p
	}
	if _, err := s.w.WriteFrame(Header{FrameSeq: s.seq, Codec: CodecNV12}, p); err != nil {
		s.t.Fatal(err)
	}
	s.now = s.now.Add(16 * time.Millisecond)
	s.got = s.got[:0]
	s.r.step(func(f Frame) { s.got = append(s.got, f) })
	if len(s.got) != 1 || s.got[0].Header.FrameSeq != s.seq {
		s.t.Fatalf("frame %d not delivered (got %d frames)", s.seq, len(s.got))
	}
	return s.got[0]
}

// With PooledPayloads, frames that are released allocate no payload-sized
// buffer once the pool holds its few buffers: the reader copies into the
// buffers its frames gave back.
func TestPooledPayloadsAllocateNoPayload(t *testing.T) {
	const size = 1 << 20
	for _, pooled := range []bool{true, false} {
		t.Run(fmt.Sprintf("pooled=%v", pooled), func(t *testing.T) {
			s := newPooledStepper(t, size, ReaderConfig{PooledPayloads: pooled})
			s.r.cfg.PooledPayloads = pooled
			// A consumer that keeps the last two frames, like an encoder
			// with one picture waiting and one being encoded.
			var held []Frame
			step := func() {
				f := s.frame()
				held = append(held, f)
				if len(held) > 2 {
					held[0].Release()
					held = append(held[:0], held[1:]...)
				}
			}
			for range patterns + 10 { // every payload made, the pool filled
				step()
			}
			var a, b runtime.MemStats
			const n = 50
			runtime.ReadMemStats(&a)
			for range n {
				step()
			}
			runtime.ReadMemStats(&b)
			perFrame := (b.TotalAlloc - a.TotalAlloc) / n
			t.Logf("%d bytes allocated per %d-byte frame", perFrame, size)
			if pooled && perFrame >= 64<<10 {
				t.Errorf("%d bytes allocated per frame of %d bytes with PooledPayloads, want under 64 KiB", perFrame, size)
			}
			if !pooled && perFrame < size {
				t.Errorf("%d bytes allocated per frame without PooledPayloads: the receiver must own a copy of %d bytes", perFrame, size)
			}
			for _, f := range held {
				if bad := holdsPayload(f, size); bad != "" {
					t.Error(bad)
				}
			}
		})
	}
}

// A pooled buffer is never copied into while a frame references it: held
// frames keep their bytes however many frames pass and in whatever order
// the others are released; a released payload is poisoned (this package's
// tests poison), not reused under a holder; Retain keeps the payload for a
// second consumer; releasing a frame twice releases its buffer once.
func TestPooledPayloadNotReusedWhileHeld(t *testing.T) {
	t.Parallel()
	const size = 4096
	s := newPooledStepper(t, size, ReaderConfig{})
	rng := rand.New(rand.NewPCG(1, 2))
	var held []Frame
	for range 2000 {
		f := s.frame()
		switch rng.IntN(4) {
		case 0: // released at once, twice
			f.Release()
			f.Release()
		case 1: // a second consumer
			held = append(held, f.Retain())
			held = append(held, f)
		default:
			held = append(held, f)
		}
		for len(held) > 0 && rng.IntN(3) == 0 {
			i := rng.IntN(len(held))
			if bad := holdsPayload(held[i], size); bad != "" {
				t.Fatalf("held frame overwritten: %s", bad)
			}
			held[i].Release()
			held = append(held[:i], held[i+1:]...)
		}
		for len(held) > 12 {
			held[0].Release()
			held = held[1:]
		}
	}
	for _, f := range held {
		if bad := holdsPayload(f, size); bad != "" {
			t.Errorf("held frame overwritten: %s", bad)
		}
	}

	// Poisoning: once the reader has moved on and the receiver releases,
	// the bytes are gone, and only then.
	f := s.frame()
	g := f.Retain()
	s.frame() // the reader no longer references f's buffer
	f.Release()
	f.Release() // the second call releases nothing: g still holds the buffer
	if bad := holdsPayload(g, size); bad != "" {
		t.Fatalf("retained frame lost its payload when the original was released: %s", bad)
	}
	payload := g.Payload
	g.Release()
	if payload[0] != PoisonByte || payload[size-1] != PoisonByte {
		t.Errorf("a released buffer holds %#x..%#x, want the poison %#x", payload[0], payload[size-1], PoisonByte)
	}
}

// The same through Run, with the frames checked and released on other
// goroutines while the reader copies the next ones (the race detector
// watches the hand-over), as an encoder consumes a raw ring.
func TestPooledPayloadsAcrossGoroutines(t *testing.T) {
	t.Parallel()
	const size = 64 << 10
	path, w := createRing(t, OffPayload+size+4096)
	cfg := ReaderConfig{Path: path, PooledPayloads: true}
	r, err := NewReader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const consumers = 3
	chans := make([]chan Frame, consumers)
	for i := range chans {
		chans[i] = make(chan Frame, 4)
	}
	var (
		mu       sync.Mutex
		problems []string
		checked  int
	)
	var wg sync.WaitGroup
	for i := range consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			var held []Frame
			for f := range chans[i] {
				held = append(held, f)
				for len(held) > 0 && (len(held) > 3 || rng.IntN(2) == 0) {
					j := rng.IntN(len(held))
					bad := holdsPayload(held[j], size)
					held[j].Release()
					held = append(held[:j], held[j+1:]...)
					mu.Lock()
					checked++
					if bad != "" {
						problems = append(problems, bad)
					}
					mu.Unlock()
				}
			}
			for _, f := range held {
				bad := holdsPayload(f, size)
				f.Release()
				mu.Lock()
				checked++
				if bad != "" {
					problems = append(problems, bad)
				}
				mu.Unlock()
			}
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	delivered := make(chan uint64, 1)
	go func() {
		done <- r.Run(ctx, func(f Frame) {
			// Fan out: every consumer gets its own reference. A consumer
			// that is behind (a starved goroutine on a busy machine) makes
			// the hand-over wait, as an encoder's queue would; the writer
			// waits for each delivery, so nothing is overwritten meanwhile.
			hand := func(c chan Frame, g Frame) {
				select {
				case c <- g:
				case <-ctx.Done():
					g.Release()
				}
			}
			for i := 1; i < consumers; i++ {
				hand(chans[i], f.Retain())
			}
			hand(chans[0], f)
			select {
			case delivered <- f.Header.FrameSeq:
			default:
			}
		})
	}()
	const frames = 300
	for seq := uint64(1); seq <= frames; seq++ {
		if _, err := w.WriteFrame(Header{FrameSeq: seq, Codec: CodecNV12}, patternFor(seq, size)); err != nil {
			t.Fatal(err)
		}
		// One frame at a time: the reader delivers each before the next.
		eventually(t, 10*time.Second, fmt.Sprintf("frame %d delivered", seq), func() bool {
			select {
			case got := <-delivered:
				return got == seq
			default:
				return false
			}
		})
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, c := range chans {
		close(c)
	}
	wg.Wait()
	if len(problems) > 0 {
		t.Fatalf("%d of %d frames overwritten while held, first: %s", len(problems), checked, problems[0])
	}
	if checked != frames*consumers {
		t.Fatalf("%d frames checked, want %d", checked, frames*consumers)
	}
}
