// Package mp4 remuxes recorded H.264 access units into an MP4 file through
// FFmpeg (go-astiav v0.16.0, cgo), without re-encoding.
//
// What the file contains: one H.264 video track (sample entry avc1) and
// nothing else. Every written frame becomes one sample holding the frame's
// NAL units unchanged; only the Annex B start codes are replaced by the
// 4-byte lengths that MP4 requires (FFmpeg's mp4 muxer does that). The
// decoder configuration (the avcC box) is built from the SPS and PPS of the
// first keyframe; the SPS and PPS that keyframes carry in-band stay in their
// samples, so a decoder also follows a parameter change later in the
// recording. Keyframes are marked as sync samples, so players seek to them.
// The moov box is written at the front of the file (faststart), so the file
// plays while it downloads.
//
// Timing comes from the recording: a frame's presentation time is its
// TimestampNS minus that of the first written frame, in a 90 kHz time base
// (the usual clock of video, 11.1 µs resolution, exact for 24, 25, 30, 50
// and 60 fps, and below the 100 kHz where FFmpeg's mp4 muxer warns that some
// players cannot read the file). A frame lasts until the next one; the last
// frame lasts the average frame interval of the file (1/30 s when it holds
// a single frame). The stream is taken to have no B-frames (the simulator
// and sdr_encoder produce none): decoding time equals presentation time. A
// stream with B-frames still gives a valid file, but its pictures are shown
// in decoding order.
//
// What is skipped: every frame before the first keyframe that carries an
// SPS and a PPS (a recording that starts mid-GOP cannot be decoded until
// then); Stats.Skipped counts them. A timestamp that is not after the one
// before it (a writer restarted with another clock) does not make the file
// invalid: that frame is placed one average frame interval after the frame
// before it, and the frames after it keep their spacing from it; Stats.Rebased
// counts such steps.
//
// The file appears at its path only when Close succeeds: the writer writes
// a temporary file beside it (".NAME.*.part") and renames it over the path at
// the end, so an existing file is replaced only by a complete one. A
// recording without a usable keyframe gives ErrNoKeyframe from Close and no
// file.
//
// Built without cgo the package still compiles: NewWriter returns
// ErrNotCompiled. The package imports nothing from Caddy.
package mp4

import (
	"errors"
	"time"
)

// ErrNotCompiled is returned by NewWriter in a build without cgo.
var ErrNotCompiled = errors.New("mp4 export is not compiled in: this binary was built without cgo (CGO_ENABLED=0); rebuild with cgo and FFmpeg's development libraries to export")

// ErrNoKeyframe is returned (wrapped) by Close when no frame was written
// because no keyframe with an SPS and a PPS ever came; no file is left.
var ErrNoKeyframe = errors.New("no keyframe with sps and pps: nothing to export")

// TimeBase is the denominator of the track's time base: 90 kHz ticks.
const TimeBase = 90000

// defaultTicks is how long the only frame of a one-frame file lasts: 1/30 s.
const defaultTicks = TimeBase / 30

// Frame is one recorded access unit.
type Frame struct {
	// TimestampNS is the frame's time in nanoseconds, as recorded.
	TimestampNS uint64
	// Keyframe is set on IDR frames.
	Keyframe bool
	// Data is the access unit: H.264 NAL units with Annex B start codes.
	// WriteFrame copies what it keeps; the caller may reuse the buffer.
	Data []byte
}

// Stats counts what a Writer did.
type Stats struct {
	// Frames is the number of frames written (samples in the file).
	Frames int
	// Skipped is the number of frames dropped before the first keyframe
	// that carries an SPS and a PPS.
	Skipped int
	// Rebased is the number of frames whose timestamp was not after the
	// one before and that were moved after it (see the package comment).
	Rebased int
	// Duration is the track's duration so far: the span from the first
	// written frame to the end of the last (the last one's duration
	// counted only once Close has written it).
	Duration time.Duration
}

// timeline turns recorded nanosecond timestamps into strictly increasing
// 90 kHz ticks starting at 0.
type timeline struct {
	started bool
	origin  uint64 // TimestampNS of the first frame
	shift   int64  // ticks added after rebasing
	first   int64  // ticks of the first frame (0)
	last    int64  // ticks of the last frame
	n       int    // frames placed
	rebased int
}

// ticks converts the nanoseconds from origin to ts into 90 kHz ticks,
// rounded to nearest; negative when ts is before origin. No overflow for
// any pair of uint64 timestamps.
func ticks(origin, ts uint64) int64 {
	neg := ts < origin
	d := ts - origin
	if neg {
		d = origin - ts
	}
	// 90000/1e9 = 9/100000.
	t := int64(d/1e9*TimeBase + (d%1e9*9+50000)/100000)
	if neg {
		return -t
	}
	return t
}

// place returns the frame's ticks.
func (tl *timeline) place(ts uint64) int64 {
	if !tl.started {
		tl.started = true
		tl.origin = ts
		tl.n = 1
		return 0
	}
	t := ticks(tl.origin, ts) + tl.shift
	if t <= tl.last {
		want := tl.last + tl.interval()
		tl.shift += want - t
		t = want
		tl.rebased++
	}
	tl.last = t
	tl.n++
	return t
}

// interval is the average frame interval so far in ticks (at least 1), or
// 1/30 s before there are two frames.
func (tl *timeline) interval() int64 {
	if tl.n < 2 {
		return defaultTicks
	}
	if d := (tl.last - tl.first) / int64(tl.n-1); d > 0 {
		return d
	}
	return 1
}

// nalUnits returns the NAL units of an Annex B access unit, without start
// codes, and reports whether it holds an SPS and a PPS.
func nalUnits(b []byte) (nals [][]byte, sps, pps bool) {
	start := -1
	for i := 0; i+2 < len(b); {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				nals = appendNAL(nals, b[start:i])
			}
			i += 3
			start = i
			continue
		}
		i++
	}
	if start >= 0 {
		nals = appendNAL(nals, b[start:])
	}
	for _, n := range nals {
		switch n[0] & 0x1f {
		case 7:
			sps = true
		case 8:
			pps = true
		}
	}
	return nals, sps, pps
}

// appendNAL appends n without the zero bytes that end it (the first byte of
// a 4-byte start code, trailing_zero_8bits); an empty unit is dropped.
func appendNAL(nals [][]byte, n []byte) [][]byte {
	for len(n) > 0 && n[len(n)-1] == 0 {
		n = n[:len(n)-1]
	}
	if len(n) == 0 {
		return nals
	}
	return append(nals, n)
}

// extradata is the SPS and PPS units of an access unit in Annex B form, the
// form FFmpeg's mp4 muxer turns into the avcC box.
func extradata(nals [][]byte) []byte {
	var out []byte
	for _, n := range nals {
		if t := n[0] & 0x1f; t == 7 || t == 8 {
			out = append(out, 0, 0, 0, 1)
			out = append(out, n...)
		}
	}
	return out
}
