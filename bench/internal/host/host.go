// Package host reads what the benchmark programs measure of the processes
// they run (CPU time from /proc, counters from a metrics endpoint), finds
// free loopback ports for them, waits for them to answer and stops them.
package host

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// userHZ is the unit of the times in /proc/<pid>/stat on Linux.
const userHZ = 100

// CPUSeconds returns the user+system CPU time of a process so far.
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading cpu time of pid %d: %w", pid, err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0, fmt.Errorf("parsing /proc/%d/stat: no command field", pid)
	}
	// Fields 14 and 15 of the line (utime, stime) are 11 and 12 after the command.
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %d fields after the command", pid, len(f))
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return (ut + st) / userHZ, nil
}

// TotalCPUSeconds sums the user+system CPU time of the processes whose ids
// pid returns (those already gone count 0).
func TotalCPUSeconds[P any](ps []P, pid func(P) int) float64 {
	total := 0.0
	for _, p := range ps {
		if c, err := CPUSeconds(pid(p)); err == nil {
			total += c
		}
	}
	return total
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) { return testenv.NewPort() }

// MustFreePort is FreePort for benchmark set-up code, where no port is fatal.
func MustFreePort() int {
	p, err := FreePort()
	if err != nil {
		panic(err)
	}
	return p
}

// Counters reads the Prometheus text exposition at url and returns the
// samples whose metric name starts with prefix, by name without it, summed
// over their labels.
func Counters(url, prefix string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		name, val, ok := strings.Cut(l, " ")
		if i := strings.IndexByte(l, '{'); i >= 0 {
			name = l[:i]
			_, val, ok = strings.Cut(l[i:], "} ")
		}
		if !ok {
			continue
		}
		name, found := strings.CutPrefix(name, prefix)
		if !found {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] += v
		}
	}
	return out, nil
}

// WaitHTTP polls url every 50ms until a GET gets any answer, for at most
// timeout.
func WaitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not up: %w", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Exited waits for cmd in the background and returns a channel closed when
// it has ended.
func Exited(cmd *exec.Cmd) <-chan struct{} {
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return done
}

// Stop sends p SIGTERM and waits for exited; after 10s it kills p and its
// process group (a Setpgid child's) and waits again.
func Stop(p *os.Process, exited <-chan struct{}) {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
		_ = p.Kill()
		<-exited
	}
}
