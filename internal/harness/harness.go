// Package harness starts and watches the processes that the live tests
// and the benchmark programs run: the sdr-caddy binary, nats-server, the
// test source. It finds the repository's pinned tools, builds the binary
// when make has not, hands out free loopback ports, and reads what a
// process costs (CPU time and resident memory from /proc) and counts
// (Prometheus metrics).
//
// It knows nothing of testing.TB: every function returns an error, and
// every deadline is a parameter. The tests reach it through tests/testenv,
// which turns the errors into t.Fatal, stops processes in t.Cleanup and
// passes deadlines through testwait.Timeout; the benchmarks call it
// directly with deadlines of their own, which SDR_TEST_TIMEOUT_SCALE does
// not stretch.
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// Root is the repository root.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Tool returns the path of a tool that scripts/deps.sh installs, pinned,
// into .tools/bin (xcaddy, nats-server v2.15.2, actionlint, shellcheck). It
// never looks on PATH, where another version may be (Debian's nats-server
// is 2.9): a result must not depend on what else is installed.
func Tool(name string) (string, error) {
	p := filepath.Join(Root(), ".tools", "bin", name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s is not in .tools/bin: run scripts/deps.sh (%w)", name, err)
	}
	return p, nil
}

// CaddyBinVar names the variable that points at a built sdr-caddy binary
// (make sets it to bin/caddy, which it has just built).
const CaddyBinVar = "SDR_CADDY_BIN"

// CaddyBin returns the sdr-caddy binary: $SDR_CADDY_BIN when that file
// exists, else one built from this checkout once per process (with cgo, as
// make builds it) into a temporary directory.
func CaddyBin() (string, error) {
	if p := os.Getenv(CaddyBinVar); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return buildCaddy()
}

var buildCaddy = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "sdr-caddy-bin-")
	if err != nil {
		return "", fmt.Errorf("building caddy: %w", err)
	}
	bin := filepath.Join(dir, "caddy")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/caddy")
	cmd.Dir = Root()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building caddy in %s: %w\n%s", cmd.Dir, err, out)
	}
	return bin, nil
})
