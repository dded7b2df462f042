package browser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/chromium"
	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestDemo runs what `make run` runs after building: scripts/demo.sh, that
// is Caddyfile.example unchanged plus `caddy sdr-testsrc`, on free ports.
// The URL it prints serves the player, which decodes at least 150 frames
// in 5 s; the edge answers OK at /health and the metrics site serves
// metrics. A screenshot of the page is kept in tests/artifacts.
func TestDemo(t *testing.T) {
	if err := chromium.Available(); err != nil {
		t.Skipf("browser tests need chromium and tests/node: %v", err)
	}
	bin := testenv.CaddyBin(t)
	port, admin := testenv.FreePort(t), fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	metrics := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	nats := testenv.StartNATS(t)
	cmd := exec.Command(filepath.Join(testenv.Root(), "scripts", "demo.sh"))
	cmd.Dir = testenv.Root()
	dir := t.TempDir()
	cmd.Env = append(os.Environ(),
		"SDR_CADDY_BIN="+bin,
		fmt.Sprintf("SDR_DEMO_PORT=%d", port),
		fmt.Sprintf("SDR_LISTEN_ADDR=:%d", testenv.FreePort(t)),
		"SDR_ADMIN_ADDR="+admin,
		"SDR_METRICS_ADDR="+metrics,
		"SDR_SHM_PATH="+filepath.Join(dir, "frames"),
		"SDR_DEMO_RESOLUTION="+testResolution,
		"SDR_NATS_URL="+nats,
		fmt.Sprintf("SDR_ROS_UPSTREAM=ws://127.0.0.1:%d", testenv.FreePort(t)),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
	)
	demo, err := harness.Start("demo.sh", cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Ctrl-C: the script stops both processes.
		if err := demo.StopWith(syscall.SIGINT, testwait.Timeout(15*time.Second)); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("demo.sh output:\n%s", demo.Output())
		}
	})
	var url string
	re := regexp.MustCompile(`player\s+(http://\S+)`)
	testenv.WaitReady(t, demo, 60*time.Second, func(context.Context) error {
		m := re.FindStringSubmatch(demo.Output())
		if m == nil {
			return errors.New("demo.sh has printed no player URL")
		}
		url = m[1]
		return nil
	})
	if want := fmt.Sprintf("http://localhost:%d/", port); url != want {
		t.Errorf("demo printed %s, want %s", url, want)
	}

	get := func(u string) (int, string) {
		t.Helper()
		resp, err := http.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(fmt.Sprintf("http://127.0.0.1:%d/health", port)); code != 200 || body != "OK" {
		t.Errorf("GET /health: %d %q, want 200 OK", code, body)
	}
	if code, body := get("http://" + metrics + "/metrics"); code != 200 || !strings.Contains(body, "caddy_sdr_") {
		t.Errorf("GET the metrics site's /metrics: %d, caddy_sdr_ metrics present: %v", code, strings.Contains(body, "caddy_sdr_"))
	}

	d := startBrowser(t)
	st := openPlayer(t, d, "main", fmt.Sprintf("http://127.0.0.1:%d/", port))
	t.Logf("first frame %.0f ms after the page started connecting", st.FirstFrameMs)
	checkPlays(t, d, "main", "h264", "")

	// The stand-in answers on NATS as the simulator does: E-STOP is acked
	// and the simulator's safety state shows on the badge; its frame stats
	// fill the telemetry panel.
	evalJS[any](t, d, "main", `document.getElementById('estop').click()`)
	var badge, ack, panel string
	testwait.Until(10*time.Second, func() bool {
		badge = evalJS[string](t, d, "main", `document.querySelector('.sdr-safety').textContent`)
		ack = evalJS[string](t, d, "main", `(document.querySelector('.sdr-command-log li.ok') || {}).textContent || ''`)
		panel = evalJS[string](t, d, "main", `document.querySelector('table.sdr-telemetry').textContent`)
		return strings.Contains(badge, "sim ESTOP") && strings.Contains(ack, "estop: ok") && strings.Contains(panel, "frame.stats")
	})
	if !strings.Contains(badge, "sim ESTOP") {
		t.Errorf("safety badge %q after E-STOP, want the simulator's ESTOP state", badge)
	}
	if !strings.Contains(ack, "estop: ok") {
		t.Errorf("ack log %q after E-STOP, want an ok ack from the stand-in", ack)
	}
	if !strings.Contains(panel, "frame.stats") || !strings.Contains(panel, "safety.state") {
		t.Errorf("telemetry panel %q lacks frame.stats or safety.state", panel)
	}
	screenshot(t, d, "main", "demo.png")
}

// TestPlayerRawRingThroughEncoder writes raw I420 frames into the raw ring
// with the Python stdlib writer (the simulator's way); sdr_encoder encodes
// them to H.264 and sdr_stream serves them to the page.
func TestPlayerRawRingThroughEncoder(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skipf("python3 not installed: %v", err)
	}
	raw := filepath.Join(t.TempDir(), "raw")
	writer := testenv.Start(t, "raw_writer.py",
		exec.Command("python3", filepath.Join(testenv.Root(), "tests", "browser", "raw_writer.py"), raw, "--fps", "30"), 5*time.Second)
	testenv.WaitReady(t, writer, 10*time.Second, func(context.Context) error { _, err := os.Stat(raw); return err })

	e := &edge{HTTPPort: testenv.FreePort(t), NATSPort: testenv.FreePort(t), Ring: raw}
	e.caddyfile = strings.Replace(edgeCaddyfile(e.HTTPPort, e.NATSPort, "encoder cam"), "\tsdr_nats {", fmt.Sprintf(`	sdr_encoder {
		encoder cam {
			input shm %s
			codec h264
			fps 30
			gop 30
		}
	}
	sdr_nats {`, raw), 1)
	e.start(t)

	d := startBrowser(t)
	openPlayer(t, d, "main", e.URL())
	st0, err := d.Stats("main")
	if err != nil {
		t.Fatal(err)
	}
	c1, err := d.Canvas("main")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st1 := waitFrames(t, d, "main", st0.FramesDecoded+100, 20*time.Second)
	c2, err := d.Canvas("main")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("raw ring -> sdr_encoder -> page: %d frames in %v, %dx%d %s, age %.1f ms, dropped %d, missed %d",
		st1.FramesDecoded-st0.FramesDecoded, time.Since(start).Round(time.Millisecond), st1.Width, st1.Height, st1.Codec, st1.AgeMs, st1.Dropped, st1.Missed)
	if st1.Codec != "h264" || st1.Width != 640 || st1.Height != 360 {
		t.Errorf("stream %s %dx%d, want h264 640x360", st1.Codec, st1.Width, st1.Height)
	}
	if st1.DecodeErrors != 0 {
		t.Errorf("decode errors: %d (%s)", st1.DecodeErrors, st1.LastError)
	}
	if c2.Blank || c2.Distinct < 4 {
		t.Errorf("canvas looks blank: %d distinct colours", c2.Distinct)
	}
	if slices.Equal(c1.Samples, c2.Samples) {
		t.Errorf("canvas did not change over 100 frames")
	}
	screenshot(t, d, "main", "player-raw-encoder.png")
}
