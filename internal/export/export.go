// Package export turns a window of a flight-recorder recording into a file
// that other tools open: MCAP (every kind of record, for Foxglove and the
// ROS 2 tooling) or MP4 (one video stream, remuxed without re-encoding, for
// any video player). It reads records through a Records function, so that
// the same code serves the sdr-export command, the admin API and the tests;
// FromJetStream reads them from a recording on JetStream.
//
// It imports nothing from Caddy.
package export

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/mcap"
	"github.com/sdr-os/sdr-caddy/internal/mp4"
	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/nvenc"
)

// Records calls fn for every record of a window, in recorded order, and
// returns fn's first error.
type Records func(ctx context.Context, fn func(recording.Record) error) error

// FromJetStream reads the records of opts from a recording on JetStream.
// The reader's counts (frames skipped as incomplete or undecodable,
// malformed messages) are stored in *st when st is not nil.
func FromJetStream(js jetstream.JetStream, opts recording.ReadOptions, st *recording.ReadStats) Records {
	return func(ctx context.Context, fn func(recording.Record) error) error {
		s, err := recording.Read(ctx, js, opts, fn)
		if st != nil {
			*st = s
		}
		return err
	}
}

// Stats count what an export wrote and what it left out.
type Stats struct {
	Records   uint64 // records read
	Frames    uint64 // video frames written
	Telemetry uint64 // telemetry messages written
	Commands  uint64 // commands written
	Gate      uint64 // gate transitions written
	// Wrapped counts telemetry, command and gate bodies that were not JSON:
	// MCAP gets {"base64": "<the body>"} instead, nothing is lost.
	Wrapped uint64
	// SkippedFrames counts video frames left out: in MCAP, frames of a codec
	// that foxglove.CompressedVideo does not carry (JPEG, raw pixels); in
	// MP4, frames before the first keyframe with its SPS and PPS, and the
	// frames of the other video streams.
	SkippedFrames uint64
	// Streams are the names of the recording's video streams seen in the
	// window, in the order they first appeared.
	Streams []string
	// Video is the video stream an MP4 export holds.
	Video string
	// Duration is the MP4's duration.
	Duration time.Duration
	// First and Last are the record times of the first and last record
	// written (zero when none was).
	First, Last time.Time
}

func (s *Stats) seen(name string) {
	if !slices.Contains(s.Streams, name) {
		s.Streams = append(s.Streams, name)
	}
}

func (s *Stats) wrote(t time.Time) {
	if s.First.IsZero() || t.Before(s.First) {
		s.First = t
	}
	if t.After(s.Last) {
		s.Last = t
	}
}

// videoFormat is the foxglove.CompressedVideo format of a codec; "" for the
// codecs it does not carry.
func videoFormat(c frame.Codec) string {
	switch c {
	case frame.CodecH264:
		return "h264"
	case frame.CodecHEVC:
		return "h265"
	}
	return ""
}

// Topics of an MCAP export: the recording's subjects without its prefix.
// Telemetry and gate records keep the subject they came on
// (telemetry.odom, telemetry.safety.video_gate); video and commands are
// video.<stream> and command.<stream>.
func topic(r recording.Record) string {
	switch r.Kind {
	case recording.KindVideo:
		return "video." + r.Subject
	case recording.KindCommand:
		return "command." + r.Subject
	}
	return r.Subject
}

func timeNS(t time.Time) uint64 {
	if ns := t.UnixNano(); ns > 0 {
		return uint64(ns)
	}
	return 0
}

// MCAP writes the records as an MCAP file to w (see package mcap for the
// layout): video as foxglove.CompressedVideo, one message per frame, on
// video.<stream>; telemetry, commands and gate transitions as JSON on a
// channel per subject. Log and publish times are the record times; a video
// message's timestamp is its record time too, and its sequence is the low
// 32 bits of the frame's frame_seq (other channels count from 1). w is not
// closed.
func MCAP(ctx context.Context, recs Records, w io.Writer) (Stats, error) {
	var st Stats
	mw, err := mcap.NewWriter(w, mcap.Options{Profile: ""})
	if err != nil {
		return st, err
	}
	channels := map[string]uint16{}
	seqs := map[uint16]uint32{}
	channel := func(r recording.Record) (uint16, error) {
		t := topic(r)
		if id, ok := channels[t]; ok {
			return id, nil
		}
		meta := map[string]string{"kind": r.Kind.String()}
		var id uint16
		var err error
		if r.Kind == recording.KindVideo {
			meta["stream"] = r.Subject
			meta["codec"] = r.Frame.Header.Codec.String()
			id, err = mw.AddCompressedVideoChannel(t, meta)
		} else {
			id, err = mw.AddJSONChannel(t, meta)
		}
		if err != nil {
			return 0, err
		}
		channels[t] = id
		return id, nil
	}
	err = recs(ctx, func(r recording.Record) error {
		st.Records++
		var data []byte
		var seq uint32
		switch r.Kind {
		case recording.KindVideo:
			st.seen(r.Subject)
			format := videoFormat(r.Frame.Header.Codec)
			if format == "" {
				st.SkippedFrames++
				return nil
			}
			b, err := mcap.MarshalCompressedVideo(timeNS(r.Time), r.Subject, format, r.Frame.Payload)
			if err != nil {
				return err
			}
			data, seq = b, uint32(r.Frame.Header.FrameSeq)
		default:
			data = r.Data
			if !json.Valid(data) {
				st.Wrapped++
				data, _ = json.Marshal(struct {
					Base64 string `json:"base64"`
				}{base64.StdEncoding.EncodeToString(r.Data)})
			}
		}
		id, err := channel(r)
		if err != nil {
			return err
		}
		if r.Kind != recording.KindVideo {
			seqs[id]++
			seq = seqs[id]
		}
		t := timeNS(r.Time)
		if err := mw.WriteMessage(id, seq, t, t, data); err != nil {
			return err
		}
		switch r.Kind {
		case recording.KindVideo:
			st.Frames++
		case recording.KindTelemetry:
			st.Telemetry++
		case recording.KindCommand:
			st.Commands++
		case recording.KindGate:
			st.Gate++
		}
		st.wrote(r.Time)
		return nil
	})
	if err != nil {
		return st, err
	}
	if err := mw.Close(); err != nil {
		return st, err
	}
	return st, nil
}

// ErrNoVideo is returned by MP4 when the window holds no video frame of the
// chosen stream.
var ErrNoVideo = errors.New("no video in the window")

// MP4 writes one video stream of the records as an MP4 file at path (see
// package mp4: one H.264 track, the frames as recorded, no re-encode; the
// file appears only when it is complete). video names the stream; empty
// takes the first one in the window, and the frames of any other are
// counted in SkippedFrames (Stats.Streams lists them all). The picture size
// comes from the first keyframe's SPS; frames before it are skipped. Only
// H.264 is taken: another codec is an error.
func MP4(ctx context.Context, recs Records, path, video string) (Stats, error) {
	var st Stats
	st.Video = video
	var w *mp4.Writer
	err := recs(ctx, func(r recording.Record) error {
		st.Records++
		if r.Kind != recording.KindVideo {
			return nil
		}
		st.seen(r.Subject)
		if st.Video == "" {
			st.Video = r.Subject
		}
		if r.Subject != st.Video {
			st.SkippedFrames++
			return nil
		}
		h := r.Frame.Header
		if h.Codec != frame.CodecH264 {
			return fmt.Errorf("mp4 export takes H.264; stream %q is %s (export it to .mcap instead)", st.Video, h.Codec)
		}
		if w == nil {
			if !h.Keyframe() {
				st.SkippedFrames++
				return nil
			}
			width, height, ok := pictureSize(r.Frame.Payload)
			if !ok {
				st.SkippedFrames++
				return nil
			}
			var err error
			if w, err = mp4.NewWriter(path, width, height); err != nil {
				return err
			}
		}
		err := w.WriteFrame(mp4.Frame{TimestampNS: timeNS(r.Time), Keyframe: h.Keyframe(), Data: r.Frame.Payload})
		if err != nil {
			return fmt.Errorf("frame %d of %q: %w", h.FrameSeq, st.Video, err)
		}
		st.wrote(r.Time)
		return nil
	})
	if err != nil {
		if w != nil {
			w.Abort()
		}
		return st, err
	}
	if w == nil {
		if st.Video != "" {
			return st, fmt.Errorf("stream %q: %w: no keyframe with its SPS and PPS among %d frames", st.Video, ErrNoVideo, st.SkippedFrames)
		}
		if video != "" {
			return st, fmt.Errorf("stream %q: %w", video, ErrNoVideo)
		}
		return st, ErrNoVideo
	}
	if err := w.Close(); err != nil {
		return st, err
	}
	ms := w.Stats()
	st.Frames = uint64(ms.Frames)
	st.SkippedFrames += uint64(ms.Skipped)
	st.Duration = ms.Duration
	return st, nil
}

// pictureSize reads width and height from the SPS in an Annex B access unit.
func pictureSize(au []byte) (width, height int, ok bool) {
	for _, nal := range nvenc.SplitNALUnits(au) {
		if len(nal) == 0 || nal[0]&0x1f != 7 {
			continue
		}
		sps, err := nvenc.ParseSPS(nal)
		if err != nil || sps.Width <= 0 || sps.Height <= 0 {
			return 0, 0, false
		}
		return sps.Width, sps.Height, true
	}
	return 0, 0, false
}

// ParseTime reads a bound of the export's window as recording.ParseTime
// does (RFC 3339, now, or a negative duration before now); empty is the
// zero time: the recording's start for from, its end for to. what names
// the value in the error.
func ParseTime(what, v string, now time.Time) (time.Time, error) {
	if v = strings.TrimSpace(v); v == "" {
		return time.Time{}, nil
	}
	return recording.ParseTime(what, v, now)
}

// WriteFile exports recs to the file out in format, "mcap" or "mp4" (video
// names the MP4's stream, as for MP4). The file is written beside out and
// renamed into place once complete: out is never left half-written, and an
// existing out is replaced only by a complete export.
func WriteFile(ctx context.Context, recs Records, out, format, video string) (Stats, error) {
	switch format {
	case "mp4":
		return MP4(ctx, recs, out, video)
	case "mcap":
	default:
		return Stats{}, fmt.Errorf("format %q: want mcap or mp4", format)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.part")
	if err != nil {
		return Stats{}, err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	st, err := MCAP(ctx, recs, tmp)
	if err != nil {
		return st, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return st, err
	}
	if err := tmp.Close(); err != nil {
		return st, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return st, err
	}
	done = true
	return st, nil
}
