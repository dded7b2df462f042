// Package encoder holds the live tests of the sdr_encoder app and the
// sdr-nvenc-probe command, run against the built binary with real peers: the
// Python ring writer of tests/python, WebSocket clients, FFmpeg's decoder
// and the ffmpeg command line.
package encoder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testpattern"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/nvenc"
	"github.com/sdr-os/sdr-caddy/shmring"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestProbeCommandNoDriver runs `caddy sdr-nvenc-probe` on this GPU-less
// machine: exit status 2 and a JSON report saying why.
func TestProbeCommandNoDriver(t *testing.T) {
	if _, err := os.Stat("/proc/driver/nvidia/version"); err == nil {
		t.Skip("this machine has an NVIDIA driver: see scripts in tests/encoder/gpu_check.sh")
	}
	bin := testenv.CaddyBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(2*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "sdr-nvenc-probe", "--compact")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != nvenc.ExitNoDriver {
		t.Fatalf("exit: %v, want status 2\nstdout %s\nstderr %s", err, stdout.String(), stderr.String())
	}
	var rep nvenc.ProbeReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, stdout.String())
	}
	if rep.ExitCode != 2 || rep.Driver.Present || !strings.Contains(rep.Verdict, "no NVIDIA driver") || rep.Fallback["h264"] != "libx264" {
		t.Errorf("report %+v", rep)
	}
	if len(rep.Functional) == 0 || rep.Functional[0].Backend != "h264_nvenc" || rep.Functional[0].OK || len(rep.Functional[0].Log) == 0 {
		t.Errorf("functional probe %+v: want h264_nvenc failing with FFmpeg's log", rep.Functional)
	}
}

const (
	rawW, rawH = 320, 240
	rawFrames  = 240
)

// pythonWriter renders the test pattern into a file and starts the Python
// ring writer (tests/python/sdr_ring.py's Writer) committing one raw I420
// frame every 33 ms into path, each with the commit time stamped in the
// picture as its frame_id. It returns the stamps by frame number.
func pythonWriter(t *testing.T, path string) map[uint64]testpattern.Stamp {
	t.Helper()
	dir := t.TempDir()
	pat, err := testpattern.New(rawW, rawH, testpattern.I420)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "frames.yuv"))
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(time.Second)
	stamps := map[uint64]testpattern.Stamp{}
	var ids []int64
	buf := make([]byte, pat.Size())
	for i := 0; i < rawFrames; i++ {
		ts := base.Add(time.Duration(i) * 33 * time.Millisecond)
		buf = pat.Render(buf, uint64(i), ts)
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
		stamps[uint64(i)] = testpattern.Stamp{Frame: uint64(i), Time: ts}
		ids = append(ids, ts.UnixNano())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	idsJSON, _ := json.Marshal(ids)
	if err := os.WriteFile(filepath.Join(dir, "ids.json"), idsJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`
import json, struct, sys, time
sys.path.insert(0, %q)
import sdr_ring
ids = json.load(open(%q))
w = sdr_ring.Writer(%q, 1 << 20)
fs = %d * %d * 3 // 2
desc = struct.pack("<IIII", %d, %d, %d, 0)
with open(%q, "rb") as f:
    for i, fid in enumerate(ids):
        w.write(fid, i + 1, 0, 19, desc + f.read(fs))
        time.sleep(0.033)
w.close()
`, filepath.Join(testenv.Root(), "tests", "python"), filepath.Join(dir, "ids.json"), path,
		rawW, rawH, rawW, rawH, rawW, filepath.Join(dir, "frames.yuv"))
	testenv.Start(t, "python writer", exec.Command("python3", "-c", script), 5*time.Second)
	return stamps
}

func dialVideo(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	var (
		c   *websocket.Conn
		err error
	)
	if !testwait.Until(20*time.Second, func() bool {
		c, _, err = websocket.DefaultDialer.Dial(url, nil)
		return err == nil
	}) {
		t.Fatalf("dialing %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(testwait.Deadline(60 * time.Second))
	return c
}

func lumaPSNR(a []byte, as int, b []byte, bs, w, h int) float64 {
	var se float64
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			d := float64(a[y*as+x]) - float64(b[y*bs+x])
			se += d * d
		}
	}
	if se == 0 {
		return 99
	}
	return 10 * math.Log10(255*255/(se/float64(w*h)))
}

// TestRawRingToWebSocket: the Python writer fills a raw ring; the binary's
// sdr_encoder encodes it twice (H.264 and JPEG) into two sdr_stream
// endpoints; WebSocket clients receive both. Every frame decodes at once
// (FFmpeg's decoder through nvenc.Decoder) and carries its stamp; the
// whole H.264 stream, written to a file, decodes with the ffmpeg command
// line into the same number of pictures, each close to its source (PSNR).
func TestRawRingToWebSocket(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Fatal("ffmpeg not found: run scripts/deps.sh")
	}
	ring := filepath.Join(t.TempDir(), "raw")
	port := testenv.FreePort(t)
	c := testenv.StartCaddy(t, fmt.Sprintf(`
{
	admin {$SDR_TEST_ADMIN}
	sdr_encoder {
		encoder h264 {
			input shm %[1]s
			gop 30
			bitrate 2000
			backends libx264
		}
		encoder jpeg {
			input shm %[1]s
			codec jpeg
			jpeg_quality 85
		}
	}
}
http://127.0.0.1:%[2]d {
	handle /h264/* {
		sdr_stream {
			source encoder h264
		}
	}
	handle /jpeg/* {
		sdr_stream {
			source encoder jpeg
		}
	}
}
`, ring, port), nil, nil)
	stamps := pythonWriter(t, ring)

	ch := dialVideo(t, fmt.Sprintf("ws://127.0.0.1:%d/h264/ws", port))
	cj := dialVideo(t, fmt.Sprintf("ws://127.0.0.1:%d/jpeg/ws", port))

	pat, _ := testpattern.New(rawW, rawH, testpattern.I420)
	check := func(codec shmring.Codec, c *websocket.Conn, n int) (stream []byte, order []uint64) {
		dec, err := nvenc.NewDecoder(codec)
		if err != nil {
			t.Fatal(err)
		}
		defer dec.Close()
		for i := 0; i < n; i++ {
			h, p := shmringtest.ReadVideo(t, c)
			if h.Codec != codec || h.CRC32 != shmring.Checksum(p) || (i == 0 && !h.Keyframe()) {
				t.Fatalf("%s frame %d: header %+v", codec, i, h)
			}
			pics, err := dec.Decode(p)
			if err != nil || len(pics) != 1 {
				t.Fatalf("%s frame %d: %d pictures, %v", codec, i, len(pics), err)
			}
			st, err := testpattern.ReadLuma(pics[0].Y, pics[0].YStride, rawW, rawH)
			if err != nil {
				t.Fatalf("%s frame %d: %v", codec, i, err)
			}
			want, ok := stamps[st.Frame]
			if !ok || !st.Time.Equal(want.Time) || uint64(want.Time.UnixNano()) != h.FrameID {
				t.Fatalf("%s frame %d: stamp %+v, frame_id %d, written %+v", codec, i, st, h.FrameID, want)
			}
			if len(order) > 0 && st.Frame <= order[len(order)-1] {
				t.Fatalf("%s frame %d: pattern frame %d after %d", codec, i, st.Frame, order[len(order)-1])
			}
			if codec == shmring.CodecH264 {
				if db := lumaPSNR(pics[0].Y, pics[0].YStride, pat.Render(nil, st.Frame, want.Time), rawW, rawW, rawH); db < 30 {
					t.Errorf("%s frame %d: PSNR %.1f dB below 30", codec, i, db)
				}
			}
			stream = append(stream, p...)
			order = append(order, st.Frame)
		}
		return stream, order
	}
	h264, order := check(shmring.CodecH264, ch, 60)
	jpeg, _ := check(shmring.CodecJPEG, cj, 20)

	// The ffmpeg command line decodes the received H.264 into as many
	// pictures, each close to the frame it came from.
	dir := t.TempDir()
	in := filepath.Join(dir, "in.h264")
	if err := os.WriteFile(in, h264, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(2*time.Minute))
	defer cancel()
	out := filepath.Join(dir, "out.y")
	if msg, err := testenv.Run(ctx, dir, "ffmpeg", "-v", "error", "-f", "h264", "-i", in, "-f", "rawvideo", "-pix_fmt", "yuv420p", out); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, msg)
	}
	y, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	const picSize = rawW * rawH * 3 / 2
	if len(y) != len(order)*picSize {
		t.Fatalf("ffmpeg decoded %d pictures, sent %d", len(y)/picSize, len(order))
	}
	for i, n := range order {
		src := pat.Render(nil, n, stamps[n].Time)
		if db := lumaPSNR(y[i*picSize:], rawW, src, rawW, rawW, rawH); db < 30 {
			t.Errorf("ffmpeg picture %d (pattern frame %d): PSNR %.1f dB below 30", i, n, db)
		}
	}
	// And the JPEG frames, as an MJPEG stream.
	inj := filepath.Join(dir, "in.mjpeg")
	if err := os.WriteFile(inj, jpeg, 0o644); err != nil {
		t.Fatal(err)
	}
	if msg, err := testenv.Run(ctx, dir, "ffmpeg", "-v", "error", "-f", "mjpeg", "-i", inj, "-f", "rawvideo", "-pix_fmt", "gray", filepath.Join(dir, "outj.y")); err != nil {
		t.Fatalf("ffmpeg mjpeg: %v\n%s", err, msg)
	}
	if yj, _ := os.ReadFile(filepath.Join(dir, "outj.y")); len(yj) != 20*rawW*rawH {
		t.Fatalf("ffmpeg decoded %d JPEG pictures, sent 20", len(yj)/(rawW*rawH))
	}

	// The admin endpoint lists both encoders and what they did.
	resp, err := http.Get("http://" + c.AdminAddr + "/sdr/encoders")
	if err != nil {
		t.Fatalf("GET /sdr/encoders: %v", err)
	}
	var rep struct {
		Encoders []nvenc.SessionStats `json:"encoders"`
	}
	err = json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Encoders) != 2 || rep.Encoders[0].Backend != "libx264" || rep.Encoders[1].Backend != "mjpeg" {
		t.Errorf("encoders %+v", rep.Encoders)
	}
}
