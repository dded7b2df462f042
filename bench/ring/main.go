// Command ring measures the shared-memory ring reader: commit-to-delivery
// latency at 60 fps and the reader's CPU, with the writer in a child process
// so that the reader's CPU is this process's getrusage. It then measures the
// reader's CPU while the writer is stalled, unwatched and then watched (a
// client connected: Reader.Watch). The baseline runs at the same
// time, in a second child process that reads the same ring: a plain reader
// that polls every millisecond with time.Sleep (the obvious implementation),
// so that both see the same machine load.
//
// Frames are like the baselines' 1080p60 stream: a 100,000-byte keyframe
// every 60th frame, 15,000-byte deltas. The writer logs, for every frame,
// the time just before its commit started and just after its sequence store
// returned; latency is the reader's time.Now at delivery minus the latter
// (both CLOCK_REALTIME). Frames whose commit took the writer over 200 us
// (it was descheduled mid-commit, so the commit instant is unknown) are left
// out of the latency figures and counted.
//
//	go run ./bench/ring [-duration 20s] [-idle 5s] [-fps 60] [-baseline=false]
//
// The last line is
//
//	BENCH ring p50_us=.. p99_us=.. cpu_pct=.. idle_cpu_pct=.. frames=.. crc_fail=.. ... idle_watched_cpu_pct=.. ...
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/sdr-os/sdr-caddy/shmring"
)

const (
	roleEnv     = "SDR_RING_BENCH_WRITER"
	baselineEnv = "SDR_RING_BENCH_BASELINE"
	ringSize    = 4 << 20
	keyBytes    = 100_000
	deltaSize   = 15_000
)

func main() {
	if spec := os.Getenv(roleEnv); spec != "" {
		if err := runWriter(spec); err != nil {
			log.Fatalf("bench writer: %v", err)
		}
		return
	}
	if spec := os.Getenv(baselineEnv); spec != "" {
		if err := runBaseline(spec); err != nil {
			log.Fatalf("bench baseline: %v", err)
		}
		return
	}
	duration := flag.Duration("duration", 20*time.Second, "measured time with the writer at -fps")
	warmup := flag.Duration("warmup", 2*time.Second, "writer time before measuring (the reader learns the period)")
	idle := flag.Duration("idle", 5*time.Second, "measured time with the writer stalled")
	baseline := flag.Bool("baseline", true, "run the 1 ms polling baseline beside the reader")
	fps := flag.Int("fps", 60, "writer frame rate")
	flag.Parse()
	if err := run(*duration, *warmup, *idle, *baseline, *fps); err != nil {
		log.Fatalf("bench ring: %v", err)
	}
}

type result struct {
	lat       []time.Duration
	cpu       time.Duration // user+system of this process while measuring
	wall      time.Duration
	frames    uint64
	crcFail   uint64
	gaps      uint64
	idleCPU   time.Duration
	idleWall  time.Duration
	idlePolls uint64
	// The same with the frames watched (a client connected): the reader
	// polls the stalled writer every 5 ms instead of every 100 ms.
	watchedCPU   time.Duration
	watchedWall  time.Duration
	watchedPolls uint64
	polls        uint64
	unclear      int // frames left out: the writer took over maxCommitSpan to commit them
}

func run(duration, warmup, idle time.Duration, baseline bool, fps int) error {
	dir := "/dev/shm"
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		dir = os.TempDir()
	}
	dir, err := os.MkdirTemp(dir, "sdr-ring-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Printf("ring bench: %d fps, keyframe %d B every %d frames, deltas %d B, ring %s, GOMAXPROCS %d, %d CPUs\n",
		fps, keyBytes, fps, deltaSize, dir, runtime.GOMAXPROCS(0), runtime.NumCPU())

	ours, base, err := measure(filepath.Join(dir, "frames"), duration, warmup, idle, baseline, fps)
	if err != nil {
		return err
	}
	report("shmring.Reader", ours)
	if base != nil {
		report("baseline, same time, same ring: poll every 1 ms with time.Sleep", base)
	}

	p50, p99 := pct(ours.lat, 50), pct(ours.lat, 99)
	line := fmt.Sprintf("BENCH ring p50_us=%.1f p99_us=%.1f cpu_pct=%.3f idle_cpu_pct=%.4f frames=%d crc_fail=%d gaps=%d p999_us=%.1f max_us=%.1f left_out=%d idle_watched_cpu_pct=%.4f idle_polls_per_s=%.1f idle_watched_polls_per_s=%.1f",
		us(p50), us(p99), cpuPct(ours.cpu, ours.wall), cpuPct(ours.idleCPU, ours.idleWall), ours.frames, ours.crcFail,
		ours.gaps, us(pct(ours.lat, 99.9)), us(pct(ours.lat, 100)), ours.unclear,
		cpuPct(ours.watchedCPU, ours.watchedWall), perSec(ours.idlePolls, ours.idleWall), perSec(ours.watchedPolls, ours.watchedWall))
	if base != nil {
		bp50, bp99 := pct(base.lat, 50), pct(base.lat, 99)
		line += fmt.Sprintf(" base_p50_us=%.1f base_p99_us=%.1f base_cpu_pct=%.3f base_gaps=%d p50_vs_base=%.3f p99_vs_base=%.3f cpu_vs_base=%.3f",
			us(bp50), us(bp99), cpuPct(base.cpu, base.wall), base.gaps, ratio(p50, bp50), ratio(p99, bp99),
			cpuPct(ours.cpu, ours.wall)/max(cpuPct(base.cpu, base.wall), 1e-9))
	}
	targets := "met"
	if us(p50) > 50 || us(p99) > 500 || cpuPct(ours.cpu, ours.wall) > 2 {
		targets = "MISSED"
	}
	fmt.Printf("targets (p50 <= 50 us, p99 <= 500 us, reader <= 2%% of a core): %s\n", targets)
	fmt.Println(line)
	return nil
}

func perSec(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func report(name string, r *result) {
	fmt.Printf("%s: %d frames in %v, gaps %d, crc failures %d; latency of %d (%d left out: the writer was descheduled mid-commit)\n",
		name, r.frames, r.wall.Round(time.Millisecond), r.gaps, r.crcFail, len(r.lat), r.unclear)
	fmt.Printf("  commit-to-delivery p50 %.1f us  p90 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.1f us\n",
		us(pct(r.lat, 50)), us(pct(r.lat, 90)), us(pct(r.lat, 99)), us(pct(r.lat, 99.9)), us(pct(r.lat, 100)))
	fmt.Printf("  reader process CPU %.3f%% of one core", cpuPct(r.cpu, r.wall))
	if r.polls > 0 && r.frames > 0 {
		fmt.Printf(", %.1f polls per frame", float64(r.polls)/float64(r.frames))
	}
	if r.idleWall > 0 {
		fmt.Printf("; writer stalled: %.4f%% (%d polls in %v)", cpuPct(r.idleCPU, r.idleWall), r.idlePolls, r.idleWall.Round(time.Millisecond))
	}
	if r.watchedWall > 0 {
		fmt.Printf("; stalled and watched: %.4f%% (%d polls in %v)", cpuPct(r.watchedCPU, r.watchedWall), r.watchedPolls, r.watchedWall.Round(time.Millisecond))
	}
	fmt.Println()
}

// measure runs shmring.Reader in this process against a writer child, with
// the baseline reader child reading the same ring over the same window.
func measure(path string, duration, warmup, idle time.Duration, baseline bool, fps int) (ours, base *result, err error) {
	r, err := shmring.NewReader(shmring.ReaderConfig{Path: path, Size: ringSize})
	if err != nil {
		return nil, nil, err
	}
	var measuring atomic.Bool
	delivered := make(map[uint64]int64, int(duration.Seconds()+1)*fps)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, func(f shmring.Frame) {
			at := time.Now().UnixNano()
			if measuring.Load() {
				delivered[f.Header.FrameSeq] = at
			}
		})
	}()
	commitLog := path + ".commits"
	writer, err := startChild(roleEnv, fmt.Sprintf("%s|%d|%d|%s", path, fps, (warmup+duration).Nanoseconds(), commitLog), nil)
	if err != nil {
		return nil, nil, err
	}
	var baseOut bytes.Buffer
	var baseCmd *exec.Cmd
	if baseline {
		// The baseline measures from warmup to warmup+duration after now, like us.
		from := time.Now().Add(warmup)
		baseCmd, err = startChild(baselineEnv, fmt.Sprintf("%s|%d|%d", path, from.UnixNano(), from.Add(duration).UnixNano()), &baseOut)
		if err != nil {
			return nil, nil, err
		}
	}
	time.Sleep(warmup)
	s0, c0, t0 := r.Stats(), cpuTime(), time.Now()
	measuring.Store(true)
	time.Sleep(duration)
	measuring.Store(false)
	s1, c1, t1 := r.Stats(), cpuTime(), time.Now()
	if err := writer.Wait(); err != nil {
		return nil, nil, fmt.Errorf("writer child: %w", err)
	}
	commits, err := readCommits(commitLog)
	if err != nil {
		return nil, nil, err
	}
	if baseCmd != nil {
		if err := baseCmd.Wait(); err != nil {
			return nil, nil, fmt.Errorf("baseline child: %w", err)
		}
		var b baseResult
		if err := json.Unmarshal(baseOut.Bytes(), &b); err != nil {
			return nil, nil, fmt.Errorf("baseline child output %q: %w", baseOut.String(), err)
		}
		base = &result{cpu: time.Duration(b.CPUNs), wall: time.Duration(b.WallNs), frames: b.Frames, crcFail: b.CRCFail, gaps: b.Gaps}
		base.lat, base.unclear = latencies(b.Delivered, commits)
	}
	// The writer has stopped: the reader backs off.
	time.Sleep(time.Second)
	s2, c2, t2 := r.Stats(), cpuTime(), time.Now()
	time.Sleep(idle)
	s3, c3, t3 := r.Stats(), cpuTime(), time.Now()
	// A client connects: the stalled writer is polled every 5 ms, so that
	// the frame ending the stall is not lost.
	unwatch := r.Watch()
	time.Sleep(idle)
	s4, c4, t4 := r.Stats(), cpuTime(), time.Now()
	unwatch()
	cancel()
	if err := <-done; err != nil {
		return nil, nil, err
	}
	lat, unclear := latencies(delivered, commits)
	return &result{
		lat: lat, unclear: unclear, cpu: c1 - c0, wall: t1.Sub(t0),
		polls: s1.Polls - s0.Polls, frames: s1.Frames - s0.Frames, crcFail: s1.CRCFailures - s0.CRCFailures, gaps: s1.Gaps - s0.Gaps,
		idleCPU: c3 - c2, idleWall: t3.Sub(t2), idlePolls: s3.Polls - s2.Polls,
		watchedCPU: c4 - c3, watchedWall: t4.Sub(t3), watchedPolls: s4.Polls - s3.Polls,
	}, base, nil
}

// commit is when the writer stored one frame: just before it started and
// just after its sequence store returned.
type commit struct{ before, after int64 }

// maxCommitSpan bounds the commits whose latency is measured: a writer
// descheduled in the middle of a commit leaves its time unknown.
const maxCommitSpan = 200 * time.Microsecond

// latencies joins deliveries (frame_seq -> Unix ns) with the writer's
// commits: latency is delivery minus the end of the commit. Frames whose
// commit took longer than maxCommitSpan are left out and counted.
func latencies(delivered map[uint64]int64, commits map[uint64]commit) (lat []time.Duration, unclear int) {
	for seq, at := range delivered {
		c, ok := commits[seq]
		if !ok || time.Duration(c.after-c.before) > maxCommitSpan {
			unclear++
			continue
		}
		lat = append(lat, time.Duration(max(at-c.after, 0)))
	}
	return lat, unclear
}

func readCommits(path string) (map[uint64]commit, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the writer's commit log: %w", err)
	}
	var rows [][3]int64
	if err := json.Unmarshal(b, &rows); err != nil {
		return nil, fmt.Errorf("parsing the writer's commit log: %w", err)
	}
	m := make(map[uint64]commit, len(rows))
	for _, r := range rows {
		m[uint64(r[0])] = commit{r[1], r[2]}
	}
	return m, nil
}

type baseResult struct {
	Delivered map[uint64]int64 `json:"delivered"`
	CPUNs     int64            `json:"cpu_ns"`
	WallNs    int64            `json:"wall_ns"`
	Frames    uint64           `json:"frames"`
	CRCFail   uint64           `json:"crc_fail"`
	Gaps      uint64           `json:"gaps"`
}

// runBaseline is the baseline child: poll every millisecond with time.Sleep
// and the same parse path (shmring.ParseRegion over the mapping); print the
// result as JSON.
func runBaseline(spec string) error {
	parts := strings.Split(spec, "|")
	if len(parts) != 3 {
		return fmt.Errorf("bad baseline spec %q", spec)
	}
	path := parts[0]
	fromNs, err1 := strconv.ParseInt(parts[1], 10, 64)
	toNs, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("bad baseline spec %q", spec)
	}
	from, to := time.Unix(0, fromNs), time.Unix(0, toNs)
	var mem []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		f, err := os.Open(path)
		if err == nil {
			mem, err = syscall.Mmap(int(f.Fd()), 0, ringSize, syscall.PROT_READ, syscall.MAP_SHARED)
			f.Close()
			if err != nil {
				return fmt.Errorf("mapping %s: %w", path, err)
			}
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("writer never created %s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer syscall.Munmap(mem)
	seqp := (*uint64)(unsafe.Pointer(&mem[0]))
	res := baseResult{Delivered: map[uint64]int64{}}
	var last, lastFrameSeq uint64
	var c0 time.Duration
	var t0 time.Time
	measuring := false
	for {
		now := time.Now()
		if now.After(to) {
			break
		}
		if !measuring && now.After(from) {
			measuring, c0, t0 = true, cpuTime(), now
		}
		time.Sleep(time.Millisecond)
		s := atomic.LoadUint64(seqp)
		if s == 0 || s == last {
			continue
		}
		last = s
		c, err := shmring.ParseRegion(mem, true)
		if err != nil {
			if measuring {
				res.CRCFail++
			}
			continue
		}
		if measuring {
			res.Delivered[c.Header.FrameSeq] = time.Now().UnixNano()
			res.Frames++
			if lastFrameSeq != 0 && c.Header.FrameSeq > lastFrameSeq+1 {
				res.Gaps += c.Header.FrameSeq - lastFrameSeq - 1
			}
		}
		lastFrameSeq = c.Header.FrameSeq
	}
	res.CPUNs, res.WallNs = int64(cpuTime()-c0), int64(time.Since(t0))
	return json.NewEncoder(os.Stdout).Encode(res)
}

// startChild runs this program again in the role named by env.
func startChild(env, spec string, stdout io.Writer) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env+"="+spec)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s child: %w", env, err)
	}
	return cmd, nil
}

// runWriter is the child: it commits frames at fps for the given time,
// keeping to an absolute schedule with nanosleep.
func runWriter(spec string) error {
	var path string
	var fps int
	var ns int64
	parts := strings.Split(spec, "|")
	if len(parts) != 4 {
		return fmt.Errorf("bad writer spec %q", spec)
	}
	path = parts[0]
	logPath := parts[3]
	fps, err := strconv.Atoi(parts[1])
	if err != nil || fps <= 0 {
		return fmt.Errorf("bad fps in %q", spec)
	}
	if ns, err = strconv.ParseInt(parts[2], 10, 64); err != nil {
		return fmt.Errorf("bad duration in %q", spec)
	}
	runtime.LockOSThread()
	w, err := shmring.CreateWriter(path, ringSize)
	if err != nil {
		return err
	}
	defer w.Close()
	key, delta := make([]byte, keyBytes), make([]byte, deltaSize)
	for i := range key {
		key[i] = byte(i * 7)
	}
	for i := range delta {
		delta[i] = byte(i * 13)
	}
	period := time.Second / time.Duration(fps)
	start := time.Now()
	end := start.Add(time.Duration(ns))
	var commits [][3]int64
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * period)
		if due.After(end) {
			b, err := json.Marshal(commits)
			if err != nil {
				return err
			}
			return os.WriteFile(logPath, b, 0o644)
		}
		if d := time.Until(due); d > 0 {
			ts := syscall.NsecToTimespec(int64(d))
			syscall.Nanosleep(&ts, nil)
		}
		before := time.Now().UnixNano()
		h := shmring.Header{Codec: shmring.CodecH264, FrameID: uint64(before)}
		p := delta
		if i%fps == 0 {
			h.Flags, p = shmring.FlagKeyframe, key
		}
		stored, err := w.WriteFrame(h, p)
		if err != nil {
			return err
		}
		commits = append(commits, [3]int64{int64(stored.FrameSeq), before, time.Now().UnixNano()})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

func cpuPct(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return 100 * float64(cpu) / float64(wall)
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
