package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
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
	var in struct {
		Verified bool           `json:"verified"`
		Header   map[string]any `json:"header"`
	}
	if err != nil || json.Unmarshal([]byte(out), &in) != nil || !in.Verified {
		t.Errorf("--json: err %v, output:\n%s", err, out)
	}
	// snake_case names, the codec by name.
	want := map[string]any{"frame_id": float64(h.FrameID), "frame_seq": float64(h.FrameSeq), "size": float64(h.Size),
		"flags": float64(h.Flags), "keyframe": true, "codec": "h264", "crc32": float64(h.CRC32), "reserved": float64(0)}
	if !maps.Equal(in.Header, want) {
		t.Errorf("--json header %v, want %v", in.Header, want)
	}
	var all map[string]any
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatal(err)
	}
	checkSnakeCase(t, all)
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

// checkSnakeCase fails t for every key of v, at any depth, that is not
// snake_case.
func checkSnakeCase(t *testing.T, v any) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if k != strings.ToLower(k) || strings.ContainsAny(k, "- ") {
				t.Errorf("key %q is not snake_case", k)
			}
			checkSnakeCase(t, e)
		}
	case []any:
		for _, e := range v {
			checkSnakeCase(t, e)
		}
	}
}
