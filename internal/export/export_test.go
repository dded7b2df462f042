package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/mcap"
	"github.com/sdr-os/sdr-caddy/internal/recording"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                                {},
		"now":                             now,
		"-2m":                             now.Add(-2 * time.Minute),
		"-1h30m":                          now.Add(-90 * time.Minute),
		"2026-12-04T09:00:00Z":            now.Add(-time.Hour),
		"2026-12-04T09:00:00.5+01:00":     time.Date(2026, 12, 4, 8, 0, 0, 5e8, time.UTC),
		"2026-12-04T09:00:00.5 01:00":     time.Date(2026, 12, 4, 8, 0, 0, 5e8, time.UTC), // a + that a URL made a space
		" 2026-12-04T09:00:00.000000001Z": time.Date(2026, 12, 4, 9, 0, 0, 1, time.UTC),
	} {
		got, err := ParseTime("from", in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, why := range map[string]string{
		"yesterday":            "not a time",
		"90s":                  "not a time",
		"+2m":                  "not a time",
		"2026-12-04":           "not a time",
		"-5":                   "not a duration",
		"-0s":                  "not before now",
		"2026-12-04T11:00:00Z": "in the future",
	} {
		if _, err := ParseTime("from", in, now); err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("from %q: %s; want an RFC 3339 time", in, why)) {
			t.Errorf("ParseTime(%q): %v, want %q", in, err, why)
		}
	}
}

// records is a Records over a slice.
func records(rs ...recording.Record) Records {
	return func(ctx context.Context, fn func(recording.Record) error) error {
		for _, r := range rs {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
}

func video(stream string, seq uint64, codec frame.Codec, key bool, payload []byte, t time.Time) recording.Record {
	h := frame.Header{FrameSeq: seq, Codec: codec, Size: uint32(len(payload))}
	if key {
		h.Flags |= frame.FlagKeyframe
	}
	return recording.Record{Kind: recording.KindVideo, Subject: stream, Time: t, Frame: &frame.Frame{Header: h, Payload: payload}}
}

// TestMCAPCounts: what the MCAP export writes and leaves out, as counted.
// (The files themselves are read back with the reference readers in
// tests/recorder.)
func TestMCAPCounts(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	recs := records(
		video("front", 1, frame.CodecH264, true, []byte{0, 0, 0, 1, 0x67}, t0),
		recording.Record{Kind: recording.KindTelemetry, Subject: "telemetry.odom", Time: t0.Add(1), Data: []byte(`{"x":1}`)},
		video("front", 2, frame.CodecH264, false, []byte{0, 0, 0, 1, 0x41}, t0.Add(2)),
		video("wrist", 1, frame.CodecJPEG, true, []byte{0xff, 0xd8}, t0.Add(3)),
		video("rear", 1, frame.CodecHEVC, true, []byte{0, 0, 0, 1, 0x40}, t0.Add(4)),
		recording.Record{Kind: recording.KindTelemetry, Subject: "telemetry.odom", Time: t0.Add(5), Data: []byte("\x00binary")},
		recording.Record{Kind: recording.KindCommand, Subject: "front", Time: t0.Add(6), Data: []byte(`{"action":"set_cmd_vel","outcome":"published"}`)},
		recording.Record{Kind: recording.KindGate, Subject: "telemetry.safety.video_gate", Time: t0.Add(7), Data: []byte(`{"gated":true}`)},
	)
	var buf bytes.Buffer
	st, err := MCAP(context.Background(), recs, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if st.Records != 8 || st.Frames != 3 || st.Telemetry != 2 || st.Commands != 1 || st.Gate != 1 || st.Wrapped != 1 || st.SkippedFrames != 1 {
		t.Errorf("stats %+v", st)
	}
	if strings.Join(st.Streams, ",") != "front,wrist,rear" || !st.First.Equal(t0) || !st.Last.Equal(t0.Add(7)) {
		t.Errorf("streams %v, first %v, last %v", st.Streams, st.First, st.Last)
	}
	if !bytes.HasPrefix(buf.Bytes(), mcap.Magic) || !bytes.HasSuffix(buf.Bytes(), mcap.Magic) {
		t.Error("not an MCAP file")
	}
	for _, topic := range []string{"video.front", "video.rear", "telemetry.odom", "command.front", "telemetry.safety.video_gate", `"base64"`, "h265"} {
		if !bytes.Contains(buf.Bytes(), []byte(topic)) {
			t.Errorf("%s missing from the file", topic)
		}
	}
	if bytes.Contains(buf.Bytes(), []byte("video.wrist")) {
		t.Error("a channel for the JPEG stream, which CompressedVideo does not carry")
	}
}

// TestExportStopsOnErrors: the reader's error and the writer's are
// returned; an MP4 of the wrong codec or without a keyframe is refused and
// leaves no file.
func TestExportStopsOnErrors(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	boom := errors.New("boom")
	failing := func(ctx context.Context, fn func(recording.Record) error) error { return boom }
	if _, err := MCAP(context.Background(), failing, &bytes.Buffer{}); !errors.Is(err, boom) {
		t.Errorf("MCAP: %v, want the reader's error", err)
	}
	full := writerFunc(func(p []byte) (int, error) { return 0, os.ErrClosed })
	if _, err := MCAP(context.Background(), records(), full); !errors.Is(err, os.ErrClosed) {
		t.Errorf("MCAP to a failing writer: %v", err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "x.mp4")
	if _, err := MP4(context.Background(), records(video("front", 1, frame.CodecHEVC, true, []byte{0, 0, 1, 0x40}, t0)), path, ""); err == nil || !strings.Contains(err.Error(), "takes H.264") {
		t.Errorf("HEVC to MP4: %v", err)
	}
	st, err := MP4(context.Background(), records(
		video("front", 1, frame.CodecH264, false, []byte{0, 0, 1, 0x41}, t0),
		video("rear", 1, frame.CodecH264, true, []byte{0, 0, 1, 0x65}, t0),
	), path, "")
	if !errors.Is(err, ErrNoVideo) || st.Video != "front" || st.SkippedFrames != 2 {
		t.Errorf("no keyframe: %v, stats %+v", err, st)
	}
	if _, err := MP4(context.Background(), records(), path, "front"); !errors.Is(err, ErrNoVideo) || !strings.Contains(err.Error(), `"front"`) {
		t.Errorf("empty window: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files left behind: %v", ents)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
