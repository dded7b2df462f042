package browser

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/chromium"
	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// The pictures the tests stream: small enough for two shared cores. The
// tests that count 150 frames in 5 s ask for 60 fps; the others keep to 30
// (lighter, and the ring reader misses fewer frames on a loaded machine).
const (
	testResolution = "640x360"
	testFPS        = 30
)

// artifacts is where screenshots go (git-ignored).
func artifacts(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(testenv.Root(), "tests", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startBrowser starts chromium with a fresh profile, or skips the test when
// chromium, node or playwright-core is missing.
func startBrowser(t *testing.T) *chromium.Driver {
	t.Helper()
	if err := chromium.Available(); err != nil {
		t.Skipf("browser tests need chromium and tests/node: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := chromium.Start(ctx, t.TempDir(), testwait.Timeout(10*time.Second))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Logf("closing browser: %v", err)
		}
		cancel()
	})
	return d
}

// source is a running `caddy sdr-testsrc`.
type source struct{ *harness.Process }

// startSource runs `caddy sdr-testsrc --path ring` with the test picture
// size and rate and extra flags, and waits until the ring file exists.
func startSource(t *testing.T, ring string, extra ...string) *source {
	t.Helper()
	args := append([]string{"sdr-testsrc", "--path", ring, "--resolution", testResolution,
		"--fps", fmt.Sprint(testFPS)}, extra...)
	s := &source{testenv.Start(t, "sdr-testsrc", exec.Command(testenv.CaddyBin(t), args...), 10*time.Second)}
	testenv.WaitReady(t, s.Process, 20*time.Second, func(context.Context) error { _, err := os.Stat(ring); return err })
	return s
}

// stop ends the source with SIGTERM and waits; the time it returns is
// after the last frame was committed.
func (s *source) stop(t *testing.T) time.Time {
	t.Helper()
	if err := s.Stop(testwait.Timeout(10 * time.Second)); err != nil {
		t.Error(err)
	}
	return time.Now()
}

// edge is a running sdr-caddy with sdr_stream on /stream/ws, sdr_player at
// / and an embedded NATS server.
type edge struct {
	*testenv.Caddy
	HTTPPort, NATSPort int
	Ring               string
	caddyfile          string
}

// URL is the player page.
func (e *edge) URL() string { return fmt.Sprintf("http://127.0.0.1:%d/", e.HTTPPort) }

// NATSURL is the embedded NATS server.
func (e *edge) NATSURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", e.NATSPort) }

// edgeCaddyfile serves the player and the ring's stream on one site.
func edgeCaddyfile(httpPort, natsPort int, streamSource string) string {
	return fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	sdr_nats {
		embedded {
			listen 127.0.0.1:%d
		}
	}
}

http://127.0.0.1:%d {
	handle /health {
		respond "OK" 200
	}
	handle /stream/ws {
		sdr_stream {
			source %s
		}
	}
	handle {
		sdr_player
		respond "Not Found" 404
	}
}
`, natsPort, httpPort, streamSource)
}

// startEdge runs sdr-caddy with edgeCaddyfile reading the ring.
func startEdge(t *testing.T, ring string) *edge {
	t.Helper()
	e := &edge{HTTPPort: testenv.FreePort(t), NATSPort: testenv.FreePort(t), Ring: ring}
	e.caddyfile = edgeCaddyfile(e.HTTPPort, e.NATSPort, "shm "+ring)
	e.start(t)
	return e
}

// start (re)starts the process on the same ports.
func (e *edge) start(t *testing.T) {
	t.Helper()
	health := fmt.Sprintf("http://127.0.0.1:%d/health", e.HTTPPort)
	e.Caddy = testenv.StartCaddy(t, e.caddyfile, nil, func() error {
		resp, err := http.Get(health)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", health, resp.Status)
		}
		return nil
	})
}

// openPlayer opens url in page name and waits for its first decoded frame.
func openPlayer(t *testing.T, d *chromium.Driver, name, url string) chromium.Stats {
	t.Helper()
	if err := d.Do("open", map[string]any{"name": name, "url": url}, nil); err != nil {
		t.Fatal(err)
	}
	st := waitFrames(t, d, name, 1, 15*time.Second)
	return st
}

// waitFrames waits until the page has decoded count frames in all.
func waitFrames(t *testing.T, d *chromium.Driver, name string, count int, timeout time.Duration) chromium.Stats {
	t.Helper()
	var r struct {
		Reached bool           `json:"reached"`
		Stats   chromium.Stats `json:"stats"`
	}
	if err := d.Do("waitFrames", map[string]any{"name": name, "count": count, "timeoutMs": ms(timeout)}, &r); err != nil {
		t.Fatal(err)
	}
	if !r.Reached {
		t.Fatalf("page %s decoded %d frames in %v, want %d; stats %+v\nconsole: %s", name, r.Stats.FramesDecoded, testwait.Timeout(timeout), count, r.Stats, consoleLines(d, name))
	}
	return r.Stats
}

// ms is a deadline for the page's side of the driver (waitFrames,
// waitBanner): testwait.Timeout(d) in milliseconds.
func ms(d time.Duration) int64 { return testwait.Timeout(d).Milliseconds() }

func consoleLines(d *chromium.Driver, name string) string {
	var r struct {
		Lines []string `json:"lines"`
	}
	if err := d.Do("console", map[string]any{"name": name}, &r); err != nil {
		return err.Error()
	}
	return strings.Join(r.Lines, "\n")
}

func screenshot(t *testing.T, d *chromium.Driver, name, file string) string {
	t.Helper()
	path := filepath.Join(artifacts(t), file)
	if err := d.Do("screenshot", map[string]any{"name": name, "path": path}, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return path
}

func evalJS[T any](t *testing.T, d *chromium.Driver, name, expr string) T {
	t.Helper()
	var r struct {
		Value T `json:"value"`
	}
	if err := d.Do("eval", map[string]any{"name": name, "expr": expr}, &r); err != nil {
		t.Fatal(err)
	}
	return r.Value
}
