// Command stream benchmarks sdr_stream's fan-out against the floor: what a
// WebSocket fan-out of the same frames costs this machine at the least,
// measured in the same run.
//
// The stream is 1080p60-like: 60 frames/s, a 100,000-byte keyframe every
// 60th frame, 15,000-byte deltas, the commit time in frame_id (Unix ns).
// This process writes the frames into a real ring (sdr_stream reads it);
// the clients live in a separate load-generator process (this binary
// re-executed) and read cheaply (one reused buffer, no per-message
// allocation).
//
// The servers (-systems):
//
//   - ours: sdr_stream in the built caddy, reading the ring.
//   - floor: a minimal program (this binary re-executed, floor.go): the
//     WebSocket handshake, then each frame framed once and written to each
//     client with one writev, from memory; no hub, no Caddy, no ring. This
//     process hands it each frame's header as it commits the frame, so the
//     floor sends the same bytes with the same frame_id. Its CPU and
//     latency are those of the kernel and the load generator: the physical
//     limit of a WebSocket fan-out on this machine.
//   - ringfloor: the floor fed by sdr_stream's ring reader instead (for
//     telling the ring reader's share from the hub's).
//   - twohop: the old topology, stock Caddy reverse_proxy in front of
//     sdr_stream (two caddy processes).
//   - nats: nats-server's WebSocket listener with nats.go WebSocket clients,
//     the frames published to it by this process.
//
// Per server and N: delivery latency p50/p99/p99.9 (receive time minus
// frame_id, in the clients), server CPU seconds (user+sys from
// /proc/<pid>/stat, both processes for the two-hop setup) per GB delivered,
// RSS per idle client ((RSS with N idle clients - RSS before) / N), total
// RSS / N while streaming, time to first decodable frame of clients
// joining during the window, and the machine's load average.
//
//	go run ./bench/stream [-clients 100,500,1000] [-window 20s] [-warmup 3s]
//	                      [-systems ours,floor] [-repeat 1] [-cpuprofile f] [-perf dir]
//
// A short run for development: -clients 100 -window 5s. -repeat k runs each
// server k times per N, alternating their order; the BENCH line then has
// the medians, and its ratios are the medians of each run's ratio to the
// run beside it, which holds better on a machine whose load drifts. One
// BENCH line per N; the last line is that of the largest N:
//
//	BENCH stream clients=.. p50_ms=.. p99_ms=.. cpu_s_per_gb=.. vs_floor_cpu=.. vs_floor_p99=.. ...
//
// vs_floor_cpu and vs_floor_p99 are ours / floor; with ringfloor in
// -systems, vs_ringfloor_cpu and vs_ringfloor_p99 are ours / ringfloor:
// what the hub and Caddy add to the ring reader and a minimal fan-out
// (ringfloor / floor is then the ring reader's share). -perf DIR records
// every server with perf(1) during the window, for telling where the
// difference goes.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
)

const (
	loadgenEnv = "SDR_STREAM_BENCH_LOADGEN"
	subject    = "video.cam"
	keyBytes   = 100_000
	deltaBytes = 15_000
	ringSize   = 4 << 20
)

func main() {
	if os.Getenv(loadgenEnv) == "1" {
		if err := runLoadgen(os.Args[1:]); err != nil {
			log.Fatalf("loadgen: %v", err)
		}
		return
	}
	if os.Getenv(floorEnv) == "1" {
		if err := runFloor(os.Args[1:]); err != nil {
			log.Fatalf("floor: %v", err)
		}
		return
	}
	clients := flag.String("clients", "100,500,1000", "comma-separated client counts")
	window := flag.Duration("window", 20*time.Second, "measurement window per server and N")
	warmup := flag.Duration("warmup", 3*time.Second, "warm-up before each window")
	systems := flag.String("systems", "ours,floor", "servers to run: ours, floor, ringfloor, twohop, nats")
	fps := flag.Int("fps", 60, "frames per second")
	gop := flag.Int("gop", 60, "frames from one keyframe to the next")
	joins := flag.Int("joins", 20, "clients joining during each window (time to first frame)")
	repeat := flag.Int("repeat", 1, "runs of each server per N, alternating; the BENCH line has the medians, and ratios are medians of each run's ratio to the run beside it")
	profile := flag.String("cpuprofile", "", "write a CPU profile of sdr_stream's caddy (server ours) during the window to this file")
	perfDir := flag.String("perf", "", "record every server process during the window with perf (kernel and user, call graphs) into DIR/<server>-<N>-<run>.data")
	flag.Parse()
	if v := os.Getenv("SDR_BENCH_WINDOW"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			*window = d
		}
	}
	if v := os.Getenv("SDR_BENCH_CLIENTS"); v != "" {
		*clients = v
	}
	var ns []int
	for _, f := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			log.Fatalf("-clients %q: want comma-separated counts", *clients)
		}
		ns = append(ns, n)
	}
	b := &bench{window: *window, warmup: *warmup, fps: *fps, gop: *gop, joins: *joins, profile: *profile, perfDir: *perfDir}
	if err := b.setup(); err != nil {
		log.Fatal(err)
	}
	defer b.teardown()
	want := map[string]bool{}
	for _, s := range strings.Split(*systems, ",") {
		want[strings.TrimSpace(s)] = true
	}
	fmt.Printf("stream benchmark: %d fps, GOP %d, keyframe %d B, delta %d B, window %v after %v warm-up; caddy %s\n",
		*fps, *gop, keyBytes, deltaBytes, *window, *warmup, b.caddyBin)
	fmt.Printf("%-9s %5s %8s %8s %9s %9s %10s %12s %10s %9s %6s %6s\n",
		"server", "N", "p50_ms", "p99_ms", "p99.9_ms", "cpu_s/GB", "idle_KiB/c", "stream_KiB/c", "ttff_ms", "GB", "errs", "load1")
	var lines []string
	for _, n := range ns {
		res := map[string][]*result{}
		for rep := range *repeat {
			order := []string{"ours", "floor", "ringfloor", "twohop", "nats"}
			if rep%2 == 1 { // alternate, so that drift in the machine's load falls on both alike
				order[0], order[1] = order[1], order[0]
			}
			for _, sys := range order {
				if !want[sys] {
					continue
				}
				r, err := b.run(sys, n)
				if err != nil {
					log.Printf("%s N=%d: %v", sys, n, err)
					continue
				}
				res[sys] = append(res[sys], r)
				fmt.Printf("%-9s %5d %8.2f %8.2f %9.2f %9.3f %10.1f %12.1f %10.1f %9.2f %6d %6s\n",
					sys, n, r.P50, r.P99, r.P999, r.CPUPerGB, r.IdleKiB, r.StreamKiB, r.TTFF, r.GB, r.Errors, r.Load)
				fmt.Printf("        keyframes p50 %.2f ms, p99 %.2f ms; deltas p99 %.2f ms\n", r.KeyP50, r.KeyP99, r.DeltaP99)
				if r.TTFF > 0 {
					fmt.Printf("        time to first frame %.1f ms, of which connect+handshake %.1f ms (medians of %d joins)\n", r.TTFF, r.Handshake, len(r.TTFFms))
				}
				if r.FirstErr != "" {
					fmt.Printf("        first error: %s\n", r.FirstErr)
				}
			}
		}
		if len(res["ours"]) == 0 {
			continue
		}
		o := median(res["ours"])
		vsTwo, vsNats, vsFloorCPU, vsFloorP99 := "na", "na", "na", "na"
		floorCPU, floorP99 := "na", "na"
		if fs := res["floor"]; len(fs) > 0 {
			f := median(fs)
			floorCPU, floorP99 = fmt.Sprintf("%.3f", f.CPUPerGB), fmt.Sprintf("%.2f", f.P99)
			vsFloorCPU = ratio(res["ours"], fs, func(r *result) float64 { return r.CPUPerGB })
			vsFloorP99 = ratio(res["ours"], fs, func(r *result) float64 { return r.P99 })
		}
		vsRingCPU, vsRingP99 := "na", "na"
		if rs := res["ringfloor"]; len(rs) > 0 {
			vsRingCPU = ratio(res["ours"], rs, func(r *result) float64 { return r.CPUPerGB })
			vsRingP99 = ratio(res["ours"], rs, func(r *result) float64 { return r.P99 })
		}
		if ts := res["twohop"]; len(ts) > 0 {
			vsTwo = ratio(res["ours"], ts, func(r *result) float64 { return r.P99 })
		}
		if ts := res["nats"]; len(ts) > 0 {
			vsNats = ratio(res["ours"], ts, func(r *result) float64 { return r.CPUPerGB })
		}
		lines = append(lines, fmt.Sprintf("BENCH stream clients=%d p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f cpu_s_per_gb=%.3f rss_kib_per_client=%.1f ttff_ms=%.1f vs_floor_cpu=%s vs_floor_p99=%s floor_cpu_s_per_gb=%s floor_p99_ms=%s vs_ringfloor_cpu=%s vs_ringfloor_p99=%s vs_twohop_p99=%s vs_nats_cpu=%s key_p99_ms=%.2f delta_p99_ms=%.2f runs=%d load1=%s",
			n, o.P50, o.P99, o.P999, o.CPUPerGB, o.IdleKiB, o.TTFF, vsFloorCPU, vsFloorP99, floorCPU, floorP99, vsRingCPU, vsRingP99, vsTwo, vsNats, o.KeyP99, o.DeltaP99, len(res["ours"]), harness.LoadAvg(1)))
	}
	fmt.Println("targets: vs_floor_cpu <= 1.3 at 100 clients, <= 1.15 at 500 and 1000; vs_floor_p99 <= 1.25; <= 32 KiB per idle client; ttff <= 50 ms")
	for _, l := range lines {
		fmt.Println(l)
	}
}

// hubCounters reads sdr_stream's counters from the admin endpoint's
// metrics, by name without the caddy_sdr_stream_ prefix; missing ones are 0.
func (b *bench) hubCounters() map[string]float64 {
	c, err := harness.Counters(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/metrics", b.adminPort), "caddy_sdr_stream_")
	if err != nil {
		log.Printf("metrics: %v", err)
		return map[string]float64{}
	}
	return c
}

// floorCounters reads the floor's counters (floorCountersPath).
func (b *bench) floorCounters() map[string]float64 {
	resp, err := http.Get("http://" + b.floorAddr + floorCountersPath)
	if err != nil {
		log.Printf("floor counters: %v", err)
		return map[string]float64{}
	}
	defer resp.Body.Close()
	c := map[string]float64{}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		log.Printf("floor counters: %v", err)
	}
	return c
}

type result struct {
	loadResult
	CPUPerGB, IdleKiB, StreamKiB, TTFF, GB float64
	Handshake                              float64 // median of the joins' connect+handshake
	Load                                   string  // the machine's load average (1 min) at the end
}

// median returns a result whose figures are the medians of rs's.
func median(rs []*result) *result {
	m := *rs[0]
	for _, f := range []func(*result) *float64{
		func(r *result) *float64 { return &r.P50 }, func(r *result) *float64 { return &r.P99 },
		func(r *result) *float64 { return &r.P999 }, func(r *result) *float64 { return &r.KeyP99 },
		func(r *result) *float64 { return &r.DeltaP99 }, func(r *result) *float64 { return &r.CPUPerGB },
		func(r *result) *float64 { return &r.IdleKiB }, func(r *result) *float64 { return &r.TTFF },
	} {
		vs := make([]float64, len(rs))
		for i, r := range rs {
			vs[i] = *f(r)
		}
		*f(&m) = med(vs)
	}
	return &m
}

// ratio is the median of a[i]/b[i] over the runs i of both (a run of one
// beside the run of the other), as text.
func ratio(a, b []*result, f func(*result) float64) string {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if d := f(b[i]); d > 0 {
			rs = append(rs, f(a[i])/d)
		}
	}
	if len(rs) == 0 {
		return "na"
	}
	return fmt.Sprintf("%.2f", med(rs))
}

func med(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type bench struct {
	window, warmup time.Duration
	fps, gop       int
	joins          int
	profile        string
	perfDir        string
	perfRuns       map[string]int // recordings so far per server and N
	adminPort      int

	dir      string
	caddyBin string
	ring     *shmring.Writer
	ringPath string
	key      []byte
	delta    []byte

	paused    atomic.Bool
	nc        atomic.Pointer[nats.Conn] // where frames are also published, when set
	floor     atomic.Pointer[floorPipe] // where frame headers also go, when set
	floorAddr string                    // the floor's address while it runs
	stop      context.CancelFunc
	wg        sync.WaitGroup
}

func (b *bench) setup() error {
	var err error
	b.dir, err = os.MkdirTemp("", "sdr-stream-bench-")
	if err != nil {
		return err
	}
	b.caddyBin, err = harness.CaddyBin()
	if err != nil {
		return err
	}
	b.ringPath = filepath.Join(b.dir, "frames")
	b.ring, err = shmring.CreateWriter(b.ringPath, ringSize)
	if err != nil {
		return err
	}
	b.key, b.delta = make([]byte, keyBytes), make([]byte, deltaBytes)
	_, _ = rand.Read(b.key)
	_, _ = rand.Read(b.delta)
	ctx, cancel := context.WithCancel(context.Background())
	b.stop = cancel
	b.wg.Add(1)
	go b.produce(ctx)
	return nil
}

func (b *bench) teardown() {
	b.stop()
	b.wg.Wait()
	b.ring.Close()
	os.RemoveAll(b.dir)
}

// floorPipe is the floor's standard input.
type floorPipe struct{ w io.WriteCloser }

// produce writes the stream into the ring and, when a NATS connection is
// set, publishes each frame as the same 0x01 message; when the floor runs,
// it hands it each frame's header as committed.
func (b *bench) produce(ctx context.Context) {
	defer b.wg.Done()
	period := time.Second / time.Duration(b.fps)
	next := time.Now()
	msg := make([]byte, 0, wire.VideoSize(keyBytes))
	var hb [shmring.HeaderSize]byte
	for i := 0; ctx.Err() == nil; i++ {
		next = next.Add(period)
		time.Sleep(time.Until(next))
		if b.paused.Load() {
			i = -1 // resume with a keyframe
			continue
		}
		h := shmring.Header{Codec: shmring.CodecH264, FrameID: uint64(time.Now().UnixNano())}
		payload := b.delta
		if i%b.gop == 0 {
			h.Flags, payload = shmring.FlagKeyframe, b.key
		}
		h, err := b.ring.WriteFrame(h, payload)
		if err != nil {
			log.Printf("writing frame: %v", err)
			continue
		}
		if fp := b.floor.Load(); fp != nil {
			h.Put(hb[:])
			if _, err := fp.w.Write(hb[:]); err != nil {
				b.floor.CompareAndSwap(fp, nil)
			}
		}
		if nc := b.nc.Load(); nc != nil {
			msg = wire.AppendVideo(msg[:0], h, payload)
			_ = nc.Publish(subject, msg)
		}
	}
}

// proc is a server process.
type proc struct{ *harness.Process }

func (b *bench) start(name string, args ...string) (*proc, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = b.dir
	p, err := harness.Start(filepath.Base(name), cmd)
	if err != nil {
		return nil, err
	}
	return &proc{p}, nil
}

func (p *proc) kill() { _ = p.Stop(10 * time.Second) }

// caddy runs caddy with the site on port and waits for /stream/health
// there.
func (b *bench) caddy(port int, site string, admin string) (*proc, error) {
	conf := fmt.Sprintf("{\n\tadmin "+admin+"\n\tgrace_period 1ns\n\tlog {\n\t\tlevel ERROR\n\t}\n}\nhttp://127.0.0.1:%d {\n%s\n}\n", port, site)
	hp, err := harness.StartCaddy("caddy", b.caddyBin, b.dir, conf)
	if err != nil {
		return nil, err
	}
	p := &proc{hp}
	if err := p.WaitReady(30*time.Second, harness.Answers(fmt.Sprintf("http://127.0.0.1:%d/stream/health", port))); err != nil {
		p.kill()
		return nil, fmt.Errorf("%w\n%s", err, p.Output())
	}
	return p, nil
}

// run measures one server with n clients.
func (b *bench) run(sys string, n int) (*result, error) {
	var procs []*proc
	defer func() {
		b.nc.Store(nil)
		for _, p := range procs {
			p.kill()
		}
	}()
	var target, kind = "", "ws"
	switch sys {
	case "ours", "twohop":
		port := harness.MustFreePort()
		admin := "off"
		if sys == "ours" { // profiles and the hub's counters
			b.adminPort = harness.MustFreePort()
			admin = fmt.Sprintf("127.0.0.1:%d", b.adminPort)
		}
		p, err := b.caddy(port, fmt.Sprintf("\thandle /stream/* {\n\t\tsdr_stream {\n\t\t\tsource shm %s %d\n\t\t}\n\t}", b.ringPath, ringSize), admin)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
		target = fmt.Sprintf("ws://127.0.0.1:%d/stream/ws", port)
		if sys == "twohop" {
			front := harness.MustFreePort()
			p2, err := b.caddy(front, fmt.Sprintf("\treverse_proxy 127.0.0.1:%d", port), "off")
			if err != nil {
				return nil, err
			}
			procs = append(procs, p2)
			target = fmt.Sprintf("ws://127.0.0.1:%d/stream/ws", front)
		}
	case "floor", "ringfloor":
		port := harness.MustFreePort()
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		b.floorAddr = fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(exe, "-listen", b.floorAddr)
		if sys == "ringfloor" {
			cmd.Args = append(cmd.Args, "-ring", b.ringPath)
		}
		cmd.Env = append(os.Environ(), floorEnv+"=1")
		cmd.Dir = b.dir
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		hp, err := harness.Start("floor", cmd)
		if err != nil {
			return nil, err
		}
		p := &proc{hp}
		procs = append(procs, p)
		if err := p.WaitReady(20*time.Second, harness.Answers("http://"+b.floorAddr+"/stream/health")); err != nil {
			return nil, fmt.Errorf("%w\n%s", err, p.Output())
		}
		fp := &floorPipe{in}
		if sys == "floor" {
			b.floor.Store(fp)
		}
		defer func() { b.floor.Store(nil); fp.w.Close() }()
		target = "ws://" + b.floorAddr + "/stream/ws"
	case "nats":
		kind = "nats"
		port, wsPort := harness.MustFreePort(), harness.MustFreePort()
		conf := filepath.Join(b.dir, "nats.conf")
		if err := os.WriteFile(conf, []byte(fmt.Sprintf("listen: \"127.0.0.1:%d\"\nmax_payload: 2MB\nwebsocket {\n  listen: \"127.0.0.1:%d\"\n  no_tls: true\n  compression: false\n}\n", port, wsPort)), 0o644); err != nil {
			return nil, err
		}
		bin, err := harness.Tool("nats-server")
		if err != nil {
			return nil, err
		}
		p, err := b.start(bin, "-c", conf)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
		url := fmt.Sprintf("nats://127.0.0.1:%d", port)
		if err := p.WaitReady(20*time.Second, harness.Listening(fmt.Sprintf("127.0.0.1:%d", port))); err != nil {
			return nil, fmt.Errorf("%w\n%s", err, p.Output())
		}
		nc, err := nats.Connect(url)
		if err != nil {
			return nil, fmt.Errorf("connecting to nats-server at %s: %w", url, err)
		}
		defer nc.Close()
		b.nc.Store(nc)
		target = fmt.Sprintf("ws://127.0.0.1:%d", wsPort)
	}

	// Let the servers warm up with video, then take the idle baseline.
	time.Sleep(1500 * time.Millisecond)
	b.paused.Store(true)
	time.Sleep(300 * time.Millisecond)
	rss0 := rssKiB(procs)

	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	lg := exec.Command(exe, "-kind", kind, "-url", target, "-clients", strconv.Itoa(n),
		"-warmup", b.warmup.String(), "-window", b.window.String(), "-joins", strconv.Itoa(b.joins), "-fps", strconv.Itoa(b.fps))
	lg.Env = append(os.Environ(), loadgenEnv+"=1")
	lg.Stderr = os.Stderr
	stdin, _ := lg.StdinPipe()
	stdout, _ := lg.StdoutPipe()
	if err := lg.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = lg.Process.Kill(); _ = lg.Wait() }()
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	expect := func(w string) (string, error) {
		for lines.Scan() {
			l := lines.Text()
			if strings.HasPrefix(l, w) {
				return l, nil
			}
		}
		return "", fmt.Errorf("load generator ended before %s: %v", w, lines.Err())
	}
	if _, err := expect("READY"); err != nil {
		return nil, err
	}
	time.Sleep(time.Second)
	rssIdle := rssKiB(procs)
	b.paused.Store(false)
	if _, err := io.WriteString(stdin, "GO\n"); err != nil {
		return nil, err
	}
	if _, err := expect("START"); err != nil {
		return nil, err
	}
	cpu0 := cpuSeconds(procs)
	var hub0 map[string]float64
	switch sys {
	case "ours":
		hub0 = b.hubCounters()
	case "floor", "ringfloor":
		hub0 = b.floorCounters()
	}
	var prof sync.WaitGroup
	if b.profile != "" && sys == "ours" {
		prof.Add(1)
		go func() {
			defer prof.Done()
			secs := max(1, int(b.window.Seconds())-1)
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", b.adminPort, secs))
			if err != nil {
				log.Printf("profile: %v", err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(b.profile)
			if err != nil {
				log.Printf("profile: %v", err)
				return
			}
			defer f.Close()
			_, _ = io.Copy(f, resp.Body)
		}()
	}
	defer prof.Wait()
	if b.perfDir != "" && sys != "nats" {
		rec, err := b.perf(sys, n, procs)
		if err != nil {
			log.Printf("perf: %v", err)
		} else {
			defer rec()
		}
	}
	if _, err := expect("END"); err != nil {
		return nil, err
	}
	cpu1 := cpuSeconds(procs)
	rssStream := rssKiB(procs)
	switch sys {
	case "ours":
		hub1 := b.hubCounters()
		r0 := hub1["frames_out_total"] - hub0["frames_out_total"]
		fmt.Printf("        over the window: %.0f frames written to clients, %.0f writes handed to client goroutines (full socket), %.0f lag skips, %.1f ring polls per frame\n",
			r0, hub1["handovers_total"]-hub0["handovers_total"], hub1["lag_skips_total"]-hub0["lag_skips_total"],
			(hub1["ring_polls_total"]-hub0["ring_polls_total"])/max(1, hub1["ring_frames_total"]-hub0["ring_frames_total"]))
	case "floor", "ringfloor":
		f1 := b.floorCounters()
		fmt.Printf("        over the window: %.0f frames written to clients, %.0f writes the socket did not take whole (the rest went with the next frame)\n",
			f1["frames"]-hub0["frames"], f1["partial"]-hub0["partial"])
	}
	l, err := expect("RESULT ")
	if err != nil {
		return nil, err
	}
	var r result
	if err := json.Unmarshal([]byte(strings.TrimPrefix(l, "RESULT ")), &r.loadResult); err != nil {
		return nil, err
	}
	if r.Samples == 0 {
		return &r, errors.New("no samples: " + r.FirstErr)
	}
	r.Load = harness.LoadAvg(1)
	r.GB = float64(r.Bytes) / 1e9
	r.CPUPerGB = (cpu1 - cpu0) / r.GB
	r.IdleKiB = float64(rssIdle-rss0) / float64(n)
	r.StreamKiB = float64(rssStream) / float64(n)
	if len(r.TTFFms) > 0 {
		s := slices.Clone(r.TTFFms)
		slices.Sort(s)
		r.TTFF = s[len(s)/2]
	}
	if len(r.HSms) > 0 {
		s := slices.Clone(r.HSms)
		slices.Sort(s)
		r.Handshake = s[len(s)/2]
	}
	return &r, nil
}

// perf records the processes with perf(1) for the window (less a
// second) into b.perfDir; the returned function waits for the recording.
func (b *bench) perf(sys string, n int, ps []*proc) (wait func(), err error) {
	if err := os.MkdirAll(b.perfDir, 0o755); err != nil {
		return nil, err
	}
	if b.perfRuns == nil {
		b.perfRuns = map[string]int{}
	}
	key := fmt.Sprintf("%s-%d", sys, n)
	b.perfRuns[key]++
	out := filepath.Join(b.perfDir, fmt.Sprintf("%s-%d.data", key, b.perfRuns[key]))
	pids := make([]string, len(ps))
	for i, p := range ps {
		pids[i] = strconv.Itoa(p.Pid())
	}
	secs := max(1, b.window.Seconds()-1)
	cmd := exec.Command("perf", "record", "-q", "-F", "999", "-g", "-p", strings.Join(pids, ","), "-o", out,
		"--", "sleep", strconv.FormatFloat(secs, 'f', 1, 64))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting perf record: %w", err)
	}
	return func() {
		if err := cmd.Wait(); err != nil {
			log.Printf("perf record %s: %v", out, err)
		}
	}, nil
}

// cpuSeconds is the user+system time of the processes, from /proc/<pid>/stat
// (those already gone count 0).
func cpuSeconds(ps []*proc) float64 {
	pids := make([]int, len(ps))
	for i, p := range ps {
		pids[i] = p.Pid()
	}
	return harness.TotalCPUSeconds(pids...)
}

// rssKiB is the resident memory of the processes.
func rssKiB(ps []*proc) int64 {
	var total int64
	for _, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += n
			}
		}
	}
	return total
}

func percentiles(us []int32) (p50, p99, p999 float64) {
	if len(us) == 0 {
		return
	}
	slices.Sort(us)
	at := func(q float64) float64 { return float64(us[min(len(us)-1, int(q*float64(len(us))))]) / 1000 }
	return at(0.50), at(0.99), at(0.999)
}
