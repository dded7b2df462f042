package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/testpattern"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/nvenc"
	"github.com/sdr-os/sdr-caddy/shmring"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestEncoderLivePatternToStream runs the sdr_encoder app with the test
// pattern as the source of an sdr_stream, with embedded NATS: a WebSocket
// client decodes the H.264 it receives and reads back the stamps; NATS
// force_idr and settings act on the next frames; telemetry.frame.stats is
// published; GET /sdr/encoders and the metrics report the encoder.
func TestEncoderLivePatternToStream(t *testing.T) {
	if !nvenc.Compiled {
		t.Skip("encoding is not compiled in")
	}
	natsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	tester := caddytest.NewTester(t)
	tester.InitServer(fmt.Sprintf(`
	{
		admin localhost:2999
		skip_install_trust
		http_port %d
		grace_period 1ns
		sdr_nats {
			embedded {
				listen 127.0.0.1:%d
			}
		}
		sdr_encoder {
			encoder cam {
				input pattern 320x240
				fps 30
				gop 1000
				bitrate 1500
				backends libx264
			}
		}
	}
	http://127.0.0.1:%d {
		handle /stream/* {
			sdr_stream {
				source encoder cam
			}
		}
	}`, httpPort, natsPort, httpPort), "caddyfile")
	unloadOnCleanup(t)

	sim, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	stats := subscribeChan(t, sim, "telemetry.frame.stats", 16)
	if err := sim.Flush(); err != nil {
		t.Fatal(err)
	}

	c, resp, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/stream/ws", httpPort), nil)
	if err != nil {
		t.Fatalf("dialing: %v (%v)", err, resp)
	}
	defer c.Close()
	_ = c.SetReadDeadline(testwait.Deadline(30 * time.Second))

	dec, err := nvenc.NewDecoder(shmring.CodecH264)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	// The client starts at a keyframe and decodes every frame at once.
	for i := 0; i < 10; i++ {
		h, p := shmringtest.ReadVideo(t, c)
		if i == 0 && !h.Keyframe() {
			t.Fatalf("first frame is not a keyframe: %+v", h)
		}
		if h.Codec != shmring.CodecH264 || h.CRC32 != shmring.Checksum(p) {
			t.Fatalf("frame %d header %+v", i, h)
		}
		pics, err := dec.Decode(p)
		if err != nil || len(pics) != 1 {
			t.Fatalf("frame %d: %d pictures, %v", i, len(pics), err)
		}
		st, err := testpattern.ReadLuma(pics[0].Y, pics[0].YStride, 320, 240)
		if err != nil || uint64(st.Time.UnixNano()) != h.FrameID {
			t.Fatalf("frame %d: stamp %+v %v, frame_id %d", i, st, err, h.FrameID)
		}
	}

	// NATS force_idr: a keyframe follows (the GOP is 1000 frames).
	if err := sim.Publish("command.genesis.force_idr", []byte(`{"cmd_seq":7}`)); err != nil {
		t.Fatal(err)
	}
	gotKey := false
	for i := 0; i < 30 && !gotKey; i++ {
		h, _ := shmringtest.ReadVideo(t, c)
		gotKey = h.Keyframe()
	}
	if !gotKey {
		t.Fatal("no keyframe within 30 frames of command.genesis.force_idr")
	}

	// NATS settings: the stream switches to JPEG, starting with a keyframe.
	if err := sim.Publish("command.genesis.settings", []byte(`{"codec":"jpeg","jpeg_quality":60}`)); err != nil {
		t.Fatal(err)
	}
	switched := false
	for i := 0; i < 60 && !switched; i++ {
		h, p := shmringtest.ReadVideo(t, c)
		if h.Codec == shmring.CodecJPEG {
			switched = true
			if !h.Keyframe() || len(p) < 2 || p[0] != 0xff || p[1] != 0xd8 {
				t.Fatalf("first JPEG frame: %+v % x", h, p[:2])
			}
		}
	}
	if !switched {
		t.Fatal("no JPEG frame within 60 frames of command.genesis.settings")
	}

	// telemetry.frame.stats, once a second.
	select {
	case m := <-stats:
		var fs map[string]any
		if err := json.Unmarshal(m.Data, &fs); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"frame_id", "encode_ms", "codec", "frame_bytes"} {
			if _, ok := fs[k]; !ok {
				t.Errorf("frame stats %s lack %q", m.Data, k)
			}
		}
	case <-testwait.After(5 * time.Second):
		t.Fatal("no telemetry.frame.stats within 5s")
	}

	// The admin endpoint.
	r, err := http.Get("http://localhost:2999/sdr/encoders")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Probe    nvenc.ProbeReport    `json:"probe"`
		Encoders []nvenc.SessionStats `json:"encoders"`
	}
	err = json.NewDecoder(r.Body).Decode(&rep)
	r.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Encoders) != 1 || rep.Encoders[0].Name != "cam" || rep.Encoders[0].Backend != "mjpeg" || rep.Encoders[0].Frames < 10 || rep.Encoders[0].Reopens < 1 {
		t.Errorf("encoders %+v", rep.Encoders)
	}
	if rep.Probe.Verdict == "" || rep.Probe.Fallback["h264"] != "libx264" {
		t.Errorf("probe %+v", rep.Probe)
	}

	// Metrics.
	body := adminMetrics(t)
	for _, want := range []string{
		`caddy_sdr_encoder_frames_total{encoder="cam"}`,
		`caddy_sdr_encoder_encode_seconds_bucket{encoder="cam"`,
		`caddy_sdr_encoder_backend{backend="mjpeg",encoder="cam"} 1`,
		`caddy_sdr_encoder_fps{encoder="cam"}`,
		`caddy_sdr_encoder_skipped_total{encoder="cam"}`,
		`caddy_sdr_encoder_keyframe_requests_total{encoder="cam"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
