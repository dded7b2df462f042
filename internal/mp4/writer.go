package mp4

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Writer writes one MP4 file from recorded frames. It is not safe for
// concurrent use: one goroutine feeds it, then calls Close (or Abort).
type Writer struct {
	path, tmp     string
	width, height int

	mux     *muxer // nil until the first usable keyframe
	tl      timeline
	pending *sample // the last frame, written when its duration is known
	stats   Stats
	err     error // the first failure of the muxer; it ends the file
	closed  bool
}

// sample is a frame waiting for its duration.
type sample struct {
	pts      int64
	keyframe bool
	data     []byte
}

// NewWriter prepares an MP4 file of width x height pixels at path, for
// H.264 frames only: the caller checks the recording's codec (an HEVC or
// JPEG recording cannot go through it). Nothing appears at path before
// Close succeeds; the temporary file beside it is created now, so an
// unwritable directory fails here. The file is created with mode 0644.
func NewWriter(path string, width, height int) (*Writer, error) {
	if !compiled {
		return nil, ErrNotCompiled
	}
	if path == "" {
		return nil, errors.New("creating mp4: empty path")
	}
	if width <= 0 || height <= 0 {
		return nil, fmt.Errorf("creating mp4 %s: size %dx%d is not positive", path, width, height)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.part")
	if err != nil {
		return nil, fmt.Errorf("creating mp4 %s: %w", path, err)
	}
	tmp := f.Name()
	err = f.Chmod(0o644)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("creating mp4 %s: %w", path, err)
	}
	return &Writer{path: path, tmp: tmp, width: width, height: height}, nil
}

// WriteFrame adds one frame. Frames before the first keyframe that carries
// an SPS and a PPS are skipped (counted in Stats.Skipped). A frame without
// any NAL unit is rejected with an error and the writer goes on. A failure
// of FFmpeg's muxer ends the file: WriteFrame and Close return it, and
// Close removes the temporary file.
func (w *Writer) WriteFrame(f Frame) error {
	if w.closed {
		return errors.New("writing mp4 frame: writer is closed")
	}
	if w.err != nil {
		return w.err
	}
	nals, sps, pps := nalUnits(f.Data)
	if len(nals) == 0 {
		return fmt.Errorf("writing mp4 frame at %d ns: %d bytes hold no annex b nal unit", f.TimestampNS, len(f.Data))
	}
	if w.mux == nil {
		if !f.Keyframe || !sps || !pps {
			w.stats.Skipped++
			return nil
		}
		m, err := openMuxer(w.tmp, w.width, w.height, extradata(nals))
		if err != nil {
			w.err = fmt.Errorf("writing mp4 %s: %w", w.path, err)
			return w.err
		}
		w.mux = m
	}
	pts := w.tl.place(f.TimestampNS)
	w.stats.Rebased = w.tl.rebased
	if err := w.flush(pts); err != nil {
		return err
	}
	w.pending = &sample{pts: pts, keyframe: f.Keyframe, data: append([]byte(nil), f.Data...)}
	return nil
}

// flush writes the pending frame, which lasts until end.
func (w *Writer) flush(end int64) error {
	p := w.pending
	if p == nil {
		return nil
	}
	w.pending = nil
	if err := w.mux.write(p.pts, end-p.pts, p.keyframe, p.data); err != nil {
		w.err = fmt.Errorf("writing mp4 %s: frame %d at %d ticks: %w", w.path, w.stats.Frames, p.pts, err)
		return w.err
	}
	w.stats.Frames++
	w.stats.Duration = time.Duration(end) * time.Second / TimeBase
	return nil
}

// Stats reports what has been written and skipped so far.
func (w *Writer) Stats() Stats { return w.stats }

// Close writes the last frame (lasting the average frame interval) and the
// index, frees FFmpeg's resources and renames the file into place. With no
// frame written it returns an error wrapping ErrNoKeyframe and leaves no
// file; after a failure it returns that failure and leaves no file. A
// second Close returns nil.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.err
	if err == nil && w.pending != nil {
		err = w.flush(w.pending.pts + w.tl.interval())
	}
	if w.mux != nil {
		if err == nil {
			if terr := w.mux.finish(); terr != nil {
				err = fmt.Errorf("finishing mp4 %s: %w", w.path, terr)
			}
		}
		w.mux.free()
		w.mux = nil
	}
	if err == nil && w.stats.Frames == 0 {
		err = fmt.Errorf("writing mp4 %s: %d frames, all skipped: %w", w.path, w.stats.Skipped, ErrNoKeyframe)
	}
	if err != nil {
		os.Remove(w.tmp)
		return err
	}
	if rerr := os.Rename(w.tmp, w.path); rerr != nil {
		os.Remove(w.tmp)
		return fmt.Errorf("finishing mp4 %s: %w", w.path, rerr)
	}
	return nil
}

// Abort frees FFmpeg's resources and removes the temporary file: nothing
// appears at the path. It does nothing after Close.
func (w *Writer) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	if w.mux != nil {
		w.mux.free()
		w.mux = nil
	}
	os.Remove(w.tmp)
}
