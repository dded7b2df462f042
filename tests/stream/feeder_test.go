package stream

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// feeder is the Python writer of tests/python/sdr_ring.py (`feed`), playing
// SDR_OS's simulator in its own process: it opens the ring the way the
// simulator's writer does (control region zeroed, one slot, header and
// payload, then write_len, then sequence) and writes what the test says.
type feeder struct {
	path    string
	cmd     *exec.Cmd
	in      io.WriteCloser
	replies chan map[string]any
}

// startFeeder starts the writer on a new ring of size bytes; it quits when
// the test ends.
func startFeeder(t *testing.T, size int) *feeder {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not on PATH (scripts/deps.sh installs it)")
	}
	path := filepath.Join(t.TempDir(), "frames")
	cmd := exec.Command(py, filepath.Join(testenv.Root(), "tests", "python", "sdr_ring.py"), "feed", path,
		"--size", strconv.Itoa(size))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testenv.LockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &feeder{path: path, cmd: cmd, in: in, replies: make(chan map[string]any, 16)}
	go func() {
		defer close(f.replies)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"error": fmt.Sprintf("unreadable reply %q", sc.Text())}
			}
			f.replies <- m
		}
	}()
	t.Cleanup(func() {
		in.Close() // end of commands: it quits
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("python feeder: %v\n%s", err, stderr.String())
			}
		case <-testwait.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("python feeder did not quit")
		}
	})
	if r := testwait.Recv(t, f.replies, "the python feeder to start"); r["ready"] != true {
		t.Fatalf("python feeder: %v", r)
	}
	return f
}

// do sends one command and returns its answer, once the writer has done it.
func (f *feeder) do(t *testing.T, cmd map[string]any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := f.in.Write(append(b, '\n')); err != nil {
		t.Fatalf("python feeder: %v", err)
	}
	r := testwait.RecvWithin(t, f.replies, time.Minute, fmt.Sprintf("the python feeder to do %s", b))
	if e, ok := r["error"]; ok {
		t.Fatalf("python feeder, %s: %v", b, e)
	}
	return r
}

// num reads a number from a reply.
func num(t *testing.T, r map[string]any, key string) uint64 {
	t.Helper()
	v, ok := r[key].(float64)
	if !ok {
		t.Fatalf("reply %v has no number %q", r, key)
	}
	return uint64(v)
}

// video is one 0x01 message as a client received it.
type video struct {
	shmring.Header
	Payload []byte
}

// Run is the writer run a frame belongs to (the feeder's frame_id).
func (v video) Run() uint64 { return v.FrameID >> 32 }

// watch reads c until it closes and hands every video frame on; the channel
// is closed when c ends.
func watch(c *websocket.Conn) <-chan video {
	ch := make(chan video, 4096)
	go func() {
		defer close(ch)
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if len(msg) == 0 || msg[0] != wire.TypeVideo {
				continue
			}
			h, p, err := wire.ParseVideo(msg)
			if err != nil {
				continue
			}
			ch <- video{h, p}
		}
	}()
	return ch
}

// nextVideo waits for the next frame on ch.
func nextVideo(t *testing.T, ch <-chan video, what string) video {
	t.Helper()
	return testwait.Recv(t, ch, what)
}
