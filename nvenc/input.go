package nvenc

import (
	"context"
	"fmt"
	"time"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/testpattern"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// RawFrame is one raw picture handed to a Session.
type RawFrame struct {
	Picture Picture
	// FrameID is the capture (commit) time in Unix ns; the encoded frame
	// carries it on as its frame_id.
	FrameID uint64
	// Arrived is when the input got the picture.
	Arrived time.Time
	// Release, when set, is called once the session is done with the
	// picture's bytes (encoded or skipped), so the input can reuse them.
	Release func()
}

// Input produces raw pictures. Run calls fn for each until ctx is done; fn
// never blocks (the session keeps only the newest picture).
type Input interface {
	Run(ctx context.Context, fn func(RawFrame)) error
}

// RingInput reads the raw-frame ring (docs/protocol.md, "Raw-frame ring") through a
// shmring.Reader. A reader with PooledPayloads (what sdr_encoder runs)
// hands each picture over in one of its copy buffers: the session's
// Release gives it back once the picture is encoded or skipped, so a raw
// ring allocates no picture-sized buffer per frame.
type RingInput struct {
	Reader *shmring.Reader
	// OnInvalid, when set, is told about frames that are not valid raw
	// frames (the ring carries an encoded codec, a bad descriptor).
	OnInvalid func(error)
}

// Run reads the ring until ctx is done.
func (in RingInput) Run(ctx context.Context, fn func(RawFrame)) error {
	return in.Reader.Run(ctx, func(f shmring.Frame) {
		l, err := shmring.ParseRaw(f.Header, f.Payload)
		if err != nil {
			f.Release()
			if in.OnInvalid != nil {
				in.OnInvalid(fmt.Errorf("raw frame %d: %w", f.Header.FrameSeq, err))
			}
			return
		}
		d := l.Descriptor
		fn(RawFrame{
			Picture: Picture{
				Format: f.Header.Codec, Width: int(d.Width), Height: int(d.Height), Stride: int(d.Stride),
				Data: f.Payload[shmring.RawDescriptorSize:],
			},
			FrameID: f.Header.FrameID,
			Arrived: f.Arrived,
			Release: f.Release,
		})
	})
}

// PatternInput renders the moving test pattern at a fixed rate, stamping
// each picture with its frame number and commit time (its FrameID).
type PatternInput struct {
	Width, Height int
	Format        frame.Codec // default I420
	FPS           int         // default 30
}

// Run renders pictures until ctx is done.
func (in PatternInput) Run(ctx context.Context, fn func(RawFrame)) error {
	format := in.Format
	if format == 0 {
		format = frame.CodecI420
	}
	fps := in.FPS
	if fps <= 0 {
		fps = DefaultFPS
	}
	pat, err := testpattern.New(in.Width, in.Height, testpattern.Format(format))
	if err != nil {
		return fmt.Errorf("test pattern input: %w", err)
	}
	// A few buffers circulate: the session gives each back when done.
	free := make(chan []byte, 4)
	for i := 0; i < cap(free); i++ {
		free <- make([]byte, pat.Size())
	}
	period := time.Second / time.Duration(fps)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for n := uint64(0); ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		var buf []byte
		select {
		case buf = <-free:
		default:
			buf = make([]byte, pat.Size()) // all in use: the session holds them
		}
		now := time.Now()
		buf = pat.Render(buf, n, now)
		b := buf
		fn(RawFrame{
			Picture: Picture{Format: format, Width: in.Width, Height: in.Height, Stride: pat.Stride(), Data: buf},
			FrameID: uint64(now.UnixNano()),
			Arrived: now,
			Release: func() {
				select {
				case free <- b:
				default:
				}
			},
		})
		// Keep to the grid start + k*period; skip ticks that passed.
		next := start.Add(time.Duration(n+1) * period)
		if d := time.Until(next); d > 0 {
			timer.Reset(d)
		} else {
			skipped := uint64(-d/period) + 1
			n += skipped - 1
			timer.Reset(time.Until(start.Add(time.Duration(n+1) * period)))
		}
	}
}
