//go:build cgo

// Package recorder_test records real H.264 (libx264 through FFmpeg), telemetry,
// commands and a gate transition on a real JetStream server (the embedded
// nats-server module), exports windows of it with the sdr-caddy binary's
// `caddy sdr-export`, and checks the files with the reference readers:
// @mcap/core's stream and indexed readers (tests/node/mcap/check.mjs) for
// MCAP, ffprobe for MP4.
package recorder_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/mcap"
	"github.com/sdr-os/sdr-caddy/internal/natstest"
	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/nvenc/nvenctest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

const (
	testW, testH = 320, 240
	testGOP      = 30
	testFrames   = 90
)

// encoded is 90 access units of the test pattern from libx264, a keyframe
// every 30, as sdr_encoder or the simulator produce them.
var encoded = sync.OnceValues(func() ([]frame.Frame, error) {
	pkts, err := nvenctest.Pattern(testW, testH, 30, testGOP, testFrames, func(i int) time.Time { return time.Unix(0, int64(i)) })
	if err != nil {
		return nil, err
	}
	out := make([]frame.Frame, len(pkts))
	for i, p := range pkts {
		h := frame.Header{FrameSeq: uint64(i + 1), Size: uint32(len(p.Data)), Codec: frame.CodecH264}
		if p.Keyframe {
			h.Flags |= frame.FlagKeyframe
		}
		out[i] = frame.Frame{Header: h, Payload: p.Data}
	}
	return out, nil
})

// source is a frame.Source whose frames the test hands on.
type source struct {
	mu  sync.Mutex
	fns []func(frame.Frame)
}

func (s *source) Subscribe(fn func(frame.Frame)) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fns = append(s.fns, fn)
	i := len(s.fns) - 1
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.fns[i] = func(frame.Frame) {}
	}
}

func (s *source) LastArrival() time.Time { return time.Time{} }

func (s *source) push(f frame.Frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, fn := range s.fns {
		fn(f)
	}
}

type noKeyframes struct{}

func (noKeyframes) RequestKeyframe() {}

// recorded is what the test put into the recording.
type recorded struct {
	url    string
	rec    *recording.Recorder
	js     jetstream.JetStream
	frames []frame.Frame // with Arrived: the record times
	// other records, in order: topic and body
	others []struct{ topic, body string }
}

// record runs a recorder on an embedded JetStream server and feeds it the
// 90 frames at 30 fps in record time, a telemetry message every 10 frames
// (one not JSON), a published and a rejected command and a gate transition.
func record(t *testing.T) recorded {
	t.Helper()
	frames, err := encoded()
	if err != nil {
		t.Fatal(err)
	}
	s := natstest.Server(t, &server.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := natstest.Connect(t, s)
	// Batch -1: each frame is published as it comes, for the test waits on
	// each (the bursts are internal/recording's subject).
	r, err := recording.New(nc, recording.Config{Stream: recording.StreamConfig{MaxAge: time.Hour}, IDRInterval: -1, Batch: -1})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(func() { _ = r.Close() })
	testwait.For(t, "the recorder recording", func() bool { return r.Stats().State == recording.StateRecording })
	src := &source{}
	detach, err := r.AttachStream("front", src, noKeyframes{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(detach)
	pub := natstest.Connect(t, s)

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	out := recorded{url: s.ClientURL(), rec: r, js: js}
	other := func(topic, body string) {
		out.others = append(out.others, struct{ topic, body string }{topic, body})
	}
	wait := func(k recording.Kind, n uint64) {
		t.Helper()
		testwait.For(t, fmt.Sprintf("%d %s records", n, k), func() bool { return r.Stats().Records[k] >= n })
	}
	// Arrived is the record time the recorder stores: when the source read
	// the frame, as a ring reader stamps it.
	var tel uint64
	for i, f := range frames {
		f.Arrived = time.Now()
		out.frames = append(out.frames, f)
		src.push(f)
		wait(recording.KindVideo, uint64(i+1))
		if i%10 == 5 {
			body := fmt.Sprintf(`{"frame":%d}`, i)
			if i == 45 {
				body = "not json"
			}
			if err := pub.Publish("telemetry.odom", []byte(body)); err != nil {
				t.Fatal(err)
			}
			tel++
			wait(recording.KindTelemetry, tel)
			other("telemetry.odom", body)
		}
	}
	r.RecordCommand("front", "127.0.0.1:1", []byte(`{"action":"set_cmd_vel","cmd_seq":1}`), nil)
	wait(recording.KindCommand, 1)
	if err := pub.Publish("telemetry.safety.video_gate", []byte(`{"gated":true,"mode":"HOLD","stale_ms":1200}`)); err != nil {
		t.Fatal(err)
	}
	wait(recording.KindGate, 1)
	select {
	case <-r.JetStream().PublishAsyncComplete():
	case <-testwait.After(testwait.Default):
		t.Fatal("publishes not acknowledged")
	}
	return out
}

// export runs `caddy sdr-export` with args and returns its output and exit
// status.
func export(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithDeadline(context.Background(), testwait.Deadline(2*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.CaddyBin(t), append([]string{"sdr-export"}, args...)...)
	cmd.Env = append(os.Environ(), "SDR_NATS_URL=")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("sdr-export: %v\n%s", err, out)
	}
	return string(out), 0
}

// mcapReport is the part of check.mjs's output this test reads.
type mcapReport struct {
	Stream struct {
		Error *string `json:"error"`
	} `json:"stream"`
	Indexed struct {
		Error    *string `json:"error"`
		Channels []struct {
			ID              int               `json:"id"`
			Topic           string            `json:"topic"`
			MessageEncoding string            `json:"messageEncoding"`
			Metadata        map[string]string `json:"metadata"`
		} `json:"channels"`
		Messages       [][5]json.RawMessage `json:"messages"`
		DataSectionCRC uint32               `json:"dataSectionCrc"`
		DataCRC        uint32               `json:"dataSectionCrcComputed"`
		LayoutErrors   []string             `json:"layoutErrors"`
	} `json:"indexed"`
}

func checkMCAP(t *testing.T, path string) mcapReport {
	t.Helper()
	out := testenv.MCAPCheck(t, path)
	var r mcapReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("check.mjs printed %.300q: %v", out, err)
	}
	if r.Stream.Error != nil || r.Indexed.Error != nil {
		t.Fatalf("the reference readers failed: stream %v, indexed %v", deref(r.Stream.Error), deref(r.Indexed.Error))
	}
	if r.Indexed.DataSectionCRC != r.Indexed.DataCRC || len(r.Indexed.LayoutErrors) > 0 {
		t.Fatalf("data CRC %#x, computed %#x; layout errors %v", r.Indexed.DataSectionCRC, r.Indexed.DataCRC, r.Indexed.LayoutErrors)
	}
	return r
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// videoJSON is f as a foxglove.CompressedVideo message of stream front at
// its record time (the encoding itself is internal/mcap's, tested there).
func videoJSON(t *testing.T, f frame.Frame) []byte {
	b, err := mcap.MarshalCompressedVideo(uint64(f.Arrived.UnixNano()), "front", "h264", f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestExportMCAP exports the whole recording and a window, and reads both
// back with @mcap/core: every frame's bytes (inside the CompressedVideo
// JSON) and every other record in its channel, with the record times as log
// times.
func TestExportMCAP(t *testing.T) {
	rec := record(t)
	dir := t.TempDir()

	all := filepath.Join(dir, "all.mcap")
	out, code := export(t, "--nats", rec.url, "--out", all)
	if code != 0 {
		t.Fatalf("sdr-export exited %d:\n%s", code, out)
	}
	if !strings.Contains(out, fmt.Sprintf("wrote %s: %d frames", all, testFrames)) || !strings.Contains(out, "1 non-JSON bodies kept as base64") {
		t.Errorf("summary line:\n%s", out)
	}
	r := checkMCAP(t, all)
	topics := map[int]string{}
	for _, c := range r.Indexed.Channels {
		topics[c.ID] = c.Topic + " " + c.MessageEncoding + " " + c.Metadata["kind"]
	}
	var got []string
	var video []string
	for _, m := range r.Indexed.Messages {
		var ch int
		var logTime, dig string
		_ = json.Unmarshal(m[0], &ch)
		_ = json.Unmarshal(m[2], &logTime)
		_ = json.Unmarshal(m[4], &dig)
		if strings.HasPrefix(topics[ch], "video.front ") {
			video = append(video, logTime+" "+dig)
			continue
		}
		got = append(got, topics[ch]+" "+dig)
	}
	if len(video) != testFrames {
		t.Fatalf("%d video messages, want %d", len(video), testFrames)
	}
	for i, f := range rec.frames {
		want := strconv.FormatInt(f.Arrived.UnixNano(), 10) + " " + digest(videoJSON(t, f))
		if video[i] != want {
			t.Fatalf("video message %d is %s, want %s (log time and digest of the frame's CompressedVideo JSON)", i, video[i], want)
		}
	}
	var want []string
	for _, o := range rec.others {
		body := o.body
		if !json.Valid([]byte(body)) {
			b, _ := json.Marshal(map[string]string{"base64": base64.StdEncoding.EncodeToString([]byte(body))})
			body = string(b)
		}
		want = append(want, o.topic+" json telemetry "+digest([]byte(body)))
	}
	if len(got) != len(want)+2 {
		t.Fatalf("other messages:\n%s\nwant the telemetry, a command and a gate transition", strings.Join(got, "\n"))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("message %d: %s, want %s", i, got[i], want[i])
		}
	}
	if !strings.HasPrefix(got[len(want)], "command.front json command ") || !strings.HasPrefix(got[len(want)+1], "telemetry.safety.video_gate json gate ") {
		t.Errorf("last messages %q", got[len(want):])
	}

	// A window from frame 40 to 70: video from the keyframe 30.
	win := filepath.Join(dir, "win.mcap")
	from, to := rec.frames[40].Arrived, rec.frames[70].Arrived
	out, code = export(t, "--nats", rec.url, "--out", win, "--from", from.Format(time.RFC3339Nano), "--to", to.Format(time.RFC3339Nano))
	if code != 0 {
		t.Fatalf("sdr-export exited %d:\n%s", code, out)
	}
	r = checkMCAP(t, win)
	first := ""
	n := 0
	for _, m := range r.Indexed.Messages {
		var ch int
		var logTime string
		_ = json.Unmarshal(m[0], &ch)
		_ = json.Unmarshal(m[2], &logTime)
		for _, c := range r.Indexed.Channels {
			if c.ID == ch && c.Topic == "video.front" {
				if first == "" {
					first = logTime
				}
				n++
			}
		}
	}
	if want := strconv.FormatInt(rec.frames[testGOP].Arrived.UnixNano(), 10); first != want || n != 71-testGOP {
		t.Errorf("window: %d frames from log time %s, want %d from the keyframe at %s", n, first, 71-testGOP, want)
	}
}

// TestExportMP4 exports the video to MP4 and probes it with ffprobe: H.264
// at the recorded size, every frame of the window decodable, the duration
// of the record times.
func TestExportMP4(t *testing.T) {
	rec := record(t)
	path := filepath.Join(t.TempDir(), "front.mp4")
	from := rec.frames[45].Arrived // the window starts at the keyframe 30
	out, code := export(t, "--nats", rec.url, "--out", path, "--from", from.Format(time.RFC3339Nano), "--video", "front")
	if code != 0 {
		t.Fatalf("sdr-export exited %d:\n%s", code, out)
	}
	v := testenv.ProbeVideo(t, path)
	want := testFrames - testGOP
	if v.Codec != "h264" || v.W != testW || v.H != testH || v.ReadFrames != want {
		t.Errorf("ffprobe: %s %dx%d with %d frames, want h264 %dx%d with %d", v.Codec, v.W, v.H, v.ReadFrames, testW, testH, want)
	}
	// The record times make the timeline: from the keyframe to the last
	// frame, plus the last frame's own duration (the average interval).
	span := rec.frames[testFrames-1].Arrived.Sub(rec.frames[testGOP].Arrived).Seconds()
	avg := span / float64(want-1)
	if d, wantD := v.Duration, span+avg; d < wantD-avg-0.001 || d > wantD+avg+0.001 {
		t.Errorf("duration %.4f s, want %.4f s (the record times, within a frame)", d, wantD)
	}
}

// TestExportKeptWindow keeps a window of the recording that starts between
// two keyframes, purges the recording (its retention dropped it), and
// exports the kept stream with `caddy sdr-export --stream`: an MP4 that
// ffprobe reads, with the frames from the keyframe before the window on.
func TestExportKeptWindow(t *testing.T) {
	rec := record(t)
	at := rec.frames[testFrames-1].Arrived
	from := rec.frames[45].Arrived // between the keyframes 30 and 60
	k, err := rec.rec.Keep(recording.KeepRequest{Name: "wall", At: at, Before: at.Sub(from), Stream: "front", After: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the kept window copied", func() bool {
		w := rec.rec.KeptWindows()
		return len(w) == 1 && !w[0].Copying && w[0].Bytes > 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(testwait.Default))
	defer cancel()
	s, err := rec.js.Stream(ctx, recording.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "wall.mp4")
	out, code := export(t, "--nats", rec.url, "--stream", k.Stream, "--out", path)
	if code != 0 {
		t.Fatalf("sdr-export --stream %s exited %d:\n%s", k.Stream, code, out)
	}
	v := testenv.ProbeVideo(t, path)
	if want := testFrames - testGOP; v.Codec != "h264" || v.ReadFrames != want {
		t.Errorf("ffprobe of the kept window: %s with %d frames, want h264 with %d (from the keyframe before the window)", v.Codec, v.ReadFrames, want)
	}
	// The recording itself is empty now: exporting it writes nothing.
	if out, code := export(t, "--nats", rec.url, "--out", filepath.Join(t.TempDir(), "rec.mp4")); code != 1 {
		t.Errorf("export of the purged recording exited %d, want 1:\n%s", code, out)
	}
}

// TestExportErrors: a usage error exits 2 and writes nothing; a recording
// that is not there exits 1 and says which.
func TestExportErrors(t *testing.T) {
	s := natstest.Server(t, &server.Options{JetStream: true, StoreDir: t.TempDir()})
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--out", filepath.Join(dir, "x.avi")},
		{"--out", filepath.Join(dir, "x.mcap"), "--from", "yesterday"},
		{"--out", filepath.Join(dir, "x.mcap"), "--from", "-1m", "--to", "-2m"},
		{"--out", filepath.Join(dir, "x.mcap"), "--video", "front"},
		{"--from", "-1m"},
	} {
		out, code := export(t, append([]string{"--nats", s.ClientURL()}, args...)...)
		if code != 2 {
			t.Errorf("sdr-export %q exited %d, want 2:\n%s", args, code, out)
		}
	}
	out, code := export(t, "--nats", s.ClientURL(), "--out", filepath.Join(dir, "x.mcap"), "--stream", "NOPE")
	if code != 1 || !strings.Contains(out, "NOPE") || !strings.Contains(out, "stream not found") {
		t.Errorf("a missing recording: exit %d:\n%s", code, out)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files left behind: %v", ents)
	}
}
