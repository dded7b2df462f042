package testenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// MCAPCheck reads the MCAP file at path with both readers of the reference
// implementation, @mcap/core (tests/node/mcap/check.mjs), and returns the
// JSON line the script prints. A missing node or @mcap/core fails the test
// with what to install.
func MCAPCheck(t testing.TB, path string) []byte {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found (scripts/deps.sh installs it): %v", err)
	}
	dir := filepath.Join(Root(), "tests", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@mcap", "core", "package.json")); err != nil {
		t.Fatalf("@mcap/core is not installed in tests/node (scripts/deps.sh runs npm ci there): %v", err)
	}
	ctx, cancel := context.WithDeadline(context.Background(), testwait.Deadline(2*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "mcap/check.mjs", path)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("check.mjs %s: %v\n%s", path, err, stderr.String())
	}
	return out
}

// FFprobe runs ffprobe -v error with args and returns what it printed; an
// error, or anything on its stderr, fails the test. A missing ffprobe
// fails it with the package to install.
func FFprobe(t testing.TB, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("ffprobe")
	if err != nil {
		t.Fatal("ffprobe not found: install Debian's ffmpeg package (apt-get install ffmpeg; scripts/deps.sh does)")
	}
	ctx, cancel := context.WithDeadline(context.Background(), testwait.Deadline(time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-v", "error"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() != 0 {
		t.Fatalf("ffprobe %q: %v: %s", args, err, stderr.String())
	}
	return out
}
