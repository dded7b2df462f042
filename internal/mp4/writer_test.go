//go:build cgo

package mp4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/sdr-os/sdr-caddy/nvenc/nvenctest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

const (
	testW, testH = 320, 240
	testFrames   = 90
	testGOP      = 30
	// frameNS is the recorded frame interval: 30 fps.
	frameNS = uint64(time.Second / 30)
	// baseNS is the first recorded timestamp, a wall-clock time.
	baseNS = uint64(1764238272) * uint64(time.Second)
)

// recorded is what the simulator would have recorded: 90 access units from
// libx264 (through nvenc, as sdr_encoder makes them), a keyframe every 30.
var recorded = sync.OnceValues(func() ([]Frame, error) {
	at := func(i int) time.Time { return time.Unix(0, int64(baseNS+uint64(i)*frameNS)) }
	pkts, err := nvenctest.Pattern(testW, testH, 30, testGOP, testFrames, at)
	if err != nil {
		return nil, err
	}
	out := make([]Frame, len(pkts))
	for i, p := range pkts {
		out[i] = Frame{TimestampNS: uint64(at(i).UnixNano()), Keyframe: p.Keyframe, Data: p.Data}
	}
	return out, nil
})

func frames(t *testing.T) []Frame {
	t.Helper()
	fs, err := recorded()
	if err != nil {
		t.Fatalf("encoding the test recording with libx264: %v", err)
	}
	for i, f := range fs {
		_, sps, pps := nalUnits(f.Data)
		if want := i%testGOP == 0; f.Keyframe != want || sps != want || pps != want {
			t.Fatalf("frame %d: keyframe %v, sps %v, pps %v; want a keyframe with sps and pps every %d", i, f.Keyframe, sps, pps, testGOP)
		}
	}
	return fs
}

// remux writes fs to a new file and returns its path and the stats.
func remux(t *testing.T, fs []Frame) (string, Stats) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "out.mp4")
	w, err := NewWriter(path, testW, testH)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range fs {
		if err := w.WriteFrame(f); err != nil {
			w.Abort()
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path, w.Stats()
}

// probed is what ffprobe says of the file's video stream.
type probed struct{ testenv.Video }

func ffprobe(t *testing.T, path string) probed {
	t.Helper()
	return probed{testenv.ProbeVideo(t, path)}
}

// check asserts what every remuxed file must be: h264 at the size, n frames
// that all decode, the duration of n frames at 30 fps within one frame
// interval, presentation times strictly increasing, keyframes where given.
func (p probed) check(t *testing.T, n int, keys []int) {
	t.Helper()
	p.checkDuration(t, n, float64(n)/30, keys)
}

// checkDuration is check with another expected duration in seconds.
func (p probed) checkDuration(t *testing.T, n int, want float64, keys []int) {
	t.Helper()
	if p.Codec != "h264" || p.W != testW || p.H != testH {
		t.Errorf("stream %s %dx%d, want h264 %dx%d", p.Codec, p.W, p.H, testW, testH)
	}
	if p.ReadFrames != n || p.NbFrames != n || len(p.PTS) != n {
		t.Errorf("%d frames decoded, %d in the index, %d packets; want %d", p.ReadFrames, p.NbFrames, len(p.PTS), n)
	}
	if math.Abs(p.Duration-want) > 1.0/30 {
		t.Errorf("duration %.4f s, want %.4f s within one frame interval", p.Duration, want)
	}
	for i := 1; i < len(p.PTS); i++ {
		if p.PTS[i] <= p.PTS[i-1] {
			t.Errorf("packet %d at %.6f s, not after packet %d at %.6f s", i, p.PTS[i], i-1, p.PTS[i-1])
		}
	}
	if len(p.PTS) > 0 && p.PTS[0] != 0 {
		t.Errorf("first packet at %.6f s, want 0", p.PTS[0])
	}
	if keys != nil && !equalInts(p.Keys, keys) {
		t.Errorf("keyframes at packets %v, want %v", p.Keys, keys)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// demux reads the file back with FFmpeg's mov demuxer and returns the
// stream's extradata and each sample's NAL units (4-byte length prefixed in
// the file).
func demux(t *testing.T, path string) (extra []byte, samples [][][]byte) {
	t.Helper()
	fc := astiav.AllocFormatContext()
	defer fc.Free()
	if err := fc.OpenInput(path, nil, nil); err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	defer fc.CloseInput()
	extra = fc.Streams()[0].CodecParameters().ExtraData()
	pkt := astiav.AllocPacket()
	defer pkt.Free()
	for {
		err := fc.ReadFrame(pkt)
		if errors.Is(err, astiav.ErrEof) {
			return extra, samples
		}
		if err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		b := pkt.Data()
		pkt.Unref()
		var nals [][]byte
		for len(b) > 0 {
			if len(b) < 4 || int(binary.BigEndian.Uint32(b)) > len(b)-4 {
				t.Fatalf("sample %d: bad length prefix", len(samples))
			}
			n := int(binary.BigEndian.Uint32(b))
			nals = append(nals, b[4:4+n])
			b = b[4+n:]
		}
		samples = append(samples, nals)
	}
}

// topBoxes lists the types of the file's top-level boxes.
func topBoxes(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for len(b) >= 8 {
		size := uint64(binary.BigEndian.Uint32(b))
		if size == 1 && len(b) >= 16 {
			size = binary.BigEndian.Uint64(b[8:])
		}
		if size < 8 || size > uint64(len(b)) {
			t.Fatalf("box %q: size %d of %d bytes left", b[4:8], size, len(b))
		}
		types = append(types, string(b[4:8]))
		b = b[size:]
	}
	if len(b) != 0 {
		t.Fatalf("%d bytes after the last box", len(b))
	}
	return types
}

// TestRemux: 90 frames at 30 fps with a keyframe every 30 become an MP4 that
// ffprobe reads as h264, whose 90 frames all decode, 3 s long, with sync
// samples at the keyframes; every sample holds the recorded NAL units byte
// for byte (no re-encode), and the avcC box holds the first keyframe's SPS
// and PPS. The index (moov) comes before the media data.
func TestRemux(t *testing.T) {
	t.Parallel()
	fs := frames(t)
	path, st := remux(t, fs)
	if st.Frames != testFrames || st.Skipped != 0 || st.Rebased != 0 {
		t.Errorf("stats %+v, want 90 frames, none skipped or rebased", st)
	}
	if st.Duration != 3*time.Second {
		t.Errorf("stats duration %v, want 3s", st.Duration)
	}
	ffprobe(t, path).check(t, testFrames, []int{0, 30, 60})
	if boxes := topBoxes(t, path); strings.Join(boxes, " ") != "ftyp moov free mdat" {
		t.Errorf("top-level boxes %v, want ftyp moov free mdat (moov first: faststart)", boxes)
	}

	extra, samples := demux(t, path)
	if len(extra) < 7 || extra[0] != 1 {
		t.Fatalf("extradata % x is not an avcC record", extra)
	}
	first, _, _ := nalUnits(fs[0].Data)
	for _, n := range first {
		if typ := n[0] & 0x1f; (typ == 7 || typ == 8) && !bytes.Contains(extra, n) {
			t.Errorf("avcC lacks the first keyframe's nal unit of type %d", typ)
		}
	}
	if len(samples) != testFrames {
		t.Fatalf("%d samples, want %d", len(samples), testFrames)
	}
	for i, s := range samples {
		want, _, _ := nalUnits(fs[i].Data)
		if len(s) != len(want) {
			t.Fatalf("sample %d: %d nal units, want %d", i, len(s), len(want))
		}
		for j := range s {
			if !bytes.Equal(s[j], want[j]) {
				t.Fatalf("sample %d nal unit %d differs from the recorded one", i, j)
			}
		}
	}
}

// TestRemuxStartsMidGOP: a recording that starts at frame 10 of a GOP
// skips frames 10 to 29 and starts the file at the keyframe of frame 30.
// Frame 10 carries an SPS and a PPS but is no keyframe: skipped too.
func TestRemuxStartsMidGOP(t *testing.T) {
	t.Parallel()
	all := frames(t)
	fs := append([]Frame(nil), all[10:]...)
	nals, _, _ := nalUnits(all[0].Data)
	fs[0].Data = append(extradata(nals), fs[0].Data...)
	path, st := remux(t, fs)
	if st.Frames != 60 || st.Skipped != 20 {
		t.Errorf("stats %+v, want 60 frames written and 20 skipped", st)
	}
	ffprobe(t, path).check(t, 60, []int{0, 30})
}

// TestRemuxTimestampBackwards: the recorded clock steps back 5 s at frame
// 45 (a writer restarted with another clock). That frame is placed one
// frame interval after frame 44, the rest keep their spacing: the file
// stays valid, 90 frames, 3 s.
func TestRemuxTimestampBackwards(t *testing.T) {
	t.Parallel()
	fs := append([]Frame(nil), frames(t)...)
	for i := 45; i < len(fs); i++ {
		fs[i].TimestampNS -= 5 * uint64(time.Second)
	}
	path, st := remux(t, fs)
	if st.Frames != testFrames || st.Rebased != 1 {
		t.Errorf("stats %+v, want 90 frames, 1 rebased", st)
	}
	p := ffprobe(t, path)
	p.check(t, testFrames, []int{0, 30, 60})
	if d := p.PTS[45] - p.PTS[44]; math.Abs(d-1.0/30) > 0.001 {
		t.Errorf("frame 45 is %.4f s after frame 44, want one frame interval", d)
	}
}

// TestRemuxRepeatedTimestamp: a timestamp equal to the one before is moved
// one frame interval after it too, and the frames after it keep their
// spacing from it: the file is one frame interval longer than recorded.
func TestRemuxRepeatedTimestamp(t *testing.T) {
	t.Parallel()
	fs := append([]Frame(nil), frames(t)[:testGOP]...)
	fs[10].TimestampNS = fs[9].TimestampNS
	path, st := remux(t, fs)
	if st.Frames != testGOP || st.Rebased != 1 {
		t.Errorf("stats %+v, want 30 frames, 1 rebased", st)
	}
	p := ffprobe(t, path)
	p.checkDuration(t, testGOP, float64(testGOP+1)/30, []int{0})
	// Frame 10 moves one interval after frame 9; frame 11 keeps its
	// recorded distance from frame 10, two intervals.
	for i, want := range map[int]float64{10: 1.0 / 30, 11: 2.0 / 30, 12: 1.0 / 30} {
		if d := p.PTS[i] - p.PTS[i-1]; math.Abs(d-want) > 0.001 {
			t.Errorf("frame %d is %.4f s after frame %d, want %.4f s", i, d, i-1, want)
		}
	}
}

// TestRemuxNoKeyframe: an empty recording, and one of P-frames only, give
// ErrNoKeyframe from Close and leave no file, not even a temporary one;
// a file already at the path is left as it was.
func TestRemuxNoKeyframe(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		fs   []Frame
	}{
		{"empty", nil},
		{"p-frames only", frames(t)[1:testGOP]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "out.mp4")
			if err := os.WriteFile(path, []byte("old export"), 0o644); err != nil {
				t.Fatal(err)
			}
			w, err := NewWriter(path, testW, testH)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.fs {
				if err := w.WriteFrame(f); err != nil {
					t.Fatal(err)
				}
			}
			err = w.Close()
			if !errors.Is(err, ErrNoKeyframe) {
				t.Fatalf("Close: %v, want ErrNoKeyframe", err)
			}
			if st := w.Stats(); st.Frames != 0 || st.Skipped != len(tc.fs) {
				t.Errorf("stats %+v, want 0 frames and %d skipped", st, len(tc.fs))
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 || ents[0].Name() != "out.mp4" {
				t.Errorf("directory holds %v, want only the old out.mp4", ents)
			}
			if b, _ := os.ReadFile(path); string(b) != "old export" {
				t.Errorf("the existing file was changed: %q", b)
			}
		})
	}
}

// TestRemuxAbort: an aborted export leaves nothing behind.
func TestRemuxAbort(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w, err := NewWriter(filepath.Join(dir, "out.mp4"), testW, testH)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames(t)[:40] {
		if err := w.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	w.Abort()
	if err := w.Close(); err != nil {
		t.Errorf("Close after Abort: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("directory holds %v after Abort, want nothing", ents)
	}
}

// TestRemuxBadFrame: a frame without any NAL unit is refused with an error
// and loses nothing: the frames around it are written.
func TestRemuxBadFrame(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "out.mp4")
	w, err := NewWriter(path, testW, testH)
	if err != nil {
		t.Fatal(err)
	}
	fs := frames(t)[:testGOP]
	for i, f := range fs {
		if i == 5 {
			for _, bad := range [][]byte{nil, {0, 0, 0, 0}, {1, 2, 3, 4}} {
				if err := w.WriteFrame(Frame{TimestampNS: f.TimestampNS, Data: bad}); err == nil || !strings.Contains(err.Error(), "no annex b nal unit") {
					t.Errorf("bad frame % x: %v", bad, err)
				}
			}
		}
		if err := w.WriteFrame(f); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	ffprobe(t, path).check(t, testGOP, []int{0})
}

// TestNewWriterErrors: a bad size or an unwritable directory fails at once,
// naming the path.
func TestNewWriterErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		path string
		w, h int
		want string
	}{
		{"", testW, testH, "empty path"},
		{filepath.Join(dir, "a.mp4"), 0, testH, "size 0x240"},
		{filepath.Join(dir, "missing", "a.mp4"), testW, testH, "missing/a.mp4"},
	} {
		if _, err := NewWriter(tc.path, tc.w, tc.h); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewWriter(%q, %d, %d): %v, want an error with %q", tc.path, tc.w, tc.h, err, tc.want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("directory holds %v, want nothing", ents)
	}
}
