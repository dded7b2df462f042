// Command scale measures the scale-out topology against a single node in
// the same run: end-to-end latency from the ring commit at the origin to
// the WebSocket client, p50/p99/p99.9.
//
// Single node: one sdr-caddy reads the ring and serves all N clients.
// Scale-out: a 3-node nats-server cluster (routes on loopback); the origin
// sdr-caddy reads the ring and publishes it on video.front (node 0); two
// edge sdr-caddy processes (nodes 1 and 2) take video.front as their source
// and serve N/2 clients each.
//
// The stream is 1080p60-like: 60 frames/s, a 100,000-byte keyframe every
// 60th frame, 15,000-byte deltas, the commit time in frame_id (Unix ns).
// This process writes the ring; the clients live in a child process (this
// binary re-executed) and read cheaply (internal/benchstream's load
// generator, which bench/recorder shares). Everything runs
// on the same machine, so the scale-out figures include the cost of three
// NATS servers and three caddy processes sharing the cores with the
// clients: on real deployments each edge has its own machine.
//
//	go run ./bench/scale [-clients 200] [-window 10s] [-warmup 3s]
//
// Server CPU is user+system seconds of the serving processes (caddy, and
// nats-server for the scale-out) per GB delivered to clients. The last line:
//
//	BENCH scale edges=2 clients=.. p99_ms=.. single_node_p99_ms=.. ...
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/benchstream"
	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/shmring"
)

const (
	loadgenEnv = "SDR_SCALE_BENCH_LOADGEN"
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
	clients := flag.Int("clients", 200, "WebSocket clients (split across the edges in the scale-out)")
	window := flag.Duration("window", 10*time.Second, "measurement window per topology")
	warmup := flag.Duration("warmup", 3*time.Second, "warm-up before each window")
	fps := flag.Int("fps", 60, "frames per second")
	gop := flag.Int("gop", 60, "frames from one keyframe to the next")
	flag.Parse()
	if err := run(*clients, *window, *warmup, *fps, *gop); err != nil {
		log.Fatal(err)
	}
}

// result is what one topology measured: the clients' figures and the
// servers' CPU seconds over the window.
type result struct {
	benchstream.LoadResult
	CPU float64
}

func (r result) cpuPerGB() float64 {
	if r.Bytes == 0 {
		return 0
	}
	return r.CPU / (float64(r.Bytes) / 1e9)
}

func run(clients int, window, warmup time.Duration, fps, gop int) error {
	dir, err := os.MkdirTemp("", "sdr-bench-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := harness.CaddyBin()
	if err != nil {
		return err
	}
	natsBin, err := harness.Tool("nats-server")
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
	go write(ctx, w, fps, gop)

	fmt.Printf("stream: %d fps, keyframe %d B every %d frames, deltas %d B; %d clients; window %s after %s warm-up; %d cores\n",
		fps, keyBytes, gop, deltaBytes, clients, window, warmup, runtime.NumCPU())

	// Single node.
	single, err := func() (result, error) {
		port := harness.MustFreePort()
		p, err := startCaddy(bin, dir, "single", fmt.Sprintf(`{
	admin %s
}
http://127.0.0.1:%d {
	handle /stream/ws {
		sdr_stream front {
			source shm %s
		}
	}
}
`, adminAddr(), port, ring), port)
		if err != nil {
			return result{}, err
		}
		defer p.stop()
		return measure([]string{fmt.Sprintf("ws://127.0.0.1:%d/stream/ws", port)}, clients, window, warmup, fps, []*proc{p})
	}()
	if err != nil {
		return fmt.Errorf("single node: %w", err)
	}
	report("single node", single)

	// Scale-out: cluster, origin, two edges.
	scaled, err := func() (result, error) {
		nodes, err := startCluster(natsBin, dir)
		for _, n := range nodes {
			defer n.stop()
		}
		if err != nil {
			return result{}, err
		}
		servers := append([]*proc(nil), nodes...)
		originPort := harness.MustFreePort()
		origin, err := startCaddy(bin, dir, "origin", fmt.Sprintf(`{
	admin %s
	sdr_nats {
		url nats://127.0.0.1:%d
		name origin
	}
}
http://127.0.0.1:%d {
	handle /stream/ws {
		sdr_stream front {
			source shm %s
			publish
		}
	}
}
`, adminAddr(), nodes[0].port, originPort, ring), originPort)
		if err != nil {
			return result{}, err
		}
		defer origin.stop()
		servers = append(servers, origin)
		var urls []string
		for i := 1; i <= 2; i++ {
			port := harness.MustFreePort()
			e, err := startCaddy(bin, dir, fmt.Sprintf("edge%d", i), fmt.Sprintf(`{
	admin %s
	sdr_nats {
		url nats://127.0.0.1:%d
		name edge-%d
	}
}
http://127.0.0.1:%d {
	handle /stream/ws {
		sdr_stream front {
			source nats video.front
		}
	}
}
`, adminAddr(), nodes[i].port, i, port), port)
			if err != nil {
				return result{}, err
			}
			defer e.stop()
			servers = append(servers, e)
			urls = append(urls, fmt.Sprintf("ws://127.0.0.1:%d/stream/ws", port))
		}
		return measure(urls, clients, window, warmup, fps, servers)
	}()
	if err != nil {
		return fmt.Errorf("scale-out: %w", err)
	}
	report("1 origin + 2 edges over a 3-node NATS cluster", scaled)

	ratio := 0.0
	if single.P99 > 0 {
		ratio = scaled.P99 / single.P99
	}
	fmt.Printf("BENCH scale edges=2 clients=%d p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f single_node_p50_ms=%.2f single_node_p99_ms=%.2f p99_vs_single=%.2f cpu_s_per_gb=%.3f single_node_cpu_s_per_gb=%.3f\n",
		clients, scaled.P50, scaled.P99, scaled.P999, single.P50, single.P99, ratio, scaled.cpuPerGB(), single.cpuPerGB())
	return nil
}

func report(what string, r result) {
	fmt.Printf("%-48s p50 %6.2f ms  p99 %6.2f ms  p99.9 %6.2f ms  samples %d  %.2f GB  server CPU %.3f s/GB  errors %d %s\n",
		what, r.P50, r.P99, r.P999, r.Samples, float64(r.Bytes)/1e9, r.cpuPerGB(), r.Errors, r.FirstErr)
}

// write commits frames at fps; the writer puts the commit time in frame_id.
func write(ctx context.Context, w *shmring.Writer, fps, gop int) {
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
		if _, err := w.WriteFrame(h, p); err != nil {
			log.Printf("writing frame: %v", err)
			return
		}
		next = next.Add(period)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		} else {
			next = time.Now()
		}
	}
}

// measure runs the load generator against urls and reads the servers' CPU
// over the window.
func measure(urls []string, clients int, window, warmup time.Duration, fps int, servers []*proc) (result, error) {
	load := benchstream.Load{URLs: urls, Clients: clients, Warmup: warmup, Window: window, FPS: fps}
	cmd := exec.Command(os.Args[0], load.Args()...)
	cmd.Env = append(os.Environ(), loadgenEnv+"=1")
	cmd.Stderr = os.Stderr
	var cpu0, cpu float64
	lr, err := benchstream.Measure(cmd,
		func() error { cpu0 = cpuOf(servers); return nil },
		func() error { cpu = cpuOf(servers) - cpu0; return nil })
	if err != nil {
		return result{}, err
	}
	for _, p := range servers {
		if c := counters(p); c != "" {
			fmt.Println("  " + c)
		}
	}
	return result{LoadResult: lr, CPU: cpu}, nil
}

// proc is a server process of the benchmark.
type proc struct {
	*harness.Process
	port  int
	admin string
}

func (p *proc) stop() {
	if p == nil {
		return
	}
	_ = p.Stop(10 * time.Second)
}

// start runs bin with args, named name, and waits until it listens on port.
func start(name string, dir string, port int, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	hp, err := harness.Start(name, cmd)
	if err != nil {
		return nil, err
	}
	p := &proc{Process: hp, port: port}
	if err := p.WaitReady(60*time.Second, harness.Listening(fmt.Sprintf("127.0.0.1:%d", port))); err != nil {
		p.stop()
		return nil, fmt.Errorf("%w\n%s", err, p.Output())
	}
	return p, nil
}

func adminAddr() string { return fmt.Sprintf("127.0.0.1:%d", harness.MustFreePort()) }

// counters prints the stream's loss counters of a caddy process: ring gaps
// at a reader, NATS gaps and held frames at an edge, lag skips.
func counters(p *proc) string {
	if p.admin == "" {
		return ""
	}
	c, err := harness.Counters(http.DefaultClient, "http://"+p.admin+"/metrics", "caddy_sdr_stream_")
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, name := range []string{"ring_gaps_total", "nats_gaps_total", "nats_keyframe_waits_total",
		"nats_origin_discontinuities_total", "lag_skips_total", "keyframe_timeouts_total"} {
		if v, ok := c[name]; ok {
			out = append(out, fmt.Sprintf("%s=%g", name, v))
		}
	}
	return p.Name + ": " + strings.Join(out, " ")
}

// startCaddy runs caddy with caddyfile and waits until its stream at
// /stream/ws on port answers 200 (the health JSON).
func startCaddy(bin, dir, name, caddyfile string, port int) (*proc, error) {
	hp, err := harness.StartCaddy(name, bin, dir, caddyfile)
	if err != nil {
		return nil, err
	}
	p := &proc{Process: hp, port: port}
	if i := strings.Index(caddyfile, "admin "); i >= 0 {
		p.admin = strings.Fields(caddyfile[i+len("admin "):])[0]
	}
	if err := p.WaitReady(60*time.Second, harness.AnswersWith(fmt.Sprintf("http://127.0.0.1:%d/stream/ws", port), http.StatusOK)); err != nil {
		p.stop()
		return nil, fmt.Errorf("%w\n%s", err, p.Output())
	}
	return p, nil
}

// startCluster runs three nats-server processes joined by routes.
func startCluster(bin, dir string) ([]*proc, error) {
	var ports, cports []int
	var routes []string
	for range 3 {
		ports, cports = append(ports, harness.MustFreePort()), append(cports, harness.MustFreePort())
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cports[len(cports)-1]))
	}
	var nodes []*proc
	for i := range 3 {
		conf := filepath.Join(dir, fmt.Sprintf("n%d.conf", i))
		body := fmt.Sprintf("server_name: n%d\nlisten: \"127.0.0.1:%d\"\ncluster {\n  name: sdr\n  listen: \"127.0.0.1:%d\"\n  routes: [%s]\n}\n",
			i, ports[i], cports[i], strings.Join(routes, ", "))
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			return nodes, err
		}
		n, err := start(fmt.Sprintf("n%d", i), dir, ports[i], bin, "-c", conf)
		if err != nil {
			return nodes, err
		}
		nodes = append(nodes, n)
	}
	time.Sleep(time.Second) // routes form
	return nodes, nil
}

// cpuOf sums user+system seconds of the processes (those already gone count 0).
func cpuOf(ps []*proc) float64 {
	pids := make([]int, len(ps))
	for i, p := range ps {
		pids[i] = p.Pid()
	}
	return harness.TotalCPUSeconds(pids...)
}
