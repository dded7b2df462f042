package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/moduletest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// runRingCmd builds the registered sdr-ring command the way Caddy does and
// runs it with args.
func runRingCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out syncBuffer
	err := runRingCmdTo(t, context.Background(), &out, args...)
	return out.String(), err
}

// runRingCmdTo runs the sdr-ring command with args until it returns or ctx
// ends, writing its standard output to out.
func runRingCmdTo(t *testing.T, ctx context.Context, out io.Writer, args ...string) error {
	t.Helper()
	c, ok := caddycmd.Commands()["sdr-ring"]
	if !ok {
		t.Fatal("sdr-ring is not registered")
	}
	root := &cobra.Command{Use: "sdr-ring", SilenceErrors: true}
	c.CobraFunc(root)
	var stderr syncBuffer
	root.SetOut(out)
	root.SetErr(&stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	t.Logf("stderr of %v:\n%s", args, stderr.String())
	return err
}

// syncBuffer is a bytes.Buffer that a running command writes while the
// test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
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

// TestRingCmdWatch: watch prints a header and one line per interval, each
// with what the reader saw in it; --count stops it. How many frames a
// window holds depends on how much CPU the writer and the reader got (a
// busy machine starves both), so the test waits for the line that follows
// two keyframes in a row, however many windows that takes, and judges that
// line.
func TestRingCmdWatch(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "frames")
	w := moduletest.CreateRing(t, path, 1<<16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		tick := time.NewTicker(10 * time.Millisecond) // the subject: a live writer, 100 frames/s
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

	var out syncBuffer
	watchCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runRingCmdTo(t, watchCtx, &out, "watch", "--interval", "200ms", path) }()
	var line string
	testwait.For(t, "a watch line after two keyframes 25 frames apart", func() bool {
		lines := strings.Split(out.String(), "\n")
		for _, l := range lines[:len(lines)-1] { // complete lines only
			if strings.Contains(l, " keyint=25 ") {
				line = l
				return true
			}
		}
		return false
	})
	stop()
	if err := testwait.Recv(t, done, "watch to end with its context"); err != nil {
		t.Fatalf("watch: %v\n%s", err, out.String())
	}
	if first := strings.SplitN(out.String(), "\n", 2)[0]; !strings.HasPrefix(first, "watching "+path+" every 200ms") {
		t.Errorf("header %q", first)
	}
	// The window in which the second keyframe was read had frames.
	for _, want := range []string{"attached", "fps=", "max_bytes=2000", "codec=h264", "crc_fail=0"} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %q: %s", want, line)
		}
	}

	counted, err := runRingCmd(t, "watch", "--interval", "50ms", "--count", "3", path)
	if err != nil {
		t.Fatalf("watch --count 3: %v\n%s", err, counted)
	}
	if lines := strings.Split(strings.TrimSpace(counted), "\n"); len(lines) != 4 {
		t.Errorf("--count 3: want a header and 3 lines, got:\n%s", counted)
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
