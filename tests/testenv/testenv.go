// Package testenv starts the pieces that live tests need: the sdr-caddy
// binary with a given Caddyfile, free loopback ports, and the paths of the
// tools scripts/deps.sh installs.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// Root is the repository root.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// CaddyBin returns the sdr-caddy binary: $SDR_CADDY_BIN when set (make test
// sets it), else one built once per test process.
func CaddyBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SDR_CADDY_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sdr-caddy-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "caddy")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/caddy")
		cmd.Dir = Root()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building caddy: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Tool returns the path of a tool that scripts/deps.sh installs, pinned,
// into .tools/bin (xcaddy, nats-server v2.15.2, actionlint, shellcheck). It
// never looks on PATH, where another version may be (Debian's nats-server
// is 2.9): a test's result must not depend on what else is installed.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(Root(), ".tools", "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not in .tools/bin: run scripts/deps.sh (%v)", name, err)
	}
	return p
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := NewPort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// NewPort returns a loopback TCP port that was free a moment ago and that
// it has not returned before in this process: the kernel may hand the same
// port out twice in a row (it did: a Caddy's admin and site listeners met
// on one port).
func NewPort() (int, error) {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, taken := portsGiven.LoadOrStore(port, true); !taken {
			return port, nil
		}
	}
}

// portsGiven holds the ports NewPort has returned in this process.
var portsGiven sync.Map

// Caddy is a running sdr-caddy process.
type Caddy struct {
	Cmd       *exec.Cmd
	AdminAddr string // host:port of the admin listener
	Dir       string
	out       *LockedBuffer // stdout and stderr
	stdout    *LockedBuffer
	exited    <-chan struct{}
}

// Exited is closed when the process has exited.
func (c *Caddy) Exited() <-chan struct{} { return c.exited }

// Output returns what the process has printed so far.
func (c *Caddy) Output() string { return c.out.String() }

// Stdout returns what the process has printed on its standard output so far.
func (c *Caddy) Stdout() string { return c.stdout.String() }

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
	cf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cf, []byte(caddyfile), 0o644); err != nil {
		t.Fatal(err)
	}
	admin := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	c := &Caddy{AdminAddr: admin, Dir: dir, out: &LockedBuffer{}, stdout: &LockedBuffer{}}
	cmd := exec.Command(CaddyBin(t), "run", "--config", cf, "--adapter", "caddyfile")
	if o.NoFile > 0 {
		// sh -c 'script' $0 $@...: the limit, then caddy's command line.
		cmd = exec.Command("/bin/sh", append([]string{"-c", `ulimit -n "$0" && exec "$@"`, strconv.Itoa(o.NoFile)}, cmd.Args...)...)
	}
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"SDR_TEST_ADMIN="+admin,
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = io.MultiWriter(c.out, c.stdout), c.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.Cmd = cmd
	exited := StopOnCleanup(t, cmd, 10*time.Second, func() {
		if t.Failed() {
			t.Logf("caddy output:\n%s", c.Output())
		}
	})
	c.exited = exited
	if ready == nil {
		ready = func() error {
			resp, err := http.Get("http://" + admin + "/config/")
			if err != nil {
				return err
			}
			resp.Body.Close()
			return nil
		}
	}
	var err error
	gone := false
	testwait.Until(testwait.Default, func() bool {
		select {
		case <-exited:
			gone = true
			return true
		default:
		}
		err = ready()
		return err == nil
	})
	switch {
	case gone:
		t.Fatalf("caddy exited before it was ready:\n%s", c.Output())
	case err != nil:
		t.Fatalf("caddy not ready after %s: %v\n%s", testwait.Timeout(testwait.Default), err, c.Output())
	}
	return c
}

// Stop sends SIGTERM and waits up to testwait.Timeout(10 s) for the process
// to exit.
func (c *Caddy) Stop(t testing.TB) {
	t.Helper()
	_ = c.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-testwait.After(10 * time.Second):
		t.Errorf("caddy did not exit within %s of SIGTERM", testwait.Timeout(10*time.Second))
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
	resp, err := adminClient.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	samples := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		samples[line[:i]] = line[i+1:]
	}
	return samples, sc.Err()
}

// Run runs a command with a timeout and returns its combined output.
func Run(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// LockedBuffer collects a process's output for reading while it runs.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// WaitListening waits until a TCP connection to addr succeeds, failing the
// test after testwait.Timeout(timeout); what names the server in the failure.
func WaitListening(t testing.TB, what, addr string, timeout time.Duration) {
	t.Helper()
	var err error
	listening := testwait.Until(timeout, func() bool {
		var c net.Conn
		c, err = net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	if !listening {
		t.Fatalf("%s not listening on %s after %s: %v", what, addr, testwait.Timeout(timeout), err)
	}
}
