// Command link measures video over a bad link. One 1080p60-like stream (60
// frames/s, a 100,000-byte keyframe every 60th frame, 15,000-byte deltas:
// 7.9 Mbit/s, the send time in frame_id and inside the NAL unit) goes from
// a ring through the built sdr-caddy to 20 clients, 5 of which reach it
// through a shaped link each (default 4 Mbit/s, 40 ms RTT, 1% loss: less
// than the stream needs), in phases of one run:
//
//	base    15 healthy /stream/ws clients alone (measured before and after ws)
//	ws      the same 15 with 5 shaped /stream/ws clients
//	webrtc  the same 15 with 5 shaped sdr_whep viewers (pion)
//	nats    nats-server's WebSocket listener: 15 healthy and 5 shaped nats.go clients
//
// The TCP links are Toxiproxy proxies in this process with the toxic
// sdr_link (link.go); the WebRTC viewers' UDP sockets are shaped with the
// same model. tc netem is not used: it needs the sch_netem module, which
// the development machine does not have. -queue-depth, -max-lag and
// -send-queue set sdr_stream's options of those names; -queue-depth
// defaults to 12, what docs/sdr_stream.md advises for links slower than
// the stream (0 runs sdr_stream's default, 64), -max-lag to 0 (off, as in
// sdr_stream).
//
// Per shaped client: the age of each decodable frame (arrival minus send
// time) and its p95, the longest time without a decodable frame (stall),
// decodable frames per second, and frames that arrived undecodable. For
// the healthy clients, delivery p99 with the shaped clients against base.
// The server's resident memory with the shaped clients against base, per
// shaped client, and the kernel's send queue of their sockets (ss).
//
//	go run . [-window 20s] [-warmup 3s] [-healthy 15] [-shaped 5]
//	         [-rate 4e6] [-rtt 40ms] [-loss 0.01] [-queue 100ms]
//	         [-queue-depth 12] [-max-lag 0] [-send-queue SIZE] [-systems ws,webrtc,nats]
//	         [-rtc-wait 200ms]
//
// (from bench/link, its own module; make bench-link). The last line:
//
//	BENCH link shaper=toxiproxy healthy_p99_ratio=.. shaped_age_p95_ms=.. shaped_max_stall_ms=.. shaped_fps=.. rss_kib_per_shaped=.. webrtc_shaped_age_p95_ms=.. nats_shaped_age_p95_ms=.. ...
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
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

	"github.com/sdr-os/sdr-caddy/internal/benchstream"
	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
)

const (
	fps         = 60
	gop         = 60
	keyBytes    = 100_000
	deltaBytes  = 15_000
	ringSize    = 4 << 20
	natsSubject = "video.cam"
)

type config struct {
	window, warmup time.Duration
	healthy        int
	shaped         int
	link           Link
	queueDepth     int
	maxLag         time.Duration
	sendQueue      string
	systems        map[string]bool
	rtcWait        time.Duration
}

func main() {
	var c config
	flag.DurationVar(&c.window, "window", 20*time.Second, "measuring window of each phase (or $SDR_BENCH_WINDOW)")
	flag.DurationVar(&c.warmup, "warmup", 3*time.Second, "time before each window, after the phase's clients connected")
	flag.IntVar(&c.healthy, "healthy", 15, "clients on loopback")
	flag.IntVar(&c.shaped, "shaped", 5, "clients behind a shaped link each")
	rate := flag.Float64("rate", 4e6, "the shaped link's rate, bits/s on the wire")
	rtt := flag.Duration("rtt", 40*time.Millisecond, "the shaped link's round-trip time")
	flag.Float64Var(&c.link.Loss, "loss", 0.01, "the shaped link's packet loss")
	flag.DurationVar(&c.link.Queue, "queue", 100*time.Millisecond, "the shaped link's bottleneck queue, in time at its rate")
	flag.IntVar(&c.queueDepth, "queue-depth", 12, "sdr_stream queue_depth (0: its default, 64): 12 is what docs/sdr_stream.md advises for links slower than the stream")
	flag.DurationVar(&c.maxLag, "max-lag", 0, "sdr_stream max_lag (0: off, its default)")
	flag.StringVar(&c.sendQueue, "send-queue", "", "sdr_stream send_queue (empty: its default)")
	systems := flag.String("systems", "ws,webrtc,nats", "phases to run besides base")
	flag.DurationVar(&c.rtcWait, "rtc-wait", 200*time.Millisecond, "how long the WebRTC viewer waits for a lost packet's retransmission")
	flag.Parse()
	if v := os.Getenv("SDR_BENCH_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			log.Fatalf("SDR_BENCH_WINDOW %q: %v", v, err)
		}
		c.window = d
	}
	c.link.Rate, c.link.Delay = *rate, *rtt/2
	c.systems = map[string]bool{}
	for _, s := range strings.Split(*systems, ",") {
		c.systems[strings.TrimSpace(s)] = true
	}
	if err := run(c); err != nil {
		log.Fatal(err)
	}
}

type bench struct {
	config
	dir      string
	ringPath string
	ring     *shmring.Writer
	nc       atomic.Pointer[nats.Conn]
	srv      *harness.Process
	port     int
	admin    int
	shaper   *shaper
	// ringPct is the lowest share of the stream's frames, in percent,
	// that the server's ring reader got in a phase: well under 100, the
	// machine starved the server or the writer, and the phase measured
	// that.
	ringPct float64
}

func run(c config) error {
	b := &bench{config: c}
	var err error
	if b.dir, err = os.MkdirTemp("", "sdr-link-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	bin, err := harness.CaddyBin()
	if err != nil {
		return err
	}
	b.ringPath = filepath.Join(b.dir, "frames")
	if b.ring, err = shmring.CreateWriter(b.ringPath, ringSize); err != nil {
		return err
	}
	defer b.ring.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); b.produce(ctx) }()
	defer wg.Wait()
	defer cancel()

	b.port, b.admin = harness.MustFreePort(), harness.MustFreePort()
	depth := ""
	if c.queueDepth > 0 {
		depth = fmt.Sprintf("\n\t\t\tqueue_depth %d", c.queueDepth)
	}
	if c.maxLag > 0 {
		depth += "\n\t\t\tmax_lag " + c.maxLag.String()
	}
	if c.sendQueue != "" {
		depth += "\n\t\t\tsend_queue " + c.sendQueue
	}
	conf := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	grace_period 1ns
	log {
		level ERROR
	}
}
http://127.0.0.1:%d {
	handle /stream/* {
		sdr_stream cam {
			source shm %s %d%s
		}
	}
	sdr_whep /whep* cam {
		source shm %s %d
		include_loopback
	}
}
`, b.admin, b.port, b.ringPath, ringSize, depth, b.ringPath, ringSize)
	if b.srv, err = harness.StartCaddy("caddy", bin, b.dir, conf); err != nil {
		return err
	}
	defer func() { _ = b.srv.Stop(10 * time.Second) }()
	if err := b.srv.WaitReady(30*time.Second, harness.Answers(b.httpURL("/stream/health"))); err != nil {
		return fmt.Errorf("%w\n%s", err, b.srv.Output())
	}
	b.shaper = newShaper(c.link)

	load0 := harness.LoadAvg(3)
	fmt.Printf("link benchmark: %d fps, keyframe %d B every %d, deltas %d B (%.1f Mbit/s); %d healthy clients, %d shaped (%v each, shaper toxiproxy + the viewer's UDP socket); window %v after %v; caddy %s; load average %s\n",
		fps, keyBytes, gop, deltaBytes, float64(keyBytes+(gop-1)*deltaBytes)*8/1e6, c.healthy, c.shaped, c.link, c.window, c.warmup, bin, load0)
	r := &report{}

	// base, then ws, then base again.
	healthy, err := b.wsGroup(c.healthy, func(int) (string, error) { return b.wsURL(b.addr()), nil }, true)
	if err != nil {
		return err
	}
	time.Sleep(c.warmup)
	var baseRSS []int64
	b.measure("base", func() { baseRSS = append(baseRSS, b.rss()) }, healthy)
	rssBase := median(baseRSS)
	var base []*flow
	base = append(base, copyFlows(healthy.flows)...)
	if c.systems["ws"] {
		var proxies []*linkProxy
		shaped, err := b.wsGroup(c.shaped, func(int) (string, error) {
			p, err := b.shaper.proxy(b.addr())
			if err != nil {
				return "", err
			}
			proxies = append(proxies, p)
			return b.wsURL(p.Listen), nil
		}, false)
		if err != nil {
			return err
		}
		hub0 := b.counters("caddy_sdr_stream_")
		time.Sleep(c.warmup)
		var shapedRSS []int64
		var queues sockQueues
		samples := 0
		local := healthy.local()
		b.measure("ws", func() {
			shapedRSS = append(shapedRSS, b.rss())
			q := b.sockQueues(local)
			queues.sendQ, queues.wmem, queues.proxyRecvQ = queues.sendQ+q.sendQ, queues.wmem+q.wmem, queues.proxyRecvQ+q.proxyRecvQ
			samples++
		}, healthy, shaped)
		if samples > 0 {
			n := float64(samples)
			queues.sendQ, queues.wmem, queues.proxyRecvQ = queues.sendQ/n, queues.wmem/n, queues.proxyRecvQ/n
		}
		r.healthyWithShaped = copyFlows(healthy.flows)
		r.rssShaped = median(shapedRSS)
		hub1 := b.counters("caddy_sdr_stream_")
		r.shapedWS = shaped.flows
		shaped.close()
		for _, p := range proxies {
			p.Stop()
		}
		r.rssPerShaped = float64(r.rssShaped-rssBase) / float64(c.shaped)
		r.queues = queues
		fmt.Printf("        server: RSS (median of a sample a second) %d KiB with the shaped clients, %d KiB without: %+.0f KiB per shaped client; over the window %.0f lag skips, %.0f handovers to a client's goroutine, %.0f keyframe waits\n",
			r.rssShaped, rssBase, r.rssPerShaped, hub1["lag_skips_total"]-hub0["lag_skips_total"],
			hub1["handovers_total"]-hub0["handovers_total"], hub1["keyframe_waits_total"]-hub0["keyframe_waits_total"])
		fmt.Printf("        kernel, mean of a sample a second, per shaped client: %.0f KiB in the server's send queue (skmem w %.0f KiB), %.0f KiB in the proxy's receive queue: %.0f ms at the link's rate\n",
			queues.sendQ/1024, queues.wmem/1024, queues.proxyRecvQ/1024, (queues.sendQ+queues.proxyRecvQ)*8/c.link.Rate*1000)
		time.Sleep(time.Second)
		b.measure("base", nil, healthy)
		base = append(base, copyFlows(healthy.flows)...)
	}
	r.base = base

	if c.systems["webrtc"] {
		if err := b.webrtcPhase(healthy, r); err != nil {
			log.Printf("webrtc phase: %v", err)
		}
	}
	healthy.close()
	if c.systems["nats"] {
		if err := b.natsPhase(r); err != nil {
			log.Printf("nats phase: %v", err)
		}
	}
	r.load = [2]string{load0, harness.LoadAvg(3)}
	r.ringPct = b.ringPct
	r.print(os.Stdout, c)
	return nil
}

func (b *bench) addr() string               { return fmt.Sprintf("127.0.0.1:%d", b.port) }
func (b *bench) httpURL(path string) string { return "http://" + b.addr() + path }
func (b *bench) wsURL(addr string) string   { return "ws://" + addr + "/stream/ws" }

// produce writes the stream into the ring and, while a NATS connection is
// set, publishes each frame as the same 0x01 message.
func (b *bench) produce(ctx context.Context) {
	period := time.Second / fps
	next := time.Now()
	msg := make([]byte, 0, wire.VideoSize(keyBytes))
	for i := 0; ctx.Err() == nil; i++ {
		next = next.Add(period)
		time.Sleep(time.Until(next))
		now := time.Now()
		if now.Sub(next) > period/2 {
			// Late (a loaded machine): go on from now rather than write
			// the missed frames back to back, which the ring's single
			// slot would lose.
			next = now
		}
		h := shmring.Header{Codec: shmring.CodecH264, FrameID: uint64(now.UnixNano())}
		size, nal := deltaBytes, byte(benchstream.NALSlice)
		if i%gop == 0 {
			h.Flags, size, nal = shmring.FlagKeyframe, keyBytes, benchstream.NALIDR
		}
		payload := benchstream.AccessUnit(size, nal, now)
		h, err := b.ring.WriteFrame(h, payload)
		if err != nil {
			log.Printf("writing frame: %v", err)
			continue
		}
		if nc := b.nc.Load(); nc != nil {
			msg = wire.AppendVideo(msg[:0], h, payload)
			_ = nc.Publish(natsSubject, msg)
		}
	}
}

// median returns the median of v (0 for none).
func median(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func (b *bench) rss() int64 {
	n, err := harness.RSSKiB(b.srv.Pid())
	if err != nil {
		log.Printf("rss: %v", err)
	}
	return n
}

// counters reads the server's counters with prefix, by name without it.
func (b *bench) counters(prefix string) map[string]float64 {
	c, err := harness.Counters(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/metrics", b.admin), prefix)
	if err != nil {
		log.Printf("metrics: %v", err)
		return map[string]float64{}
	}
	return c
}

// group is a set of clients of one kind, each with its flow.
type group struct {
	flows []*flow
	stop  chan struct{}
	addrs chan net.Addr
	once  sync.Once
}

func (g *group) close() { g.once.Do(func() { close(g.stop) }) }

// local returns the local addresses of the group's connections so far.
func (g *group) local() map[string]bool {
	m := map[string]bool{}
	for {
		select {
		case a := <-g.addrs:
			m[a.String()] = true
		default:
			return m
		}
	}
}

// wsGroup connects n /stream/ws clients, the i-th to target(i).
func (b *bench) wsGroup(n int, target func(i int) (string, error), track bool) (*group, error) {
	g := &group{stop: make(chan struct{})}
	if track {
		g.addrs = make(chan net.Addr, 4*n+64)
	}
	connected := make(chan error, n)
	for i := range n {
		u, err := target(i)
		if err != nil {
			g.close()
			return nil, err
		}
		f := newFlow()
		g.flows = append(g.flows, f)
		go wsClient(u, f, g.stop, connected, g.addrs)
	}
	for range n {
		if err := <-connected; err != nil {
			g.close()
			return nil, err
		}
	}
	return g, nil
}

// measure records the groups' flows over one window and prints them;
// sample, when not nil, is called once a second meanwhile.
func (b *bench) measure(phase string, sample func(), groups ...*group) {
	c0 := b.counters("caddy_sdr_stream_ring_")
	t0 := time.Now()
	for _, g := range groups {
		for _, f := range g.flows {
			f.start(t0)
		}
	}
	end := time.After(b.window)
	tick := time.NewTicker(time.Second)
wait:
	for {
		select {
		case <-end:
			break wait
		case <-tick.C:
			if sample != nil {
				sample()
			}
		}
	}
	tick.Stop()
	t1 := time.Now()
	for i, g := range groups {
		for _, f := range g.flows {
			f.stop(t1)
		}
		kind := "healthy"
		if i > 0 {
			kind = "shaped"
		}
		printGroup(phase, kind, g.flows)
	}
	c1 := b.counters("caddy_sdr_stream_ring_")
	if got, want := c1["frames_total"]-c0["frames_total"], t1.Sub(t0).Seconds()*fps; want > 0 {
		if pctRead := 100 * got / want; b.ringPct == 0 || pctRead < b.ringPct {
			b.ringPct = pctRead
		}
	}
	fmt.Printf("        the ring reader over the window: %.0f frames, %.0f missed (gaps: a delta after one cannot be decoded until the next keyframe); load average %s\n",
		c1["frames_total"]-c0["frames_total"], c1["gaps_total"]-c0["gaps_total"], harness.LoadAvg(3))
}

// copyFlows returns the flows' recorded frames as they are now.
func copyFlows(fs []*flow) []*flow {
	var out []*flow
	for _, f := range fs {
		f.mu.Lock()
		c := &flow{from: f.from, to: f.to, frames: slices.Clone(f.frames), undecodable: f.undecodable,
			reconnects: f.reconnects, bytes: f.bytes}
		f.mu.Unlock()
		out = append(out, c)
	}
	return out
}

func printGroup(phase, kind string, fs []*flow) {
	ages := pooledAges(fs)
	var frames, undec, reconn int
	var stall, fpsSum, mbps float64
	minFPS := -1.0
	for _, f := range fs {
		s := f.stats()
		frames += s.frames
		undec += s.undecodable
		reconn += s.reconnect
		stall = max(stall, s.maxStall)
		fpsSum += s.fps
		mbps += s.mbps
		if minFPS < 0 || s.fps < minFPS {
			minFPS = s.fps
		}
	}
	n := float64(max(1, len(fs)))
	fmt.Printf("%-7s %-8s %3d clients: age p50 %7.2f  p95 %7.2f  p99 %7.2f ms; fps %5.1f (min %5.1f); longest stall %6.0f ms; %5.2f Mbit/s each; undecodable %d, reconnects %d\n",
		phase, kind, len(fs), pct(ages, 0.5), pct(ages, 0.95), pct(ages, 0.99), fpsSum/n, minFPS, stall, mbps/n, undec, reconn)
	if kind == "shaped" {
		for i, f := range fs {
			s := f.stats()
			fmt.Printf("        client %d: age p50 %7.1f  p95 %7.1f ms (first half %7.1f, second half %7.1f); fps %5.1f; stall %6.0f ms; %5.2f Mbit/s; undecodable %d\n",
				i, s.p50, s.p95, s.p95Early, s.p95Late, s.fps, s.maxStall, s.mbps, s.undecodable)
		}
	}
}

// webrtcPhase runs the shaped sdr_whep viewers beside the healthy
// WebSocket clients.
func (b *bench) webrtcPhase(healthy *group, r *report) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var viewers []*rtcViewer
	defer func() {
		for _, v := range viewers {
			v.close()
		}
	}()
	g := &group{stop: make(chan struct{})}
	for range b.shaped {
		f := newFlow()
		v, err := dialWHEP(ctx, b.httpURL("/whep"), b.link, f, b.rtcWait)
		if err != nil {
			return err
		}
		viewers = append(viewers, v)
		g.flows = append(g.flows, f)
	}
	for _, v := range viewers {
		select {
		case <-v.connected:
		case <-ctx.Done():
			return fmt.Errorf("webrtc viewer not connected: %w", ctx.Err())
		}
	}
	c0 := b.counters("caddy_sdr_webrtc_")
	time.Sleep(b.warmup)
	var given, plis int64
	var down udpCounts
	for _, v := range viewers {
		v.givenUp.Store(0)
		v.plis.Store(0)
		v.conn.down.reset()
	}
	b.measure("webrtc", nil, healthy, g)
	c1 := b.counters("caddy_sdr_webrtc_")
	for _, v := range viewers {
		given += v.givenUp.Load()
		plis += v.plis.Load()
		down.add(v.conn.down)
	}
	r.shapedRTC = g.flows
	fmt.Printf("        over the window, all viewers: %d frames given up for a packet that never came, %d PLIs; the link passed %d packets, dropped %d at the full queue, lost %d; server: %.0f frames sent, %.0f dropped, %.0f keyframe requests\n",
		given, plis, down.passed, down.dropped, down.lost,
		c1["frames_sent_total"]-c0["frames_sent_total"], c1["frames_dropped_total"]-c0["frames_dropped_total"],
		c1["keyframe_requests_total"]-c0["keyframe_requests_total"])
	return nil
}

type udpCounts struct{ passed, dropped, lost int64 }

func (c *udpCounts) add(u *udpLink) {
	c.passed += u.passed.Load()
	c.dropped += u.dropped.Load()
	c.lost += u.lost.Load()
}

func (u *udpLink) reset() {
	u.passed.Store(0)
	u.dropped.Store(0)
	u.lost.Store(0)
}

// natsPhase runs nats-server's WebSocket listener with healthy and shaped
// nats.go clients; the producer publishes every frame.
func (b *bench) natsPhase(r *report) error {
	port, wsPort := harness.MustFreePort(), harness.MustFreePort()
	conf := filepath.Join(b.dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listen: \"127.0.0.1:%d\"\nmax_payload: 2MB\nwebsocket {\n  listen: \"127.0.0.1:%d\"\n  no_tls: true\n  compression: false\n}\n", port, wsPort)), 0o644); err != nil {
		return err
	}
	bin, err := harness.Tool("nats-server")
	if err != nil {
		return err
	}
	p, err := harness.Start("nats-server", exec.Command(bin, "-c", conf))
	if err != nil {
		return err
	}
	defer func() { _ = p.Stop(10 * time.Second) }()
	if err := p.WaitReady(20*time.Second, harness.Listening(fmt.Sprintf("127.0.0.1:%d", port))); err != nil {
		return fmt.Errorf("%w\n%s", err, p.Output())
	}
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	defer nc.Close()
	b.nc.Store(nc)
	defer b.nc.Store(nil)
	wsAddr := fmt.Sprintf("127.0.0.1:%d", wsPort)
	connect := func(n int, shaped bool) (*group, []*linkProxy, error) {
		g := &group{stop: make(chan struct{})}
		var proxies []*linkProxy
		connected := make(chan error, n)
		for range n {
			addr := wsAddr
			if shaped {
				p, err := b.shaper.proxy(wsAddr)
				if err != nil {
					g.close()
					return nil, proxies, err
				}
				proxies = append(proxies, p)
				addr = p.Listen
			}
			f := newFlow()
			g.flows = append(g.flows, f)
			go natsClient("ws://"+addr, f, g.stop, connected)
		}
		for range n {
			if err := <-connected; err != nil {
				g.close()
				return nil, proxies, err
			}
		}
		return g, proxies, nil
	}
	healthy, _, err := connect(b.healthy, false)
	if err != nil {
		return err
	}
	defer healthy.close()
	shaped, proxies, err := connect(b.shaped, true)
	defer func() {
		for _, p := range proxies {
			p.Stop()
		}
	}()
	if err != nil {
		return err
	}
	defer shaped.close()
	time.Sleep(b.warmup)
	b.measure("nats", nil, healthy, shaped)
	r.shapedNATS = shaped.flows
	r.healthyNATS = copyFlows(healthy.flows)
	return nil
}

// plainAddr turns ss's [::ffff:127.0.0.1]:port (a dual-stack listener's
// connection) into 127.0.0.1:port.
func plainAddr(a string) string {
	if r, ok := strings.CutPrefix(a, "[::ffff:"); ok {
		return strings.Replace(r, "]", "", 1)
	}
	return a
}

// sockQueues is what the kernel holds for the shaped clients, per client:
// the server's send queue (bytes not yet acknowledged by the proxy), its
// skmem wmem_queued, and the proxy's receive queue (bytes it has not read
// yet).
type sockQueues struct{ sendQ, wmem, proxyRecvQ float64 }

// sockQueues reads ss for the server's established connections that are
// not the healthy clients' (whose local addresses are given).
func (b *bench) sockQueues(healthy map[string]bool) sockQueues {
	out, err := exec.Command("ss", "-tnmH", "state", "established").Output()
	if err != nil {
		log.Printf("ss: %v", err)
		return sockQueues{}
	}
	srv := b.addr()
	var q sockQueues
	// Lines: Recv-Q Send-Q Local Peer, then skmem:(...) on the same or the next line.
	fields := strings.Fields(string(out))
	for i := 0; i+3 < len(fields); i++ {
		recv, err1 := strconv.ParseFloat(fields[i], 64)
		send, err2 := strconv.ParseFloat(fields[i+1], 64)
		if err1 != nil || err2 != nil || !strings.Contains(fields[i+2], ":") {
			continue
		}
		local, peer := plainAddr(fields[i+2]), plainAddr(fields[i+3])
		var wmem float64
		if i+4 < len(fields) && strings.HasPrefix(fields[i+4], "skmem:(") {
			for _, kv := range strings.Split(strings.Trim(strings.TrimPrefix(fields[i+4], "skmem:"), "()"), ",") {
				if v, ok := strings.CutPrefix(kv, "w"); ok {
					wmem, _ = strconv.ParseFloat(v, 64)
				}
			}
		}
		switch {
		case local == srv && !healthy[peer]:
			q.sendQ += send
			q.wmem += wmem
		case peer == srv && !healthy[local]:
			q.proxyRecvQ += recv
		}
		i += 3
	}
	// Other connections to the server (idle HTTP ones) hold nothing.
	n := float64(max(1, b.shaped))
	q.sendQ, q.wmem, q.proxyRecvQ = q.sendQ/n, q.wmem/n, q.proxyRecvQ/n
	return q
}
