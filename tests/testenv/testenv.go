// Package testenv starts the pieces that live tests need: the sdr-caddy
// binary with a given Caddyfile, nats-server, free loopback ports, and the
// paths of the tools scripts/deps.sh installs. It is internal/harness for
// tests: a failure fails the test, every process is stopped when the test
// ends, and every deadline goes through testwait.Timeout.
package testenv

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// Root is the repository root.
func Root() string { return harness.Root() }

// CaddyBin returns the sdr-caddy binary: $SDR_CADDY_BIN when set (make test
// sets it), else one built once per test process.
func CaddyBin(t testing.TB) string {
	t.Helper()
	p, err := harness.CaddyBin()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Tool returns the path of a tool that scripts/deps.sh installs, pinned,
// into .tools/bin (harness.Tool).
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := harness.Tool(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FreePort returns a loopback TCP port that was free a moment ago and that
// no other caller in this process has been given (harness.FreePort).
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Start starts cmd, named name in failures, in a process group of its own
// (harness.Start), and stops it when the test ends (StopOnCleanup).
func Start(t testing.TB, name string, cmd *exec.Cmd, grace time.Duration) *harness.Process {
	t.Helper()
	p, err := harness.Start(name, cmd)
	if err != nil {
		t.Fatal(err)
	}
	StopOnCleanup(t, p, grace)
	return p
}

// StopOnCleanup stops p when the test ends: SIGTERM, and its process group
// killed after testwait.Timeout(grace). When the test has failed, what p
// printed is logged.
func StopOnCleanup(t testing.TB, p *harness.Process, grace time.Duration) {
	t.Cleanup(func() {
		if err := p.Stop(testwait.Timeout(grace)); err != nil {
			t.Log(err)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", p.Name, p.Output())
		}
	})
}

// WaitReady waits until ready holds for p, failing the test when p exits
// first or after testwait.Timeout(timeout). (Start logs what p printed when
// the test has failed.)
func WaitReady(t testing.TB, p *harness.Process, timeout time.Duration, ready harness.Ready) {
	t.Helper()
	if err := p.WaitReady(testwait.Timeout(timeout), ready); err != nil {
		t.Fatal(err)
	}
}

// Caddy is a running sdr-caddy process.
type Caddy struct {
	*harness.Process
	AdminAddr string // host:port of the admin listener
	Dir       string
}

// StartCaddy writes caddyfile to a temporary directory and runs
// `caddy run --config Caddyfile --adapter caddyfile` with extra environment
// variables. The Caddyfile must set `admin {$SDR_TEST_ADMIN}` in its global
// options (or not open an admin listener at all); StartCaddy sets
// SDR_TEST_ADMIN to a free port and waits until the admin listener answers,
// or until ready returns nil when ready is given. The process is stopped
// when the test ends.
func StartCaddy(t testing.TB, caddyfile string, env []string, ready func() error) *Caddy {
	t.Helper()
	return StartCaddyWith(t, caddyfile, env, ready, StartOptions{})
}

// StartOptions change how StartCaddyWith runs the process.
type StartOptions struct {
	// NoFile, when above 0, is the process's file descriptor limit (soft
	// and hard RLIMIT_NOFILE, so that Go cannot raise it), set by the
	// shell's ulimit before caddy starts.
	NoFile int
}

// StartCaddyWith is StartCaddy with options.
func StartCaddyWith(t testing.TB, caddyfile string, env []string, ready func() error, o StartOptions) *Caddy {
	t.Helper()
	dir := t.TempDir()
	admin := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	cmd, err := harness.CaddyCommand("caddy", CaddyBin(t), dir, caddyfile, append([]string{"SDR_TEST_ADMIN=" + admin}, env...)...)
	if err != nil {
		t.Fatal(err)
	}
	if o.NoFile > 0 {
		harness.LimitFiles(cmd, o.NoFile)
	}
	p, err := harness.Start("caddy", cmd)
	if err != nil {
		t.Fatal(err)
	}
	StopOnCleanup(t, p, 10*time.Second)
	check := harness.Answers("http://" + admin + "/config/")
	if ready != nil {
		check = func(context.Context) error { return ready() }
	}
	WaitReady(t, p, testwait.Default, check)
	// The check can pass before the configuration is fully loaded: the
	// HTTP servers answer before sdr_start's hooks (the embedded
	// nats-server, the recorder) have run. Caddy logs this line once
	// everything has started.
	loaded := func() bool { return strings.Contains(p.Output(), `"msg":"serving initial configuration"`) }
	testwait.For(t, "caddy to log serving initial configuration", func() bool {
		select {
		case <-p.Exited():
			return true
		default:
			return loaded()
		}
	})
	if !loaded() {
		t.Fatalf("caddy exited while loading its configuration: %v\n%s", p.ExitErr(), p.Output())
	}
	return &Caddy{Process: p, AdminAddr: admin, Dir: dir}
}

// Stop sends SIGTERM and waits up to testwait.Timeout(10 s) for the process
// to exit; a process that does not is killed, and the test fails.
func (c *Caddy) Stop(t testing.TB) {
	t.Helper()
	if err := c.Process.Stop(testwait.Timeout(10 * time.Second)); err != nil {
		t.Error(err)
	}
}

// Caddyfile returns a Caddyfile whose global options are the admin listener
// StartCaddy expects, a 1ns grace period and global (its lines indented by
// one tab), with one site on 127.0.0.1:port holding site.
func Caddyfile(port int, global, site string) string {
	return fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	grace_period 1ns
%s
}
http://127.0.0.1:%d {
%s
}
`, global, port, site)
}

// NATSOptions is the global sdr_nats block, for Caddyfile, that connects
// to the NATS server at url.
func NATSOptions(url string) string {
	return fmt.Sprintf("\tsdr_nats {\n\t\turl %s\n\t}", url)
}

// adminClient talks to the admin API without keeping connections open.
var adminClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: testwait.Timeout(30 * time.Second)}

// Load replaces the running config with caddyfile through the admin API.
func (c *Caddy) Load(t testing.TB, caddyfile string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+c.AdminAddr+"/load", strings.NewReader(caddyfile))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := adminClient.Do(req)
	if err != nil {
		t.Fatalf("loading config: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("loading config: %d %s", resp.StatusCode, body)
	}
}

// Metrics reads the Prometheus metrics of the admin listener at adminAddr:
// each sample's value by its series (`name` or `name{labels}`).
func Metrics(adminAddr string) (map[string]string, error) {
	return harness.Metrics(adminClient, "http://"+adminAddr+"/metrics")
}

// Run runs a command with a timeout and returns its combined output.
func Run(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// LockedBuffer collects a process's output for reading while it runs.
type LockedBuffer = harness.Output
