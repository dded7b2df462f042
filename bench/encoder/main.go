// Command encoder benchmarks sdr-caddy's encoder (nvenc over go-astiav,
// libx264 ultrafast/zerolatency) against the ffmpeg command line with the
// same flags on the same raw I420 frames, in the same run, at 720p and
// 1080p. It reports frames per second of both (free-running), their ratio,
// the per-frame encode latency of ours paced at 30 fps (p50/p99), and the
// CPU time per frame of both (user+system of the whole process: ours from
// getrusage, ffmpeg's from -benchmark), which a loaded machine disturbs far
// less than wall-clock rates.
//
//	go run ./bench/encoder [-frames 300] [-paced 150] [-rounds 2]
//
// The last line is
//
//	BENCH encoder res=1920x1080 fps=.. ffmpeg_fps=.. ratio=.. p50_ms=.. p99_ms=..
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testpattern"
	"github.com/sdr-os/sdr-caddy/nvenc"
	"github.com/sdr-os/sdr-caddy/shmring"
)

const (
	bitrateKbps = 4000
	gop         = 60
	fps         = 30
	distinct    = 60 // distinct raw frames, cycled
)

func main() {
	frames := flag.Int("frames", 300, "frames per free-running run")
	paced := flag.Int("paced", 150, "frames of the paced (30 fps) latency run")
	rounds := flag.Int("rounds", 2, "alternating rounds of ours and ffmpeg; the best of each counts")
	run := flag.String("run", "all", "which runs: all, compare (ours against ffmpeg) or raw (the raw-ring path)")
	rawSeconds := flag.Float64("raw-seconds", 10, "seconds the raw-ring run is measured, after a warm-up")
	writerPath := flag.String("raw-writer", "", "internal: be the raw-ring writer process for the ring at this path")
	flag.Parse()
	if *writerPath != "" {
		rawWriterMain(*writerPath)
		return
	}
	if *run != "all" && *run != "compare" && *run != "raw" {
		fmt.Fprintf(os.Stderr, "encoder benchmark: -run %q: want all, compare or raw\n", *run)
		os.Exit(2)
	}
	if !nvenc.Compiled {
		fmt.Fprintln(os.Stderr, "encoder benchmark: "+nvenc.ErrNotCompiled.Error())
		os.Exit(1)
	}
	if _, err := exec.LookPath("ffmpeg"); err != nil && *run != "raw" {
		fmt.Fprintln(os.Stderr, "encoder benchmark: ffmpeg not found (scripts/deps.sh installs it)")
		os.Exit(1)
	}
	if *run != "raw" {
		compare(*frames, *paced, *rounds)
	}
	if *run != "compare" {
		fmt.Printf("encoder_raw: %dx%d NV12 at %d fps through a raw ring into libx264 ultrafast, %d CPUs\n", rawWidth, rawHeight, rawFPS, runtime.NumCPU())
		line, err := rawRun(3*time.Second, time.Duration(*rawSeconds*float64(time.Second)))
		check(err)
		fmt.Println("BENCH encoder_raw " + line)
	}
}

// compare runs ours against the ffmpeg command line at 720p and 1080p.
func compare(frames, paced, rounds int) {
	fmt.Printf("encoder benchmark: libx264 preset ultrafast tune zerolatency, %d kbit/s CBR, gop %d, no B-frames, %d CPUs, %d frames x %d rounds\n",
		bitrateKbps, gop, runtime.NumCPU(), frames, rounds)
	var last string
	for _, res := range [][2]int{{1280, 720}, {1920, 1080}} {
		w, h := res[0], res[1]
		raw := render(w, h)
		var ours, theirs float64
		oursCPU, theirsCPU := math.Inf(1), math.Inf(1)
		for r := 0; r < rounds; r++ {
			f, cpu, err := oursFPS(w, h, raw, frames)
			check(err)
			ours, oursCPU = max(ours, f), min(oursCPU, cpu)
			f, cpu, err = ffmpegFPS(w, h, raw, frames)
			check(err)
			theirs, theirsCPU = max(theirs, f), min(theirsCPU, cpu)
		}
		p50, p99, err := pacedLatency(w, h, raw, paced)
		check(err)
		line := fmt.Sprintf("res=%dx%d fps=%.1f ffmpeg_fps=%.1f ratio=%.3f p50_ms=%.2f p99_ms=%.2f cpu_ms_per_frame=%.2f ffmpeg_cpu_ms_per_frame=%.2f cpu_ratio=%.3f",
			w, h, ours, theirs, ours/theirs, p50, p99, oursCPU, theirsCPU, theirsCPU/oursCPU)
		fmt.Println("encoder " + line)
		last = line
	}
	fmt.Println("BENCH encoder " + last)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "encoder benchmark:", err)
		os.Exit(1)
	}
}

// render makes the distinct raw frames both encoders get.
func render(w, h int) [][]byte {
	pat, err := testpattern.New(w, h, testpattern.I420)
	check(err)
	out := make([][]byte, distinct)
	t0 := time.Unix(1764238272, 0)
	for i := range out {
		out[i] = pat.Render(nil, uint64(i), t0.Add(time.Duration(i)*time.Second/fps))
	}
	return out
}

func openOurs(w, h int) (*nvenc.Encoder, error) {
	return nvenc.Open(nvenc.Config{
		Codec: shmring.CodecH264, Width: w, Height: h, Input: shmring.CodecI420, FPS: fps,
		BitrateKbps: bitrateKbps, GOP: gop, Preset: "ultrafast", Backends: []string{"libx264"},
	})
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// oursFPS returns frames per second and CPU milliseconds per frame.
func oursFPS(w, h int, raw [][]byte, n int) (float64, float64, error) {
	enc, err := openOurs(w, h)
	if err != nil {
		return 0, 0, err
	}
	defer enc.Close()
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < n; i++ {
		if _, err := enc.Encode(nvenc.Picture{Format: shmring.CodecI420, Width: w, Height: h, Stride: w, Data: raw[i%len(raw)]}, false); err != nil {
			return 0, 0, err
		}
	}
	cpu := cpuTime() - cpu0
	return float64(n) / time.Since(start).Seconds(), float64(cpu.Microseconds()) / 1000 / float64(n), nil
}

// pacedLatency encodes at 30 fps and returns the encode time percentiles.
func pacedLatency(w, h int, raw [][]byte, n int) (p50, p99 float64, err error) {
	enc, err := openOurs(w, h)
	if err != nil {
		return 0, 0, err
	}
	defer enc.Close()
	lat := make([]float64, 0, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / fps)))
		t0 := time.Now()
		if _, err := enc.Encode(nvenc.Picture{Format: shmring.CodecI420, Width: w, Height: h, Stride: w, Data: raw[i%len(raw)]}, false); err != nil {
			return 0, 0, err
		}
		lat = append(lat, float64(time.Since(t0).Microseconds())/1000)
	}
	slices.Sort(lat)
	return lat[len(lat)*50/100], lat[min(len(lat)-1, len(lat)*99/100)], nil
}

// ffmpeg -benchmark prints "bench: utime=1.234s stime=0.056s rtime=0.789s".
var benchRE = regexp.MustCompile(`utime=([0-9.]+)s stime=([0-9.]+)s rtime=([0-9.]+)s`)

// ffmpegFPS gives the ffmpeg command line the same frames (a file of the
// distinct frames, looped) with the same flags and reads its own measure of
// the encoding time (-benchmark rtime).
func ffmpegFPS(w, h int, raw [][]byte, n int) (rate, cpuMSPerFrame float64, err error) {
	f, err := os.CreateTemp("", "sdr-bench-encoder-*.yuv")
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(f.Name())
	for _, r := range raw {
		if _, err := f.Write(r); err != nil {
			f.Close()
			return 0, 0, err
		}
	}
	if err := f.Close(); err != nil {
		return 0, 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b := strconv.Itoa(bitrateKbps * 1000)
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostdin", "-benchmark", "-nostats", "-loglevel", "info",
		"-stream_loop", "-1", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", fmt.Sprintf("%dx%d", w, h), "-r", strconv.Itoa(fps), "-i", f.Name(),
		"-frames:v", strconv.Itoa(n),
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline",
		"-b:v", b, "-maxrate", b, "-bufsize", strconv.Itoa(bitrateKbps*1000/2), "-g", strconv.Itoa(gop),
		"-bf", "0", "-sc_threshold", "0", "-forced-idr", "1", "-thread_type", "slice", "-f", "h264", "-y", os.DevNull)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("ffmpeg: %w\n%s", err, out.String())
	}
	m := benchRE.FindSubmatch(out.Bytes())
	if m == nil {
		return 0, 0, fmt.Errorf("ffmpeg printed no benchmark line:\n%s", out.String())
	}
	var t [3]float64
	for i := range t {
		if t[i], err = strconv.ParseFloat(string(m[i+1]), 64); err != nil {
			return 0, 0, fmt.Errorf("ffmpeg benchmark line %q: %w", m[0], err)
		}
	}
	if t[2] <= 0 {
		return 0, 0, fmt.Errorf("ffmpeg rtime %q", m[3])
	}
	return float64(n) / t[2], (t[0] + t[1]) * 1000 / float64(n), nil
}
