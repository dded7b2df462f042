package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestDemoScript runs what `make run` runs after building, scripts/demo.sh,
// with its ports, ring and embedded NATS server moved off the defaults (so
// that it can run beside anything else on the machine), and checks what the
// README promises: the player at /, the edge's OK at /health, H.264 from the
// test pattern on /stream/ws starting at a keyframe, the flight recorder on
// (a replay of the recording starts at a keyframe, and `caddy sdr-export`
// writes an MP4 of it), and a clean stop on Ctrl-C.
func TestDemoScript(t *testing.T) {
	root := testenv.Root()
	ports := freePorts(t, 6)
	port := ports[0]
	dir := t.TempDir()
	ring := filepath.Join(dir, "frames")
	env := append(cleanEnv(),
		"SDR_CADDY_BIN="+testenv.CaddyBin(t),
		fmt.Sprintf("SDR_DEMO_PORT=%d", port),
		fmt.Sprintf("SDR_LISTEN_ADDR=:%d", ports[1]),
		fmt.Sprintf("SDR_ADMIN_ADDR=127.0.0.1:%d", ports[2]),
		fmt.Sprintf("SDR_METRICS_ADDR=:%d", ports[5]),
		"SDR_SHM_PATH="+ring,
		"SDR_NATS_URL=",
		fmt.Sprintf("SDR_NATS_EMBEDDED_ADDR=127.0.0.1:%d", ports[3]),
		fmt.Sprintf("SDR_ROS_UPSTREAM=ws://127.0.0.1:%d", ports[4]),
		"SDR_DEMO_RESOLUTION=320x240",
		"SDR_DEMO_FPS=30",
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
	)
	cmd := exec.Command("bash", "scripts/demo.sh")
	cmd.Dir = root
	cmd.Env = env
	demo := testenv.Start(t, "demo", cmd, 5*time.Second)

	edge := fmt.Sprintf("http://127.0.0.1:%d", port)
	testenv.WaitReady(t, demo, 60*time.Second, func(context.Context) error {
		if !strings.Contains(demo.Output(), fmt.Sprintf("http://localhost:%d/", port)) {
			return errors.New("the demo has not printed its URL")
		}
		return nil
	})
	if code, body, _ := get(t, edge+"/health"); code != 200 || body != "OK" {
		t.Errorf("/health = %d %q, want 200 OK", code, body)
	}
	if code, body, ct := get(t, edge+"/"); code != 200 || !strings.HasPrefix(ct, "text/html") || !strings.Contains(body, "/sdr/") {
		t.Errorf("/ = %d %s, want the player page", code, ct)
	}

	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(edge, "http")+"/stream/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(testwait.Deadline(20 * time.Second))
	for frames := 0; frames < 10; {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("after %d frames: %v", frames, err)
		}
		if len(msg) < 1+shmring.HeaderSize || msg[0] != 0x01 {
			continue
		}
		h, err := shmring.ParseHeader(msg[1:])
		if err != nil {
			t.Fatal(err)
		}
		payload := msg[1+shmring.HeaderSize:]
		if h.Codec != shmring.CodecH264 || !bytes.HasPrefix(payload, []byte{0, 0, 0, 1}) && !bytes.HasPrefix(payload, []byte{0, 0, 1}) {
			t.Fatalf("frame %d: codec %v, payload % x..., want H.264 Annex-B", h.FrameSeq, h.Codec, payload[:min(8, len(payload))])
		}
		if frames == 0 {
			// A keyframe carrying its SPS (NAL type 7), so a browser can
			// configure its decoder from the first frame.
			if !h.Keyframe() || !bytes.Contains(payload, []byte{0, 0, 1, 0x67}) && !bytes.Contains(payload, []byte{0, 0, 1, 0x27}) {
				t.Errorf("first frame: keyframe %v, SPS present %v", h.Keyframe(), bytes.Contains(payload, []byte{0, 0, 1, 0x67}))
			}
		}
		frames++
	}
	if !strings.Contains(demo.Output(), "sdr-export") {
		t.Errorf("the demo does not say that it records:\n%s", demo.Output())
	}

	// The recorder records what the live client got: once it has stored a
	// keyframe, a replay from a minute ago starts at it (a replay that
	// comes before that finds nothing recorded and ends with 1000).
	var replayed string
	testwait.For(t, "a replay of the recording that starts at a keyframe", func() bool {
		replayed = replayFirstFrame(t, "ws"+strings.TrimPrefix(edge, "http")+"/stream/ws?replay=-1m")
		return replayed == "keyframe" || replayed == "delta"
	})
	mp4 := filepath.Join(dir, "demo.mp4")
	export := exec.Command(testenv.CaddyBin(t), "sdr-export", "--nats", fmt.Sprintf("nats://127.0.0.1:%d", ports[3]), "--out", mp4)
	if out, err := export.CombinedOutput(); err != nil || !strings.Contains(string(out), "wrote "+mp4) {
		t.Errorf("caddy sdr-export of the demo's recording: %v\n%s", err, out)
	}

	// Ctrl-C stops both processes and the script exits 0.
	if err := syscall.Kill(-demo.Pid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-demo.Exited():
		if err := demo.ExitErr(); err != nil {
			t.Errorf("demo exit after Ctrl-C: %v", err)
		}
	case <-testwait.After(20 * time.Second):
		t.Error("demo still running 20 s after Ctrl-C")
	}
	if _, err := os.Stat(ring); err != nil {
		t.Errorf("the test source wrote no ring at %s: %v", ring, err)
	}
}

// replayFirstFrame opens a replay and says what its first video message
// is: "keyframe", "delta", or why there was none.
func replayFirstFrame(t *testing.T, url string) string {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		if resp != nil {
			t.Fatalf("replay: %v (HTTP %d)", err, resp.StatusCode)
		}
		t.Fatalf("replay: %v", err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(testwait.Deadline(20 * time.Second))
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			return err.Error()
		}
		if len(msg) < 1+shmring.HeaderSize || msg[0] != 0x01 {
			continue
		}
		if h, err := shmring.ParseHeader(msg[1:]); err != nil || !h.Keyframe() {
			t.Errorf("replay's first frame: %+v, %v; want a keyframe", h, err)
			return "delta"
		}
		return "keyframe"
	}
}
