// Package chromium drives Debian's headless chromium (through the Node.js
// playwright-core script tests/node/browser/driver.mjs) against the player
// that sdr-caddy serves. The live tests in tests/browser, tests/rtc and
// tests/ros use it, and so does bench/browser.
package chromium

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/harness"
)

// Path is the browser driven: Debian's chromium.
const Path = "/usr/bin/chromium"

// Available reports why the browser tests cannot run here, or nil: they
// need chromium, node and tests/node/node_modules (scripts/deps.sh).
func Available() error {
	if _, err := os.Stat(Path); err != nil {
		return fmt.Errorf("%s not installed (scripts/deps.sh installs it): %w", Path, err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		return fmt.Errorf("node not on PATH: %w", err)
	}
	pw := filepath.Join(harness.Root(), "tests", "node", "node_modules", "playwright-core")
	if _, err := os.Stat(pw); err != nil {
		return fmt.Errorf("playwright-core not installed in tests/node (run scripts/deps.sh): %w", err)
	}
	return nil
}

// Driver is one chromium with its driver script.
type Driver struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *strings.Builder
	cancel context.CancelFunc
	quit   time.Duration // how long Close waits for chromium to quit

	mu sync.Mutex
	id int
}

// Start launches chromium headless with a fresh profile in profileDir.
// Close waits up to quit for it to quit before it kills it.
func Start(ctx context.Context, profileDir string, quit time.Duration) (*Driver, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	script := filepath.Join(harness.Root(), "tests", "node", "browser", "driver.mjs")
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = filepath.Dir(script)
	cmd.Env = append(os.Environ(), "SDR_BROWSER_PROFILE="+profileDir, "CHROMIUM="+Path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Chromium is node's child: end the whole process group.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	in, err := cmd.StdinPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("starting browser driver: %w", err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("starting browser driver: %w", err)
	}
	d := &Driver{cmd: cmd, in: in, out: bufio.NewReaderSize(outPipe, 1<<20), stderr: &strings.Builder{}, cancel: cancel, quit: quit}
	cmd.Stderr = &lockedWriter{w: d.stderr}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("starting browser driver %s: %w", script, err)
	}
	var ready struct {
		OK      bool   `json:"ok"`
		Version string `json:"version"`
	}
	if err := d.read(&ready); err != nil || !ready.OK {
		d.Close()
		return nil, fmt.Errorf("starting chromium: %v\n%s", err, d.Stderr())
	}
	return d, nil
}

// Stderr is what the driver and chromium printed.
func (d *Driver) Stderr() string {
	lw := d.cmd.Stderr.(*lockedWriter)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return d.stderr.String()
}

// Do runs one operation of driver.mjs and decodes the answer into out
// (which may be nil).
func (d *Driver) Do(op string, args map[string]any, out any) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.id++
	req := map[string]any{"id": d.id, "op": op}
	for k, v := range args {
		req[k] = v
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("browser %s: %w", op, err)
	}
	if _, err := d.in.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("browser %s: writing request: %w\n%s", op, err, d.Stderr())
	}
	var raw json.RawMessage
	if err := d.read(&raw); err != nil {
		return fmt.Errorf("browser %s: %w\n%s", op, err, d.Stderr())
	}
	var head struct {
		ID    int    `json:"id"`
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return fmt.Errorf("browser %s: answer %.200s: %w", op, raw, err)
	}
	if head.ID != d.id {
		return fmt.Errorf("browser %s: answer to request %d, want %d", op, head.ID, d.id)
	}
	if !head.OK {
		return fmt.Errorf("browser %s: %s", op, head.Error)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("browser %s: decoding %.200s: %w", op, raw, err)
		}
	}
	return nil
}

func (d *Driver) read(v any) error {
	line, err := d.out.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("reading driver answer: %w", err)
	}
	return json.Unmarshal(line, v)
}

// Close quits chromium and waits for it; after the quit time given to
// Start it kills it.
func (d *Driver) Close() error {
	d.mu.Lock()
	_, _ = d.in.Write([]byte(`{"id":-1,"op":"quit"}` + "\n"))
	d.in.Close()
	d.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(d.quit):
		d.cancel()
		err = <-done
	}
	d.cancel()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("browser driver exited: %w\n%s", err, d.Stderr())
	}
	return err
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Stats is the player's stats object (web/player.js).
type Stats struct {
	State            string    `json:"state"`
	Connects         int       `json:"connects"`
	FramesReceived   int       `json:"framesReceived"`
	FramesDecoded    int       `json:"framesDecoded"`
	Keyframes        int       `json:"keyframes"`
	Dropped          int       `json:"dropped"`
	Missed           int       `json:"missed"`
	LastGapAt        float64   `json:"lastGapAt"`  // page clock (Unix ms) of the latest frame_seq gap
	RecentGaps       []float64 `json:"recentGaps"` // page clock (Unix ms) of the latest 16 gaps
	RecentKeys       []float64 `json:"recentKeys"` // page clock (Unix ms) of the latest 16 keyframes received
	DecodeErrors     int       `json:"decodeErrors"`
	ProtocolErrors   int       `json:"protocolErrors"`
	LastError        string    `json:"lastError"`
	Codec            string    `json:"codec"`
	Width            int       `json:"width"`
	Height           int       `json:"height"`
	FPS              float64   `json:"fps"`
	DecodeQueue      int       `json:"decodeQueue"`
	AgeMs            float64   `json:"ageMs"`
	DrawMs           float64   `json:"drawMs"` // smoothed drawImage time
	VideoLost        bool      `json:"videoLost"`
	FirstFrameMs     float64   `json:"firstFrameMs"`     // from ConnectStartedAt to the first drawn frame
	ConnectStartedAt float64   `json:"connectStartedAt"` // page clock (Unix ms)
	OpenedAt         float64   `json:"openedAt"`         // page clock (Unix ms) of the WebSocket open
	FirstVideoMs     float64   `json:"firstVideoMs"`     // from ConnectStartedAt to the first 0x01 message
	TelemetryCount   int       `json:"telemetryReceived"`
}

// Canvas is a grid of pixel samples of the player's canvas.
type Canvas struct {
	Width    int      `json:"width"`
	Height   int      `json:"height"`
	Samples  []uint32 `json:"samples"`
	Distinct int      `json:"distinct"`
	Blank    bool     `json:"blank"`
}

// Stats returns the stats of the player in page name.
func (d *Driver) Stats(name string) (Stats, error) {
	var r struct {
		Stats Stats `json:"stats"`
	}
	err := d.Do("stats", map[string]any{"name": name}, &r)
	return r.Stats, err
}

// Canvas samples the player's canvas in page name.
func (d *Driver) Canvas(name string) (Canvas, error) {
	var c Canvas
	err := d.Do("canvas", map[string]any{"name": name}, &c)
	return c, err
}

// Pixels returns the player's canvas as RGBA.
func (d *Driver) Pixels(name string) (w, h int, rgba []byte, err error) {
	var r struct {
		Width  int    `json:"width"`
		Height int    `json:"height"`
		RGBA   []byte `json:"rgba"` // base64 in JSON
	}
	if err := d.Do("pixels", map[string]any{"name": name}, &r); err != nil {
		return 0, 0, nil, err
	}
	if len(r.RGBA) != r.Width*r.Height*4 {
		return 0, 0, nil, fmt.Errorf("browser pixels: %d bytes for %dx%d", len(r.RGBA), r.Width, r.Height)
	}
	return r.Width, r.Height, r.RGBA, nil
}
