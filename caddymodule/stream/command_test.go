package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/moduletest"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// runRingCmd builds the registered sdr-ring command the way Caddy does and
// runs it with args.
func runRingCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	c, ok := caddycmd.Commands()["sdr-ring"]
	if !ok {
		t.Fatal("sdr-ring is not registered")
	}
	root := &cobra.Command{Use: "sdr-ring", SilenceErrors: true}
	c.CobraFunc(root)
	var out bytes.Buffer
	var stderr bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	t.Logf("stderr of %v:\n%s", args, stderr.String())
	return out.String(), err
}

func TestRingCmdInspect(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "frames")
	if _, err := runRingCmd(t, "inspect", path); err == nil {
		t.Error("inspect of an absent file succeeded")
	}
	w := moduletest.CreateRing(t, path, 1<<16)
	out, err := runRingCmd(t, "inspect", path)
	if err == nil || !strings.Contains(out, "EMPTY") {
		t.Errorf("empty ring: err %v, output:\n%s", err, out)
	}
	h, err := w.WriteFrame(shmring.Header{Flags: shmring.FlagKeyframe, Codec: shmring.CodecH264}, []byte("\x00\x00\x00\x01\x65 frame"))
	if err != nil {
		t.Fatal(err)
	}
	out, err = runRingCmd(t, "inspect", path)
	if err != nil || !strings.Contains(out, "status    OK") || !strings.Contains(out, "KEYFRAME") {
		t.Errorf("one frame: err %v, output:\n%s", err, out)
	}
	out, err = runRingCmd(t, "inspect", "--json", path)
	var in shmring.Inspection
	if err != nil || json.Unmarshal([]byte(out), &in) != nil || !in.Verified || in.Header != h {
		t.Errorf("--json: err %v, output:\n%s", err, out)
	}
	if _, err := runRingCmd(t, "inspect", "a", "b"); err == nil {
		t.Error("two paths accepted")
	}
}

func TestRingCmdWatch(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "frames")
	w := moduletest.CreateRing(t, path, 1<<16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ctx.Err() == nil; i++ {
			<-tick.C
			flags := uint16(0)
			if i%25 == 0 {
				flags = shmring.FlagKeyframe
			}
			w.WriteFrame(shmring.Header{Flags: flags, Codec: shmring.CodecH264}, make([]byte, 2000))
		}
	}()
	out, err := runRingCmd(t, "watch", "--interval", "400ms", "--count", "4", path)
	if err != nil {
		t.Fatalf("watch: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("want a header and 4 lines, got:\n%s", out)
	}
	last := lines[len(lines)-1]
	for _, want := range []string{"attached", "fps=", "max_bytes=2000", "keyint=25", "codec=h264", "crc_fail=0"} {
		if !strings.Contains(last, want) {
			t.Errorf("last line lacks %q: %s", want, last)
		}
	}
	if _, err := runRingCmd(t, "watch", "--interval", "0s", "--count", "1", path); err == nil {
		t.Error("zero interval accepted")
	}
}
