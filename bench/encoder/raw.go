package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testpattern"
	"github.com/sdr-os/sdr-caddy/nvenc"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// The raw-ring run: a writer process commits 1080p NV12 frames at 60 fps
// into a raw-frame ring; this process reads them with the reader sdr_encoder
// runs (rawReaderConfig) and encodes them with libx264 through an
// nvenc.Session, as sdr_encoder does. The writer is a separate process (this
// program, run with -raw-writer) so that the CPU and the garbage measured
// are the reader's and the encoder's only.
const (
	rawWidth, rawHeight = 1920, 1080
	rawFPS              = 60
	rawDistinct         = 30 // distinct frames the writer cycles through
)

// rawReaderConfig is the raw-ring reader as sdr_encoder configures it
// (caddymodule/encoder, rawRingReader).
func rawReaderConfig(path string) shmring.ReaderConfig {
	return shmring.ReaderConfig{Path: path, MaxFrameSize: shmring.DefaultRawMaxFrameSize, PooledPayloads: true}
}

// rawRun returns the BENCH encoder_raw line.
func rawRun(warm, measure time.Duration) (string, error) {
	dir, err := os.MkdirTemp(shmDir(), "sdr-bench-encoder-raw-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "raw")
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	writer := exec.Command(self, "-raw-writer", path)
	writer.Stdout, writer.Stderr = os.Stderr, os.Stderr
	if err := writer.Start(); err != nil {
		return "", fmt.Errorf("starting the ring writer: %w", err)
	}
	defer func() {
		_ = writer.Process.Kill()
		_ = writer.Wait()
	}()

	r, err := shmring.NewReader(rawReaderConfig(path))
	if err != nil {
		return "", err
	}
	defer r.Watch()()
	sess, err := nvenc.NewSession(nvenc.SessionConfig{Name: "bench", Encoder: nvenc.Config{
		Codec: shmring.CodecH264, FPS: rawFPS, BitrateKbps: bitrateKbps, GOP: gop,
		Preset: "ultrafast", Backends: []string{"libx264"},
	}}, nvenc.RingInput{Reader: r})
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sess.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	// Warm up: the encoder opened, the pools and the heap at their steady size.
	deadline := time.Now().Add(warm + 30*time.Second)
	for sess.Stats().Frames == 0 {
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no frame encoded within %s (reader %+v, session %+v)", warm+30*time.Second, r.Stats(), sess.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(warm)

	a := snapshot(r, sess)
	time.Sleep(measure)
	b := snapshot(r, sess)
	if err := sess.Stats(); err.LastError != "" && err.Errors > 0 {
		fmt.Fprintln(os.Stderr, "encoder errors:", err.Errors, err.LastError)
	}
	wall := b.at.Sub(a.at).Seconds()
	ring := float64(b.ringFrames - a.ringFrames)
	enc := float64(b.encoded - a.encoded)
	if ring == 0 || enc == 0 {
		return "", errors.New("no frame read or encoded while measuring")
	}
	cpu := (b.cpu - a.cpu).Seconds()
	gc := b.gcCPU - a.gcCPU
	line := fmt.Sprintf("res=%dx%d format=nv12 writer_fps=%d fps=%.1f ring_fps=%.1f allocs_per_frame=%.1f alloc_bytes_per_frame=%.0f gc_cpu_pct=%.2f cpu_pct=%.1f gc_cycles=%d skipped=%d torn=%d",
		rawWidth, rawHeight, rawFPS, enc/wall, ring/wall,
		float64(b.mallocs-a.mallocs)/ring, float64(b.allocBytes-a.allocBytes)/ring,
		100*gc/cpu, 100*cpu/wall, b.gcCycles-a.gcCycles, b.skipped-a.skipped, b.torn-a.torn)
	fmt.Printf("encoder_raw: alloc figures are per frame read from the ring; fps is frames encoded per second, ring_fps frames read; gc_cpu_pct is runtime/metrics %s over the process's user+system CPU (getrusage), %.1f s measured\n",
		gcMetric, wall)
	return line, nil
}

const gcMetric = "/cpu/classes/gc/total:cpu-seconds"

type rawSnapshot struct {
	at                  time.Time
	cpu                 time.Duration
	gcCPU               float64
	mallocs, allocBytes uint64
	gcCycles            uint32
	ringFrames, encoded uint64
	skipped, torn       uint64
}

func snapshot(r *shmring.Reader, s *nvenc.Session) rawSnapshot {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	sample := []metrics.Sample{{Name: gcMetric}}
	metrics.Read(sample)
	rs, ss := r.Stats(), s.Stats()
	return rawSnapshot{at: time.Now(), cpu: cpuTime(), gcCPU: sample[0].Value.Float64(),
		mallocs: ms.Mallocs, allocBytes: ms.TotalAlloc, gcCycles: ms.NumGC,
		ringFrames: rs.Frames, encoded: ss.Frames, skipped: ss.Skipped, torn: rs.TornReads + rs.CRCFailures}
}

// shmDir is where the ring file goes: tmpfs when the machine has one.
func shmDir() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return ""
}

// rawWriter is the writer process: it commits NV12 test-pattern frames at
// rawFPS into the ring at path until it is killed.
func rawWriter(path string) error {
	pat, err := testpattern.New(rawWidth, rawHeight, testpattern.NV12)
	if err != nil {
		return err
	}
	d := shmring.RawDescriptor{Width: rawWidth, Height: rawHeight, Stride: uint32(pat.Stride())}
	frames := make([][]byte, rawDistinct)
	t0 := time.Now()
	for i := range frames {
		p, _, err := shmring.NewRawPayload(shmring.CodecNV12, d)
		if err != nil {
			return err
		}
		pat.Render(p[shmring.RawDescriptorSize:], uint64(i), t0.Add(time.Duration(i)*time.Second/rawFPS))
		frames[i] = p
	}
	w, err := shmring.CreateWriter(path, shmring.DefaultRawSize)
	if err != nil {
		return err
	}
	defer w.Close()
	period := time.Second / rawFPS
	start := time.Now()
	for n := 0; ; n++ {
		time.Sleep(time.Until(start.Add(time.Duration(n) * period)))
		if _, err := w.WriteFrame(shmring.Header{Codec: shmring.CodecNV12}, frames[n%len(frames)]); err != nil {
			return err
		}
	}
}

func rawWriterMain(path string) {
	if err := rawWriter(path); err != nil {
		fmt.Fprintln(os.Stderr, "encoder benchmark writer:", err)
		os.Exit(1)
	}
}
