// Command recorder measures what the flight recorder (sdr_recorder) costs
// the live stream, and how fast a replay seeks, in one run.
//
// The same workload runs twice: the built caddy serving one stream
// (sdr_stream reading a ring this process writes) to N WebSocket clients,
// with the embedded nats-server and `jetstream on` (its store in a
// temporary directory), once without the sdr_recorder app and once with it
// (its defaults: file storage, 10 min / 2 GiB, idr_interval 2s). The
// embedded server runs in both, so the difference is the recorder's alone:
// its queue, its publishes and JetStream's file store, all in the caddy
// process whose CPU is measured.
//
// The stream is 1080p60-like, as in bench/stream and bench/scale: 60
// frames/s, a 100,000-byte keyframe every 60th frame, 15,000-byte deltas,
// the commit time in frame_id (Unix ns); the payloads are random bytes, not
// H.264. The clients live in a child process (this binary re-executed)
// and read cheaply (internal/benchstream's load generator, which
// bench/scale shares).
//
// After each run with the recorder:
//
//   - lost_frames: the frames the writer committed during the measured
//     window that are not in the recording, read back with
//     internal/recording.Read (by frame_seq), summed over the runs. It
//     counts a frame the stream itself never read too (the ring reader
//     fell a lap behind on a loaded machine): ring_gaps is those, over the
//     same windows, so lost_frames - ring_gaps is what the recorder lost.
//     The recorder's dropped and error counters are printed beside it.
//   - write_mb_s: caddy_sdr_recorder_bytes_total's increase over the
//     window (record bodies, MB = 10^6 bytes) per second.
//
// In every window, without the recorder and with it, this process also
// appends the same bytes (each frame's header and payload, the same sizes
// at the same cadence) to a plain file beside the store, with an
// fdatasync every second, and takes the CPU time of those write and
// fdatasync calls on their own thread: the physical floor of a recording
// of this stream on this machine. floor_pct is the writes' CPU over the
// base run's caddy CPU, floor_sync_pct the writes' and fdatasyncs'
// (medians over the windows), to be read beside cpu_overhead_pct. The
// page cache's writeback runs in kernel threads, for the floor as for
// JetStream's store, and counts for neither.
//
// After the last run with the recorder, seeks: -seeks replays
// (/stream/ws?replay=<t>) at random times t in the recording, one after
// another, while the recorder goes on recording; each is timed from the
// start of the TCP connect to the whole first 0x01 message, which must be
// the keyframe at or before t (seek_bad counts those that are not):
// seek_ms_p95. seek_at_ms_p95 is the time to the whole frame at t, the last
// one committed at or before t: the replay sends the lead-in from the
// keyframe up to t at once, so that is what a player decoding forward from
// the keyframe needs in hand. Both are times to frames as they arrive, not
// decodes: the payloads are random bytes, not H.264. The recording is as long as that run
// (warm-up, window, the read-back) unless -record asks for more before the
// seeks; the 10-minute recording is -record 10m (the writer then
// goes on for that long with no clients). rec_s is the recording's length
// at the seeks.
//
// Last, a keep: one WebSocket client sends a command (pause) 40 times a
// second, timed from the write to its arrival on NATS (command.genesis.pause),
// for 6 s alone and then while a keep of the whole recording copies (see
// keepCost): keep_cmd_p99_ratio is the commands' p99 during the copy over
// before it.
//
//	go run ./bench/recorder [-clients 100] [-window 30s] [-warmup 5s] [-repeat 1] [-seeks 20] [-record 0] [-toggle 3s] [-toggle-total 0] [-cpuprofile dir]
//
// -cpuprofile dir saves the caddy process's CPU profile over each window
// (Caddy's admin /debug/pprof/profile) as dir/without-i.pprof and
// dir/with-i.pprof, for `go tool pprof bin/caddy dir/with-0.pprof`.
//
// The last line:
//
//	BENCH recorder clients=.. cpu_overhead_pct=.. live_p99_ratio=.. seek_ms_p95=.. write_mb_s=.. lost_frames=.. cpu_overhead_runs_pct=.. toggle_pairs=.. rec_cpu_ms_s=.. rec_s=.. ...
//
// cpu_overhead_pct is what recording adds to the caddy process's CPU, as a
// percentage of the run without the recorder (with its clients). The
// recorder's own CPU comes from a toggle phase (toggle.go), last in each
// run with the recorder: with the clients gone and the writer going on,
// the admin API pauses and resumes the recorder every -toggle (for
// -toggle-total, by default -window), and each recording sub-window's
// CPU is compared with the paused one beside it;
// rec_cpu_ms_s is the median difference (toggle_pairs pairs over every
// run) in CPU ms per second. With 100 clients connected, the live path
// alone moves by more than that between sub-windows of one process, as
// between two processes. cpu_overhead_runs_pct compares the two runs'
// CPU instead (it is cpu_overhead_pct with -toggle 0). live_p99_ratio is
// the clients' p99 latency in the run with the recorder over the run
// without it. The two-run figures move with a load that changes between
// the runs: -repeat k runs k pairs, alternating their order, and the
// BENCH line has the medians of the pairs' figures (p99_ms, cpu_s and the
// base_ ones are medians of the runs). Compare load1, and run again.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/internal/benchstream"
	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/shmring"
)

const (
	loadgenEnv = "SDR_RECORDER_BENCH_LOADGEN"
	keyBytes   = 100_000
	deltaBytes = 15_000
)

func main() {
	if os.Getenv(loadgenEnv) == "1" {
		if err := benchstream.RunLoadgen(os.Args[1:], os.Stdout); err != nil {
			log.Fatalf("loadgen: %v", err)
		}
		return
	}
	var o options
	flag.IntVar(&o.clients, "clients", 100, "WebSocket clients")
	flag.DurationVar(&o.window, "window", 30*time.Second, "measurement window per run")
	flag.DurationVar(&o.warmup, "warmup", 5*time.Second, "warm-up before each window")
	flag.IntVar(&o.fps, "fps", 60, "frames per second")
	flag.IntVar(&o.gop, "gop", 60, "frames from one keyframe to the next")
	flag.IntVar(&o.seeks, "seeks", 20, "replays at random times in the recording")
	flag.DurationVar(&o.record, "record", 0, "least length of the recording before the seeks (the issue's figure: 10m)")
	flag.IntVar(&o.repeat, "repeat", 1, "pairs of runs (without, with), alternating their order; the BENCH line has the medians")
	flag.DurationVar(&o.toggle, "toggle", 3*time.Second, "sub-window of the phase that pauses and resumes the recorder in one process (0: no such phase)")
	flag.DurationVar(&o.toggleTotal, "toggle-total", 0, "length of the toggle phase (0: -window)")
	flag.StringVar(&o.profile, "cpuprofile", "", "directory for the caddy process's CPU profiles over each window (without-N.pprof, with-N.pprof)")
	flag.Parse()
	if o.repeat < 1 || o.clients < 1 || o.seeks < 1 || o.fps < 1 || o.gop < 1 {
		log.Fatal("-repeat, -clients, -seeks, -fps and -gop must be at least 1")
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			log.Fatal(err)
		}
	}
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

type options struct {
	clients        int
	window, warmup time.Duration
	fps, gop       int
	seeks          int
	record         time.Duration
	repeat         int
	profile        string
	toggle         time.Duration
	toggleTotal    time.Duration
}

// writer commits frames to the ring at fps and remembers the last frame_seq.
type writer struct {
	last atomic.Uint64
}

func (wr *writer) run(ctx context.Context, w *shmring.Writer, fps, gop int) {
	key := make([]byte, keyBytes)
	delta := make([]byte, deltaBytes)
	_, _ = rand.Read(key)
	_, _ = rand.Read(delta)
	period := time.Second / time.Duration(fps)
	next := time.Now()
	for i := 0; ctx.Err() == nil; i++ {
		h := shmring.Header{Codec: shmring.CodecH264}
		p := delta
		if i%gop == 0 {
			h.Flags, p = shmring.FlagKeyframe, key
		}
		h, err := w.WriteFrame(h, p)
		if err != nil {
			log.Printf("writing frame: %v", err)
			return
		}
		wr.last.Store(h.FrameSeq)
		next = next.Add(period)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		} else {
			next = time.Now()
		}
	}
}

func run(o options) error {
	dir, err := os.MkdirTemp("", "sdr-bench-recorder-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := harness.CaddyBin()
	if err != nil {
		return err
	}
	ring := filepath.Join(dir, "frames")
	w, err := shmring.CreateWriter(ring, 4<<20)
	if err != nil {
		return err
	}
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wr writer
	go wr.run(ctx, w, o.fps, o.gop)

	fmt.Printf("stream: %d fps, keyframe %d B every %d frames, deltas %d B; %d clients; window %s after %s warm-up; %d cores; load average %s\n",
		o.fps, keyBytes, o.gop, deltaBytes, o.clients, o.window, o.warmup, runtime.NumCPU(), harness.LoadAvg(3))

	var (
		bases, withs       []liveResult
		cpuPcts, p99Ratios []float64
		recCPUms           []float64 // the toggle phases' pairs: recording minus paused, CPU ms/s
		lost, gaps         uint64
		writeMBs           []float64
		seeks, seeksAt     []float64
		bad                int
		recLen             time.Duration
		keep               keepResult
	)
	for i := range o.repeat {
		// Alternate the order, so that a load that drifts over the run
		// does not always favour the same one.
		order := []bool{false, true}
		if i%2 == 1 {
			order = []bool{true, false}
		}
		var base, withRec liveResult
		for _, rec := range order {
			if !rec {
				r, err := runWithout(bin, dir, ring, o, profilePath(o.profile, "without", i))
				if err != nil {
					return fmt.Errorf("without the recorder: %w", err)
				}
				report("without the recorder", r)
				base = r
				continue
			}
			r, err := runWith(bin, dir, ring, o, &wr, i == o.repeat-1, profilePath(o.profile, "with", i))
			if err != nil {
				return fmt.Errorf("with the recorder: %w", err)
			}
			withRec = r.live
			for _, d := range r.toggle.diffs {
				recCPUms = append(recCPUms, d*1000)
			}
			lost += r.lost
			gaps += r.gaps
			writeMBs = append(writeMBs, r.writeMBs)
			if r.seeks != nil {
				seeks, seeksAt, bad, recLen = r.seeks, r.seeksAt, r.bad, r.recLen
			}
			if r.keep != nil {
				keep = *r.keep
			}
		}
		bases, withs = append(bases, base), append(withs, withRec)
		if base.CPU > 0 {
			cpuPcts = append(cpuPcts, (withRec.CPU/base.CPU-1)*100)
		}
		if base.P99 > 0 {
			p99Ratios = append(p99Ratios, withRec.P99/base.P99)
		}
	}
	p99 := func(rs []liveResult) []float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, r.P99)
		}
		return v
	}
	cpu := func(rs []liveResult) []float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, r.CPU)
		}
		return v
	}
	errs := 0
	for _, r := range append(bases, withs...) {
		errs += r.Errors
	}
	// The floor over each pair's base CPU, the write alone and with the
	// fdatasyncs, medians over every window.
	var floorPcts, floorSyncPcts []float64
	for i, b := range bases {
		if b.CPU <= 0 {
			continue
		}
		for _, r := range []liveResult{b, withs[i]} {
			floorPcts = append(floorPcts, r.FloorWrite/b.CPU*100)
			floorSyncPcts = append(floorSyncPcts, (r.FloorWrite+r.FloorSync)/b.CPU*100)
		}
	}
	// The toggle phases' recorder CPU over the runs without it, when they
	// ran; the two runs' difference is printed beside it.
	overhead := median(cpuPcts)
	if base := median(cpu(bases)) / o.window.Seconds(); len(recCPUms) > 0 && base > 0 {
		overhead = median(recCPUms) / 1000 / base * 100
	}
	fmt.Printf("BENCH recorder clients=%d cpu_overhead_pct=%.1f live_p99_ratio=%.2f seek_ms_p95=%.1f write_mb_s=%.2f lost_frames=%d cpu_overhead_runs_pct=%.1f toggle_pairs=%d rec_cpu_ms_s=%.2f rec_s=%.0f floor_pct=%.2f floor_sync_pct=%.2f seeks=%d seek_ms_p50=%.1f seek_at_ms_p95=%.1f seek_bad=%d ring_gaps=%d p99_ms=%.2f base_p99_ms=%.2f cpu_s=%.2f base_cpu_s=%.2f window_s=%.0f runs=%d live_errors=%d keep_cmd_p99_ratio=%.2f keep_cmd_p99_ms=%.2f keep_base_cmd_p99_ms=%.2f keep_cmd_p50_ms=%.2f keep_cmd_max_ms=%.2f keep_cmds=%d keep_cmds_lost=%d keep_copy_s=%.1f keep_mb=%.1f load1=%s\n",
		o.clients, overhead, median(p99Ratios), pct(seeks, 0.95), median(writeMBs), lost, median(cpuPcts), len(recCPUms), median(recCPUms), recLen.Seconds(), median(floorPcts), median(floorSyncPcts), len(seeks), pct(seeks, 0.5), pct(seeksAt, 0.95), bad, gaps,
		median(p99(withs)), median(p99(bases)), median(cpu(withs)), median(cpu(bases)), o.window.Seconds(), o.repeat, errs,
		ratio(pct(keep.during, 0.99), pct(keep.base, 0.99)), pct(keep.during, 0.99), pct(keep.base, 0.99), pct(keep.during, 0.5), pct(keep.during, 1),
		len(keep.during), keep.lost, keep.copyS, keep.keptMB, harness.LoadAvg(1))
	return nil
}

// ratio is a/b, 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// median of v (the mean of the middle two for an even count), 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// runWithout measures the stream without the recorder.
func runWithout(bin, dir, ring string, o options, profile string) (liveResult, error) {
	c, err := startCaddy(bin, dir, "without", ring, false)
	if err != nil {
		return liveResult{}, err
	}
	defer c.stop()
	return measure(c, o, profile, nil, nil)
}

// withResult is what a run with the recorder measured.
type withResult struct {
	live     liveResult
	writeMBs float64
	lost     uint64 // frames committed in the window, not in the recording
	gaps     uint64 // of the ring reader in the window: frames the stream itself missed
	// The seeks, when asked for: ms each, how many did not start where
	// they should, and the recording's length then.
	seeks, seeksAt []float64
	bad            int
	recLen         time.Duration
	keep           *keepResult // after the seeks
	toggle         toggleResult
}

// runWith measures the stream with the recorder, reads the window's frames
// back from the recording, and when seek is set, goes on recording until
// the recording is o.record long and seeks in it.
func runWith(bin, dir, ring string, o options, wr *writer, seek bool, profile string) (withResult, error) {
	var res withResult
	c, err := startCaddy(bin, dir, "with", ring, true)
	if err != nil {
		return res, err
	}
	defer c.stop()
	recStart, err := c.waitRecording(60 * time.Second)
	if err != nil {
		return res, err
	}
	var (
		seq0, seq1   uint64
		t0, t1       time.Time
		m0, m1       map[string]float64
		merr0, merr1 error
	)
	res.live, err = measure(c, o, profile, func() {
		seq0, t0 = wr.last.Load(), time.Now()
		m0, merr0 = c.counters()
	}, func() {
		seq1, t1 = wr.last.Load(), time.Now()
		m1, merr1 = c.counters()
	})
	if err != nil {
		return res, err
	}
	if err := errors.Join(merr0, merr1); err != nil {
		return res, err
	}
	report("with the recorder", res.live)
	res.writeMBs = (m1["recorder_bytes_total"] - m0["recorder_bytes_total"]) / 1e6 / t1.Sub(t0).Seconds()
	res.gaps = uint64(m1["stream_ring_gaps_total"] - m0["stream_ring_gaps_total"])

	nc, err := nats.Connect("nats://"+c.natsAddr, nats.Timeout(10*time.Second))
	if err != nil {
		return res, fmt.Errorf("connecting to the embedded nats-server: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	lost, rst, err := lostFrames(js, seq0, seq1, t0, 30*time.Second)
	if err != nil {
		return res, err
	}
	res.lost = lost
	fmt.Printf("recording: frames %d..%d committed in the window (%d), %d not in the recording (ring gaps in the window: %d); read back: %d frames (%d lead-in, %d incomplete, %d undecodable, %d duplicates); over the window: %s\n",
		seq0+1, seq1, seq1-seq0, lost, res.gaps, rst.Frames, rst.LeadIn, rst.Incomplete, rst.Undecodable, rst.Duplicates, counterDelta(m0, m1))
	if !seek {
		return res, runToggle(c, o, &res)
	}

	if wait := o.record - time.Since(recStart); wait > 0 {
		fmt.Printf("recording on for %s more (-record %s), no clients\n", wait.Round(time.Second), o.record)
		time.Sleep(wait)
	}
	res.recLen = time.Since(recStart)
	res.seeks, res.seeksAt, res.bad, err = seekAll(c, recStart, o.seeks, time.Second*time.Duration(o.gop)/time.Duration(o.fps))
	if err != nil {
		return res, err
	}
	slices.Sort(res.seeks)
	slices.Sort(res.seeksAt)
	fmt.Printf("seeks in a %.0f s recording: %d; to the keyframe: p50 %.1f ms, p95 %.1f ms, max %.1f ms; to the frame at the time: p50 %.1f ms, p95 %.1f ms, max %.1f ms; %d did not start with the keyframe at or before the time\n",
		res.recLen.Seconds(), len(res.seeks), pct(res.seeks, 0.5), pct(res.seeks, 0.95), pct(res.seeks, 1),
		pct(res.seeksAt, 0.5), pct(res.seeksAt, 0.95), pct(res.seeksAt, 1), res.bad)
	fmt.Println("  " + counterTotal(c))

	before := max(time.Second, min(10*time.Minute, res.recLen-10*time.Second).Truncate(time.Second))
	k, err := keepCost(c, nc, before, 6*time.Second)
	if err != nil {
		return res, fmt.Errorf("keep: %w", err)
	}
	res.keep = &k
	fmt.Printf("keep of the last %s: copied %.1f MB in %.1f s; commands (%d/s, WebSocket to NATS) before it: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d); during the copy: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d); %d never arrived\n",
		before, k.keptMB, k.copyS, commandRate, pct(k.base, 0.5), pct(k.base, 0.99), pct(k.base, 1), len(k.base),
		pct(k.during, 0.5), pct(k.during, 0.99), pct(k.during, 1), len(k.during), k.lost)
	return res, runToggle(c, o, &res)
}

// runToggle runs the toggle phase (toggleCost) in the run's process, last:
// its pauses leave gaps in the recording that the seeks must not meet.
func runToggle(c *server, o options, res *withResult) error {
	if o.toggle <= 0 {
		return nil
	}
	settle := time.Second*time.Duration(o.gop)/time.Duration(o.fps) + 500*time.Millisecond
	total := o.toggleTotal
	if total <= 0 {
		total = o.window
	}
	tr, err := toggleCost(c, total, o.toggle, settle)
	if err != nil {
		return fmt.Errorf("pausing and resuming the recorder: %w", err)
	}
	res.toggle = tr
	ms := make([]float64, len(tr.diffs))
	for i, d := range tr.diffs {
		ms[i] = d * 1000
	}
	fmt.Printf("no clients, recorder paused and recording in turn (%s each, %s after each switch): CPU paused %s s/s, recording %s s/s; recording minus paused: %s ms/s\n",
		o.toggle, settle, fmtFloats(tr.paused, 4), fmtFloats(tr.recording, 4), fmtFloats(ms, 2))
	return nil
}

// fmtFloats joins v with the given decimals.
func fmtFloats(v []float64, decimals int) string {
	out := ""
	for i, x := range v {
		if i > 0 {
			out += " "
		}
		out += strconv.FormatFloat(x, 'f', decimals, 64)
	}
	return out
}

func report(what string, r liveResult) {
	fmt.Printf("%-22s p50 %6.2f ms  p99 %6.2f ms  p99.9 %6.2f ms  samples %d  %.2f GB  caddy CPU %.2f s  errors %d %s\n",
		what, r.P50, r.P99, r.P999, r.Samples, float64(r.Bytes)/1e9, r.CPU, r.Errors, r.FirstErr)
	fmt.Printf("%-22s floor: %.2f MB appended to a file, write CPU %.3f s, fdatasync (every second) CPU %.3f s\n",
		"", float64(r.FloorBytes)/1e6, r.FloorWrite, r.FloorSync)
}

// pct is the p-quantile of sorted ms values.
func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// profilePath is the file of run i's CPU profile in dir, "" without dir.
func profilePath(dir, what string, i int) string {
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", what, i))
}

// cpuProfile fetches c's CPU profile over d from its admin endpoint into
// path; it reports a failure and returns.
func cpuProfile(c *server, d time.Duration, path string) {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", c.admin, int(d.Seconds())))
	if err == nil {
		defer resp.Body.Close()
		var f *os.File
		if f, err = os.Create(path); err == nil {
			_, err = io.Copy(f, resp.Body)
			err = errors.Join(err, f.Close())
		}
	}
	if err != nil {
		log.Printf("CPU profile %s: %v", path, err)
	}
}

// liveResult is what one run measured of the live stream.
type liveResult struct {
	benchstream.LoadResult
	CPU float64 // the caddy process's CPU seconds over the window
	// The floor's CPU seconds over the window (writes, fdatasyncs) and
	// its bytes.
	FloorWrite, FloorSync float64
	FloorBytes            int64
}

// measure runs the load generator against c and reads c's CPU over the
// window, its CPU profile into profile when that is set, and the floor
// beside it; start and end, when given, run at the window's edges.
func measure(c *server, o options, profile string, start, end func()) (liveResult, error) {
	load := benchstream.Load{URLs: []string{c.wsURL("")}, Clients: o.clients, Warmup: o.warmup, Window: o.window, FPS: o.fps}
	cmd := exec.Command(os.Args[0], load.Args()...)
	cmd.Env = append(os.Environ(), loadgenEnv+"=1")
	cmd.Stderr = os.Stderr
	var (
		res       liveResult
		cpu0      float64
		profDone  chan struct{}
		floorDone chan struct{}
		fr        floorResult
		ferr      error
	)
	floorCtx, floorStop := context.WithCancel(context.Background())
	defer func() {
		floorStop()
		if floorDone != nil {
			<-floorDone
		}
		if profDone != nil {
			<-profDone
		}
	}()
	lr, err := benchstream.Measure(cmd, func() error {
		cpu0 = harness.TotalCPUSeconds(c.Pid())
		floorDone = make(chan struct{})
		go func() {
			defer close(floorDone)
			fr, ferr = floor(floorCtx, c.floorPath, o.fps, o.gop, time.Second)
		}()
		if profile != "" {
			profDone = make(chan struct{})
			go func() { defer close(profDone); cpuProfile(c, o.window, profile) }()
		}
		if start != nil {
			start()
		}
		return nil
	}, func() error {
		res.CPU = harness.TotalCPUSeconds(c.Pid()) - cpu0
		if floorDone != nil {
			floorStop()
			<-floorDone
			floorDone = nil
		}
		if end != nil {
			end()
		}
		return ferr
	})
	if err != nil {
		return liveResult{}, err
	}
	res.LoadResult = lr
	res.FloorWrite, res.FloorSync, res.FloorBytes = fr.write.Seconds(), fr.sync.Seconds(), fr.bytes
	return res, nil
}

// server is a caddy process of the benchmark.
type server struct {
	*harness.Process
	port      int
	admin     string
	natsAddr  string
	floorPath string // the floor's file, on the same file system as the store
}

func (s *server) stop() { _ = s.Stop(10 * time.Second) }

func (s *server) wsURL(query string) string {
	u := fmt.Sprintf("ws://127.0.0.1:%d/stream/ws", s.port)
	if query != "" {
		u += "?" + query
	}
	return u
}

// counters reads the process's caddy_sdr_ counters, by name without that
// prefix, summed over their labels.
func (s *server) counters() (map[string]float64, error) {
	return harness.Counters(http.DefaultClient, "http://"+s.admin+"/metrics", "caddy_sdr_")
}

// waitRecording waits until the recorder records (caddy_sdr_recorder_state
// 1) and returns when it saw that.
func (s *server) waitRecording(timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		m, err := s.counters()
		if err == nil && m["recorder_state"] == 1 {
			return time.Now(), nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("the recorder did not start recording within %s\n%s", timeout, s.Output())
}

// startCaddy runs caddy serving the ring as stream front at /stream/ws,
// with the embedded nats-server (JetStream on, its store in a new directory
// under dir) and, when recorder is set, the sdr_recorder app; it waits
// until the stream answers.
func startCaddy(bin, dir, name, ring string, recorder bool) (*server, error) {
	store, err := os.MkdirTemp(dir, "jetstream-"+name+"-")
	if err != nil {
		return nil, err
	}
	s := &server{
		port:      harness.MustFreePort(),
		admin:     fmt.Sprintf("127.0.0.1:%d", harness.MustFreePort()),
		natsAddr:  fmt.Sprintf("127.0.0.1:%d", harness.MustFreePort()),
		floorPath: filepath.Join(dir, name+"-floor"),
	}
	rec := ""
	if recorder {
		rec = "\tsdr_recorder\n"
	}
	caddyfile := fmt.Sprintf(`{
	admin %s
	sdr_nats {
		embedded {
			listen %s
			jetstream on
			store_dir %s
		}
	}
%s}
http://127.0.0.1:%d {
	handle /stream/ws {
		sdr_stream front {
			source shm %s
		}
	}
}
`, s.admin, s.natsAddr, store, rec, s.port, ring)
	hp, err := harness.StartCaddy(name, bin, dir, caddyfile)
	if err != nil {
		return nil, err
	}
	s.Process = hp
	if err := s.WaitReady(60*time.Second, harness.AnswersWith(fmt.Sprintf("http://127.0.0.1:%d/stream/ws", s.port), http.StatusOK)); err != nil {
		s.stop()
		return nil, fmt.Errorf("%w\n%s", err, s.Output())
	}
	return s, nil
}

// lostFrames reads the recording's video from before t0 until it holds a
// frame after seq1 (the recorder stores a frame a little after the writer
// commits it), and returns how many of the frames seq0+1..seq1 it lacks.
func lostFrames(js jetstream.JetStream, seq0, seq1 uint64, t0 time.Time, timeout time.Duration) (uint64, recording.ReadStats, error) {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		seen := make([]bool, seq1-seq0)
		var found, maxSeq uint64
		st, err := recording.Read(ctx, js, recording.ReadOptions{From: t0.Add(-time.Second), Kinds: []recording.Kind{recording.KindVideo}},
			func(r recording.Record) error {
				s := r.Frame.Header.FrameSeq
				maxSeq = max(maxSeq, s)
				if s > seq0 && s <= seq1 && !seen[s-seq0-1] {
					seen[s-seq0-1] = true
					found++
				}
				return nil
			})
		cancel()
		if err != nil {
			return 0, st, fmt.Errorf("reading the recording back: %w", err)
		}
		if maxSeq > seq1 || time.Now().After(deadline) {
			var missing []string
			for i, ok := range seen {
				if !ok && len(missing) < 10 {
					missing = append(missing, strconv.FormatUint(seq0+1+uint64(i), 10))
				}
			}
			if len(missing) > 0 {
				fmt.Printf("frames not in the recording (the first 10 at most): %s\n", strings.Join(missing, " "))
			}
			return seq1 - seq0 - found, st, nil
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// seekTimes are one seek's: to the first video message (the keyframe at or
// before t), and to the frame at t, the last one committed at or before t
// (the lead-in from the keyframe up to t comes at once).
type seekTimes struct{ first, at time.Duration }

// seekAll replays from n random times in the recording (after its first
// 2 s, before its last 2 s), one after another, and returns their times in
// ms (to the first video message, to the frame at t), and how many did not
// start with a keyframe committed at or before the time and at most one GOP
// (plus a second's slack) before it.
func seekAll(s *server, recStart time.Time, n int, gop time.Duration) (first, at []float64, bad int, err error) {
	lo, hi := recStart.Add(2*time.Second), time.Now().Add(-2*time.Second)
	if !hi.After(lo) {
		return nil, nil, 0, fmt.Errorf("the recording (%s) is too short to seek in", time.Since(recStart).Round(time.Second))
	}
	for range n {
		t := lo.Add(time.Duration(mrand.Int64N(int64(hi.Sub(lo)))))
		d, id, flags, err := seek(s, t)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("seeking to %s: %w", t.Format(time.RFC3339Nano), err)
		}
		first, at = append(first, float64(d.first)/1e6), append(at, float64(d.at)/1e6)
		k := time.Unix(0, int64(id))
		if flags&shmring.FlagKeyframe == 0 || k.After(t) || t.Sub(k) > gop+time.Second {
			bad++
		}
	}
	return first, at, bad, nil
}

// seek opens a replay from t and reads it until the first frame committed
// after t; it returns the times from the connect to the whole first video
// message and to the whole last one committed at or before t, and the
// first one's frame_id and flags.
func seek(s *server, t time.Time) (seekTimes, uint64, uint16, error) {
	var st seekTimes
	start := time.Now()
	conn, br, err := benchstream.Dial(s.wsURL("replay="+url.QueryEscape(t.UTC().Format(time.RFC3339Nano))), 30*time.Second)
	if err != nil {
		return st, 0, 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	var (
		hdr      [1 + shmring.HeaderSize]byte
		id0      uint64
		flags0   uint16
		gotFirst bool
	)
	for {
		op, n, err := benchstream.ReadFrameHeader(br)
		if err != nil {
			return st, 0, 0, err
		}
		if op == benchstream.OpClose {
			b := make([]byte, min(n, 125))
			_, _ = io.ReadFull(br, b)
			return st, 0, 0, fmt.Errorf("closed before the frame after the seek time: %q", b)
		}
		if op != benchstream.OpBinary || n < uint64(len(hdr)) {
			if _, err := br.Discard(int(n)); err != nil {
				return st, 0, 0, err
			}
			continue
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return st, 0, 0, err
		}
		if _, err := br.Discard(int(n) - len(hdr)); err != nil {
			return st, 0, 0, err
		}
		if hdr[0] != 0x01 {
			continue
		}
		d := time.Since(start)
		id := binary.LittleEndian.Uint64(hdr[1:9])
		if !gotFirst {
			gotFirst, st.first = true, d
			id0, flags0 = id, binary.LittleEndian.Uint16(hdr[1+20:])
		}
		if int64(id) > t.UnixNano() {
			if st.at == 0 { // the first frame is after t: it is the frame at t
				st.at = d
			}
			return st, id0, flags0, nil
		}
		st.at = d
	}
}

// counterDelta formats the recorder's loss counters' increase from m0 to m1.
func counterDelta(m0, m1 map[string]float64) string {
	var out []string
	for _, name := range []string{"recorder_frames_total", "recorder_dropped_total", "recorder_errors_total", "recorder_keyframe_requests_total"} {
		out = append(out, fmt.Sprintf("%s=+%g", name, m1[name]-m0[name]))
	}
	return strings.Join(out, " ")
}

// counterTotal formats the recorder's and the stream's loss counters now.
func counterTotal(s *server) string {
	m, err := harness.Metrics(http.DefaultClient, "http://"+s.admin+"/metrics")
	if err != nil {
		return err.Error()
	}
	var out []string
	for series, v := range m {
		name, _, _ := strings.Cut(series, "{")
		switch name {
		case "caddy_sdr_recorder_dropped_total", "caddy_sdr_recorder_errors_total", "caddy_sdr_recorder_state",
			"caddy_sdr_stream_ring_gaps_total", "caddy_sdr_stream_lag_skips_total":
			out = append(out, series+"="+v)
		}
	}
	slices.Sort(out)
	return "totals: " + strings.Join(out, " ")
}
