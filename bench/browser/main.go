// Command browser measures the age of video frames in the embedded player:
// from the commit into the ring (frame_id, Unix ns, stamped by
// `caddy sdr-testsrc`) to the VideoDecoder output in headless chromium
// (WebCodecs, FFmpeg software decoding), at 60 fps, over 600 frames after a
// warm-up, at 640x360 and then 1280x720. The drawImage onto the canvas that
// follows each output is timed separately.
//
// In the same run a plain Go WebSocket client on the same stream records
// the age at receipt: the baseline of what the server and the network
// take. The browser's extra time (WebSocket in the page, decoding) is the
// difference; both are printed, with their ratio, and the load average,
// since other work on a shared machine shows in the tails.
//
//	go run ./bench/browser [-resolution 640x360,1280x720] [-fps 60] [-frames 600] [-warmup 120]
//
// The last line is
//
//	BENCH browser frames=.. age_p50_ms=.. age_p95_ms=.. dropped=.. missed=.. ws_p50_ms=.. ws_p95_ms=.. p95_vs_ws=.. draw_ms=.. resolution=.. load1=..
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/chromium"
	"github.com/sdr-os/sdr-caddy/internal/harness"
)

func main() {
	resolutions := flag.String("resolution", "640x360,1280x720", "picture sizes, comma-separated; the BENCH line is the last one's")
	fps := flag.Int("fps", 60, "frames per second")
	frames := flag.Int("frames", 600, "frames measured")
	warmup := flag.Int("warmup", 120, "frames skipped after the first one")
	flag.StringVar(&dumpPath, "dump", "", "write the browser's frame ages (ms), one a line, to this file")
	flag.Parse()
	var last string
	for _, res := range strings.Split(*resolutions, ",") {
		line, err := run(strings.TrimSpace(res), *fps, *frames, *warmup)
		if err != nil {
			fmt.Fprintln(os.Stderr, "browser benchmark:", err)
			os.Exit(1)
		}
		fmt.Println("browser " + line)
		last = line
	}
	fmt.Println("BENCH browser " + last)
}

var dumpPath string

func run(resolution string, fps, frames, warmup int) (string, error) {
	if err := chromium.Available(); err != nil {
		return "", err
	}
	bin, err := harness.CaddyBin()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "sdr-bench-browser-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	ring := filepath.Join(dir, "frames")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.Command(bin, "sdr-testsrc", "--path", ring, "--resolution", resolution,
		"--fps", fmt.Sprint(fps), "--gop", fmt.Sprint(fps))
	testsrc, err := harness.Start("testsrc", cmd)
	if err != nil {
		return "", err
	}
	defer func() { _ = testsrc.Stop(10 * time.Second) }()
	port, err := harness.FreePort()
	if err != nil {
		return "", err
	}
	srv, err := harness.StartCaddy("caddy", bin, dir, fmt.Sprintf(`{
	admin off
}
http://127.0.0.1:%d {
	handle /stream/ws {
		sdr_stream {
			source shm %s
		}
	}
	handle {
		sdr_player
	}
}
`, port, ring))
	if err != nil {
		return "", err
	}
	defer func() { _ = srv.Stop(10 * time.Second) }()
	base := fmt.Sprintf("127.0.0.1:%d", port)
	if err := srv.WaitReady(30*time.Second, harness.AnswersWith("http://"+base+"/", http.StatusOK)); err != nil {
		return "", fmt.Errorf("%w\n%s", err, srv.Output())
	}

	// Baseline: ages at receipt in a Go WebSocket client, over the same
	// time as the browser's window.
	wsAges := &ageLog{}
	wsCtx, wsStop := context.WithCancel(ctx)
	defer wsStop()
	wsDone := make(chan error, 1)
	go func() { wsDone <- receiveAges(wsCtx, "ws://"+base+"/stream/ws", wsAges) }()

	d, err := chromium.Start(ctx, filepath.Join(dir, "profile"), 10*time.Second)
	if err != nil {
		return "", err
	}
	defer d.Close()
	if err := d.Do("open", map[string]any{"url": "http://" + base + "/"}, nil); err != nil {
		return "", err
	}
	if err := d.Do("waitFrames", map[string]any{"count": 1, "timeoutMs": 20000}, nil); err != nil {
		return "", err
	}
	before, err := d.Stats("main")
	if err != nil {
		return "", err
	}
	wsAges.start(warmup)
	var r struct {
		Ages []float64 `json:"ages"`
	}
	timeout := (time.Duration(frames+warmup)*time.Second/time.Duration(fps))*6 + 20*time.Second
	if err := d.Do("ages", map[string]any{"skip": warmup, "count": frames, "timeoutMs": timeout.Milliseconds()}, &r); err != nil {
		st, _ := d.Stats("main")
		return "", fmt.Errorf("%w; player stats %+v\ntestsrc: %s", err, st, testsrc.Output())
	}
	after, err := d.Stats("main")
	if err != nil {
		return "", err
	}
	wsStop()
	if err := <-wsDone; err != nil {
		return "", fmt.Errorf("baseline client: %w", err)
	}
	ws := wsAges.values()
	if len(r.Ages) != frames || len(ws) == 0 {
		return "", fmt.Errorf("%d browser ages and %d baseline ages, want %d", len(r.Ages), len(ws), frames)
	}

	if dumpPath != "" {
		var b strings.Builder
		for _, a := range r.Ages {
			fmt.Fprintf(&b, "%.2f\n", a)
		}
		if err := os.WriteFile(dumpPath, []byte(b.String()), 0o644); err != nil {
			return "", err
		}
	}
	p50, p95, pmax := stats(r.Ages)
	w50, w95, _ := stats(ws)
	dropped := after.Dropped - before.Dropped
	missed := after.Missed - before.Missed
	fmt.Printf("browser benchmark: %s at %d fps (libx264 via sdr-testsrc, GOP %d), chromium %s software decoding, %d frames after %d warm-up\n",
		resolution, fps, fps, chromium.Path, frames, warmup)
	fmt.Printf("  commit -> VideoDecoder output         p50 %6.2f ms  p95 %6.2f ms  max %6.2f ms  (target p95 <= %.1f ms = 1.5 frame intervals)\n",
		p50, p95, pmax, 1500/float64(fps))
	fmt.Printf("  then drawImage onto the canvas        %6.2f ms (smoothed)\n", after.DrawMs)
	fmt.Printf("  commit -> Go WebSocket client (base)  p50 %6.2f ms  p95 %6.2f ms  (%d frames)\n", w50, w95, len(ws))
	fmt.Printf("  browser decoded %.1f fps, dropped %d, missed %d, decode errors %d\n", after.FPS, dropped, missed, after.DecodeErrors)
	load := loadAverage()
	fmt.Printf("  1-minute load average at the end: %s on %d CPUs (other work on the machine shows in the tails)\n", load, runtime.NumCPU())
	return fmt.Sprintf("frames=%d age_p50_ms=%.2f age_p95_ms=%.2f dropped=%d missed=%d ws_p50_ms=%.2f ws_p95_ms=%.2f p95_vs_ws=%.2f draw_ms=%.2f resolution=%s load1=%s",
		len(r.Ages), p50, p95, dropped, missed, w50, w95, p95/w95, after.DrawMs, resolution, load), nil
}

// ageLog collects frame ages (ms) once started, after skipping some.
type ageLog struct {
	mu   sync.Mutex
	on   bool
	skip int
	ages []float64
}

func (a *ageLog) start(skip int) {
	a.mu.Lock()
	a.on, a.skip = true, skip
	a.mu.Unlock()
}

func (a *ageLog) add(ms float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.on {
		return
	}
	if a.skip > 0 {
		a.skip--
		return
	}
	a.ages = append(a.ages, ms)
}

func (a *ageLog) values() []float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.ages)
}

// receiveAges reads 0x01 messages and logs now - frame_id for each.
func receiveAges(ctx context.Context, url string, log *ageLog) error {
	c, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); c.Close() }()
	first := true
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		now := time.Now()
		if len(msg) < 33 || msg[0] != 0x01 {
			continue
		}
		if first {
			// The GOP replayed on joining is old by construction.
			first = false
			continue
		}
		id := binary.LittleEndian.Uint64(msg[1:9])
		log.add(float64(now.UnixNano()-int64(id)) / 1e6)
	}
}

func stats(v []float64) (p50, p95, maxV float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(q*float64(len(s))+0.5) - 1
		return s[max(0, min(len(s)-1, i))]
	}
	return at(0.50), at(0.95), s[len(s)-1]
}

// loadAverage is the 1-minute load average (Linux), or "?".
func loadAverage() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}
