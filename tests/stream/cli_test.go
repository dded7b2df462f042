package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// runCLI runs the built binary with args and returns its stdout, stderr
// and exit status.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(30*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.CaddyBin(t), args...)
	cmd.Dir = t.TempDir()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("caddy %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// caddyLogs returns the JSON log lines of stderr (Caddy's logger writes
// JSON when stderr is not a terminal), and fails t on a line that is not.
func caddyLogs(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var logs []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("stderr line is not a Caddy log line: %q", l)
			continue
		}
		logs = append(logs, m)
	}
	return logs
}

// TestCLIUsageErrorsExit2: an unknown subcommand, a stray argument or an
// unknown flag prints the usage on stderr and exits 2; the group without a
// subcommand prints its help and exits 0.
func TestCLIUsageErrorsExit2(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"sdr-ring", "bogus"},
		{"sdr-ring", "inspect", "a", "b"},
		{"sdr-ring", "inspect", "--bogus"},
		{"sdr-ring", "watch", "--interval", "1s", "--timeout", "10ms"},
		{"sdr-testsrc", "stray"},
		{"sdr-testsrc", "--bogus"},
	} {
		stdout, stderr, code := runCLI(t, args...)
		if code != 2 || !strings.Contains(stderr, "Usage:") || stdout != "" {
			t.Errorf("caddy %v: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and the usage on stderr", args, code, stdout, stderr)
		}
	}
	if stdout, _, code := runCLI(t, "sdr-ring"); code != 0 || !strings.Contains(stdout, "inspect") {
		t.Errorf("caddy sdr-ring: exit %d, stdout:\n%s\nwant its help and 0", code, stdout)
	}
}

// TestCLIWatchMissingRing: watch on a ring that never appears stops at its
// timeout and exits 1, saying so through Caddy's logger.
func TestCLIWatchMissingRing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "frames")
	stdout, stderr, code := runCLI(t, "sdr-ring", "watch", "--interval", "100ms", "--timeout", "300ms", path)
	if code != 1 || !strings.Contains(stdout, "NOT ATTACHED") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s\nwant exit 1 after NOT ATTACHED lines", code, stdout, stderr)
	}
	found := false
	for _, l := range caddyLogs(t, stderr) {
		msg, _ := l["msg"].(string)
		found = found || (l["level"] == "error" && strings.Contains(msg, "was not attached"))
	}
	if !found {
		t.Errorf("no error log line saying the ring was not attached:\n%s", stderr)
	}
}

// TestCLIWatchLogsThroughCaddy: watch's attach events are Caddy log lines
// (logger sdr-ring), and a watch of a live ring exits 0.
func TestCLIWatchLogsThroughCaddy(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "frames")
	w, err := shmring.CreateWriter(path, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteFrame(shmring.Header{Codec: shmring.CodecH264, Flags: shmring.FlagKeyframe}, []byte{0, 0, 0, 1, 0x65}); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runCLI(t, "sdr-ring", "watch", "--interval", "100ms", "--count", "1", path)
	if code != 0 || !strings.Contains(stdout, " attached ") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	found := false
	for _, l := range caddyLogs(t, stderr) {
		found = found || (l["logger"] == "sdr-ring" && l["msg"] == "attached to ring file")
	}
	if !found {
		t.Errorf("no Caddy log line of logger sdr-ring saying it attached:\n%s", stderr)
	}

	out, stderr, code := runCLI(t, "sdr-ring", "inspect", "--json", path)
	var in struct {
		Header struct {
			Codec    string `json:"codec"`
			Keyframe bool   `json:"keyframe"`
		} `json:"header"`
		WriteLen uint64 `json:"write_len"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &in) != nil || in.Header.Codec != "h264" || !in.Header.Keyframe || in.WriteLen != 37 {
		t.Errorf("inspect --json: exit %d %+v\n%s\n%s", code, in, out, stderr)
	}
}
