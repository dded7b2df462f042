// Package simulator stands in for SDR_OS's simulator where video is
// concerned: Writer renders the moving test pattern (package testpattern)
// and commits frames into a ring as the simulator does, encoded (through
// package nvenc) or raw; Bus answers the simulator's NATS commands
// (command.genesis.*) and publishes its frame statistics. It is what
// `caddy sdr-testsrc` runs, so that the demo and the tests have video and a
// peer on NATS without the simulator. It imports nothing from Caddy.
package simulator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testpattern"
	"github.com/sdr-os/sdr-caddy/nvenc"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// Writer stands in for the simulator's camera: it renders the moving test
// pattern (internal/testpattern) at a fixed frame rate and commits every
// frame into a ring the way the simulator does. With an encoded codec (h264,
// hevc, jpeg) it encodes through package nvenc and writes the encoded ring;
// with a raw pixel format (i420, nv12, rgba, bgra, rgb24) it writes the raw
// ring that the sdr_encoder app reads. frame_id is the commit time in Unix
// ns; the picture carries the frame number and render time (barcode and
// digits).
type Writer struct {
	// Path of the ring file.
	Path string
	// Size of the ring file in bytes, control region included.
	Size int64
	// Codec: shmring.CodecH264, CodecHEVC, CodecJPEG or a raw format.
	Codec shmring.Codec
	// Width and Height of the pictures.
	Width, Height int
	// FPS is the frame rate.
	FPS int
	// GOP is the number of frames from one IDR to the next (encoded codecs).
	GOP int
	// BitrateKbps for H.264 and HEVC; 0 for nvenc's default.
	BitrateKbps int
	// JPEGQuality 1..100; 0 for nvenc's default.
	JPEGQuality int
	// Backends overrides nvenc's backend preference order.
	Backends []string
	// NoCRC writes 0 instead of the payload CRC-32.
	NoCRC bool
	// Frames stops the source after this many frames; 0 runs until the
	// context ends.
	Frames uint64
	// Logger receives the start line and a status line every StatusEvery.
	Logger *slog.Logger
	// StatusEvery is the period of status lines; 0 means 5 s, <0 never.
	StatusEvery time.Duration
	// OnFrame, when set, is called after each commit with the header as
	// stored and the time the encoder took. It must not block.
	OnFrame func(h shmring.Header, encode time.Duration)

	keyframe atomic.Bool
	pending  atomic.Pointer[Settings]
}

// Settings changes what an encoding test source produces, as the
// simulator's command.genesis.settings does. Zero fields keep their value.
type Settings struct {
	// Codec: shmring.CodecH264, CodecHEVC or CodecJPEG.
	Codec shmring.Codec
	// FPS is the new frame rate.
	FPS int
	// Width and Height are the new picture size.
	Width, Height int
	// JPEGQuality 1..100.
	JPEGQuality int
	// BitrateKbps for H.264 and HEVC.
	BitrateKbps int
}

// RequestKeyframe makes the next encoded frame an IDR.
func (s *Writer) RequestKeyframe() { s.keyframe.Store(true) }

// Apply changes the settings from the next frame on: the encoder is opened
// again, so that frame is a keyframe. A raw source ignores it; settings
// that cannot be applied are logged and the old ones kept.
func (s *Writer) Apply(set Settings) { s.pending.Store(&set) }

// Validate checks the configuration.
func (s *Writer) Validate() error {
	if s.Path == "" {
		return errors.New("test source: ring path is empty")
	}
	if s.FPS < 1 || s.FPS > 240 {
		return fmt.Errorf("test source: fps %d: want 1..240", s.FPS)
	}
	switch s.Codec {
	case shmring.CodecH264, shmring.CodecHEVC, shmring.CodecJPEG,
		shmring.CodecI420, shmring.CodecNV12, shmring.CodecRGBA, shmring.CodecBGRA, shmring.CodecRGB24:
	default:
		return fmt.Errorf("test source: codec %s: want h264, hevc, jpeg, i420, nv12, rgba, bgra or rgb24", s.Codec)
	}
	if s.GOP < 0 {
		return fmt.Errorf("test source: gop %d is negative", s.GOP)
	}
	if _, err := testpattern.New(s.Width, s.Height, testpattern.I420); err != nil {
		return fmt.Errorf("test source: %w", err)
	}
	return nil
}

// Run writes frames until ctx ends or Frames have been written. It returns
// nil when ctx ends.
func (s *Writer) Run(ctx context.Context) error {
	if err := s.Validate(); err != nil {
		return err
	}
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	format := testpattern.I420
	if s.Codec.IsRaw() {
		format = testpattern.Format(s.Codec)
	}
	pattern, err := testpattern.New(s.Width, s.Height, format)
	if err != nil {
		return fmt.Errorf("test source: %w", err)
	}

	cur := Settings{Codec: s.Codec, FPS: s.FPS, Width: s.Width, Height: s.Height,
		JPEGQuality: s.JPEGQuality, BitrateKbps: s.BitrateKbps}
	var enc *nvenc.Encoder
	if !s.Codec.IsRaw() {
		if enc, err = s.openEncoder(cur); err != nil {
			return err
		}
		defer func() { enc.Close() }()
	}

	w, err := shmring.CreateWriter(s.Path, s.Size, shmring.WithCRC(!s.NoCRC))
	if err != nil {
		return fmt.Errorf("test source: %w", err)
	}
	defer w.Close()

	// Raw frames: the payload is the descriptor followed by the picture.
	var raw []byte
	if s.Codec.IsRaw() {
		raw, _, err = shmring.NewRawPayload(s.Codec, shmring.RawDescriptor{
			Width: uint32(s.Width), Height: uint32(s.Height), Stride: uint32(pattern.Stride()),
		})
		if err != nil {
			return fmt.Errorf("test source: %w", err)
		}
		if len(raw)-shmring.RawDescriptorSize != pattern.Size() {
			return fmt.Errorf("test source: raw %s layout of %d bytes differs from the pattern's %d", s.Codec, len(raw)-shmring.RawDescriptorSize, pattern.Size())
		}
	}
	if need := len(raw); need > w.MaxPayload() {
		return fmt.Errorf("test source: raw frame of %d bytes does not fit ring %s (%d bytes of payload); raise --size", need, s.Path, w.MaxPayload())
	}

	attrs := []any{"path", s.Path, "codec", s.Codec.String(), "size", fmt.Sprintf("%dx%d", s.Width, s.Height), "fps", s.FPS}
	if enc != nil {
		attrs = append(attrs, "backend", enc.Backend(), "gop", enc.Config().GOP)
	}
	log.Info("test source writing", attrs...)

	period := time.Second / time.Duration(s.FPS)
	statusEvery := s.StatusEvery
	if statusEvery == 0 {
		statusEvery = 5 * time.Second
	}
	var (
		pix                  []byte
		n                    uint64
		written, bytes, late uint64
		start                = time.Now()
		lastStatus           = start
		lastWritten          uint64
		timer                = time.NewTimer(0)
	)
	defer timer.Stop()
	for s.Frames == 0 || n < s.Frames {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		n++
		if set := s.pending.Swap(nil); set != nil && enc != nil {
			next, e, p, err := s.reopen(cur, *set)
			if err != nil {
				log.Error("test source: settings not applied", "error", err)
			} else {
				enc.Close()
				enc, pattern, cur = e, p, next
				period = time.Second / time.Duration(cur.FPS)
				start = time.Now().Add(-time.Duration(n-1) * period)
				log.Info("test source settings applied", "codec", cur.Codec.String(), "size", fmt.Sprintf("%dx%d", cur.Width, cur.Height),
					"fps", cur.FPS, "backend", enc.Backend())
			}
		}
		now := time.Now()
		if raw != nil {
			pattern.Render(raw[shmring.RawDescriptorSize:], n, now)
			h, err := w.WriteFrame(shmring.Header{Codec: s.Codec}, raw)
			if err != nil {
				return fmt.Errorf("test source: %w", err)
			}
			written++
			bytes += uint64(len(raw))
			if s.OnFrame != nil {
				s.OnFrame(h, 0)
			}
		} else {
			pix = pattern.Render(pix, n, now)
			encStart := time.Now()
			pkts, err := enc.Encode(nvenc.Picture{
				Format: shmring.CodecI420, Width: cur.Width, Height: cur.Height, Stride: pattern.Stride(), Data: pix,
			}, s.keyframe.Swap(false))
			if err != nil {
				return fmt.Errorf("test source: frame %d: %w", n, err)
			}
			encoded := time.Since(encStart)
			for _, p := range pkts {
				h := shmring.Header{Codec: cur.Codec}
				if p.Keyframe {
					h.Flags = shmring.FlagKeyframe
				}
				h, err := w.WriteFrame(h, p.Data)
				if err != nil {
					return fmt.Errorf("test source: frame %d: %w", n, err)
				}
				written++
				bytes += uint64(len(p.Data))
				if s.OnFrame != nil {
					s.OnFrame(h, encoded)
				}
			}
		}

		// Next frame on the fixed schedule, but never two commits closer
		// than half a period: a reader that polls once per period would
		// miss the first of two frames written back to back (the ring keeps
		// only the latest). A writer that fell behind starts the schedule
		// again from there instead of bursting to catch up.
		after := time.Now()
		next := start.Add(time.Duration(n) * period)
		if earliest := after.Add(period / 2); next.Before(earliest) {
			late++
			start = earliest.Add(-time.Duration(n) * period)
			next = earliest
		}
		timer.Reset(max(0, next.Sub(after)))

		if statusEvery > 0 && after.Sub(lastStatus) >= statusEvery {
			secs := after.Sub(lastStatus).Seconds()
			log.Info("test source status", "frames", written, "fps", fmt.Sprintf("%.1f", float64(written-lastWritten)/secs),
				"bytes", bytes, "late", late)
			lastStatus, lastWritten = after, written
		}
	}
	return nil
}

// openEncoder opens the encoder for settings set.
func (s *Writer) openEncoder(set Settings) (*nvenc.Encoder, error) {
	enc, err := nvenc.Open(nvenc.Config{
		Codec:       set.Codec,
		Width:       set.Width,
		Height:      set.Height,
		Input:       shmring.CodecI420,
		FPS:         set.FPS,
		GOP:         s.GOP,
		BitrateKbps: set.BitrateKbps,
		JPEGQuality: set.JPEGQuality,
		Backends:    s.backendsFor(set.Codec),
	})
	if err != nil {
		return nil, fmt.Errorf("test source: %w", err)
	}
	return enc, nil
}

// backendsFor keeps the configured backends for the codec they were given
// for; another codec gets nvenc's default order.
func (s *Writer) backendsFor(c shmring.Codec) []string {
	if c == s.Codec {
		return s.Backends
	}
	return nil
}

// reopen merges set into cur and opens the pattern and encoder for it.
func (s *Writer) reopen(cur, set Settings) (Settings, *nvenc.Encoder, *testpattern.Pattern, error) {
	next := cur
	if set.Codec != 0 {
		if set.Codec.IsRaw() {
			return cur, nil, nil, fmt.Errorf("settings: codec %s: an encoding source cannot switch to raw frames", set.Codec)
		}
		next.Codec = set.Codec
	}
	if set.FPS != 0 {
		if set.FPS < 1 || set.FPS > 240 {
			return cur, nil, nil, fmt.Errorf("settings: fps %d: want 1..240", set.FPS)
		}
		next.FPS = set.FPS
	}
	if set.Width != 0 || set.Height != 0 {
		next.Width, next.Height = set.Width, set.Height
	}
	if set.JPEGQuality != 0 {
		next.JPEGQuality = set.JPEGQuality
	}
	if set.BitrateKbps != 0 {
		next.BitrateKbps = set.BitrateKbps
	}
	pattern, err := testpattern.New(next.Width, next.Height, testpattern.I420)
	if err != nil {
		return cur, nil, nil, fmt.Errorf("settings: %w", err)
	}
	enc, err := s.openEncoder(next)
	if err != nil {
		return cur, nil, nil, fmt.Errorf("settings: %w", err)
	}
	return next, enc, pattern, nil
}

// ParseCodec reads a codec or raw pixel format by its name (h264, jpeg,
// i420, ...), in any case.
func ParseCodec(s string) (shmring.Codec, error) {
	for _, c := range []shmring.Codec{shmring.CodecH264, shmring.CodecHEVC, shmring.CodecJPEG,
		shmring.CodecI420, shmring.CodecNV12, shmring.CodecRGBA, shmring.CodecBGRA, shmring.CodecRGB24} {
		if strings.EqualFold(s, c.String()) {
			return c, nil
		}
	}
	return 0, fmt.Errorf("codec %q: want h264, hevc, jpeg, i420, nv12, rgba, bgra or rgb24", s)
}

// ParseResolution reads a picture size WxH.
func ParseResolution(s string) (w, h int, err error) {
	ws, hs, ok := strings.Cut(strings.ToLower(s), "x")
	if ok {
		w, err = strconv.Atoi(ws)
		if err == nil {
			h, err = strconv.Atoi(hs)
		}
	}
	if !ok || err != nil || w <= 0 || h <= 0 {
		return 0, 0, fmt.Errorf("resolution %q: want WxH, e.g. 1280x720", s)
	}
	return w, h, nil
}
