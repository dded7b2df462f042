// Command ros benchmarks sdr_ros: a 100 Hz topic from a rosbridge upstream
// to 1, 10 and 100 rosbridge clients through the sdr-caddy binary.
//
// The upstream is rostest, the protocol-faithful rosbridge v2 test server of
// this repository (ROS 2 and rosbridge_server cannot be installed on these
// machines); it runs in this process and counts the messages it writes. The
// clients are Go WebSocket clients speaking rosbridge JSON, in this process,
// so that the proxy's CPU is measured alone from /proc.
//
// For each client count it reports the upstream messages per second (flat
// through the proxy: one upstream subscription however many clients),
// delivery latency p50/p99 (publish to client receipt), and the proxy's CPU
// as a percentage of one core. The baseline, measured in the same run, is the
// same clients subscribed directly to the upstream, as browsers are to
// rosbridge_server today: N upstream subscriptions, N times the messages.
//
// Usage: go run ./bench/ros [-duration 5s] [-rate 100] [-clients 1,10,100]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
)

func main() {
	duration := flag.Duration("duration", 5*time.Second, "measurement window per client count")
	warmup := flag.Duration("warmup", time.Second, "warm-up before each window")
	rate := flag.Int("rate", 100, "topic rate, messages per second")
	counts := flag.String("clients", "1,10,100", "client counts")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the proxy during the last sdr_ros window to this file")
	flag.Parse()
	log.SetFlags(0)

	var ns []int
	for _, s := range strings.Split(*counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			log.Fatalf("bad client count %q", s)
		}
		ns = append(ns, n)
	}
	up, err := rostest.Start("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer up.Close()
	proxy, err := startProxy(up.URL(), *profile != "")
	if err != nil {
		log.Fatal(err)
	}
	defer proxy.stop()

	fmt.Printf("sdr_ros bench: %d Hz topic /odom (~700 B JSON), %v window after %v warm-up, %d CPUs\n",
		*rate, *duration, *warmup, runtime.NumCPU())
	fmt.Printf("%-8s %-7s %14s %9s %9s %9s %10s\n", "path", "clients", "upstream_msg/s", "p50_ms", "p99_ms", "cpu_pct", "delivered")
	var last, lastDirect result
	for i, n := range ns {
		direct := run(up, up.URL(), n, *rate, *warmup, *duration, 0)
		direct.print("direct")
		var stopProfile func()
		if *profile != "" && i == len(ns)-1 {
			stopProfile = proxy.profile(*profile, *warmup+*duration)
		}
		via := run(up, proxy.url, n, *rate, *warmup, *duration, proxy.pid)
		if stopProfile != nil {
			stopProfile()
		}
		via.print("sdr_ros")
		last, lastDirect = via, direct
	}
	fmt.Printf("BENCH ros clients=%d upstream_msgs_per_s=%.1f p99_ms=%.2f cpu_pct=%.1f p50_ms=%.2f direct_upstream_msgs_per_s=%.1f vs_direct_p99=%.2f delivered=%.4f\n",
		last.clients, last.upRate, last.p99, last.cpu, last.p50, lastDirect.upRate, ratio(last.p99, lastDirect.p99), last.delivered)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

type result struct {
	clients        int
	upRate         float64
	p50, p99, cpu  float64
	delivered      float64 // received / (published x clients)
	proxyMeasured  bool
	publishedCount int
}

func (r result) print(path string) {
	cpu := "-"
	if r.proxyMeasured {
		cpu = fmt.Sprintf("%.1f", r.cpu)
	}
	fmt.Printf("%-8s %-7d %14.1f %9.2f %9.2f %9s %10.4f\n", path, r.clients, r.upRate, r.p50, r.p99, cpu, r.delivered)
}

// run connects n clients to url, subscribes them to /odom, publishes at
// rate for warmup+window and measures over the window.
func run(up *rostest.Server, url string, n, rate int, warmup, window time.Duration, pid int) result {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu        sync.Mutex
		lat       []float64
		measuring bool
		received  int
	)
	var wg sync.WaitGroup
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			log.Fatalf("client %d dialing %s: %v", i, url, err)
		}
		conns[i] = c
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"op":"subscribe","id":"bench","topic":"/odom","type":"nav_msgs/msg/Odometry"}`)); err != nil {
			log.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]float64, 0, 1024)
			got := 0
			for {
				_, data, err := c.ReadMessage()
				now := time.Now().UnixNano()
				if err != nil {
					break
				}
				sent, ok := sentAt(data)
				if !ok {
					continue
				}
				mu.Lock()
				m := measuring
				mu.Unlock()
				if m && sent > 0 {
					local = append(local, float64(now-sent)/1e6)
					got++
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			received += got
			mu.Unlock()
		}()
	}
	// wait until the upstream holds the subscriptions
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, ids := up.Subscribers("/odom")
		if (url == up.URL() && c == n && ids == n) || (url != up.URL() && c == 1) {
			break
		}
		if time.Now().After(deadline) {
			log.Fatalf("subscriptions not in place upstream (%d connections)", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // every client's subscribe reached the proxy

	pad := strings.Repeat("0", 480) // covariance-like bulk: ~700 B per message
	period := time.Second / time.Duration(rate)
	tick := time.NewTicker(period)
	defer tick.Stop()
	publish := func(seq int, sendT int64) {
		_, _ = up.Publish("/odom", map[string]any{"t": sendT, "seq": seq,
			"pose": map[string]any{"x": 1.5, "y": -0.25, "theta": 0.125}, "covariance": pad})
	}
	end := time.Now().Add(warmup)
	seq := 0
	for time.Now().Before(end) {
		<-tick.C
		seq++
		publish(seq, 0) // t=0: not measured
	}
	mu.Lock()
	measuring = true
	mu.Unlock()
	cpu0, _ := harness.CPUSeconds(pid)
	sent0 := up.Sent()
	start := time.Now()
	published := 0
	end = start.Add(window)
	for time.Now().Before(end) {
		<-tick.C
		seq++
		published++
		publish(seq, time.Now().UnixNano())
	}
	elapsed := time.Since(start)
	sent := up.Sent() - sent0
	cpu1, _ := harness.CPUSeconds(pid)
	time.Sleep(300 * time.Millisecond) // let the last messages land
	mu.Lock()
	measuring = false
	mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	cancel()
	wg.Wait()
	_ = ctx
	slices.Sort(lat)
	r := result{clients: n, upRate: float64(sent) / elapsed.Seconds(), publishedCount: published}
	if len(lat) > 0 {
		r.p50 = lat[len(lat)*50/100]
		r.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	if published > 0 {
		r.delivered = float64(received) / float64(published*n)
	}
	if pid > 0 {
		r.proxyMeasured = true
		r.cpu = 100 * (cpu1 - cpu0) / elapsed.Seconds()
	}
	// the proxy drops the departed clients' subscriptions; wait for that
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, _ := up.Subscribers("/odom"); c == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

// sentAt reads the "t" member of a publish without decoding the message.
func sentAt(data []byte) (int64, bool) {
	i := bytes.Index(data, []byte(`"t":`))
	if i < 0 {
		return 0, false
	}
	j := i + 4
	k := j
	for k < len(data) && data[k] >= '0' && data[k] <= '9' {
		k++
	}
	v, err := strconv.ParseInt(string(data[j:k]), 10, 64)
	return v, err == nil
}

type proxy struct {
	*harness.Process
	pid   int
	url   string
	dir   string
	admin string
}

// profile fetches a CPU profile of the proxy over d into file; the returned
// function waits for it.
func (p *proxy) profile(file string, d time.Duration) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.admin, int(d.Seconds())))
		if err != nil {
			log.Printf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if err := os.WriteFile(file, b, 0o644); err != nil {
			log.Printf("profile: %v", err)
		}
	}()
	return func() { <-done }
}

func (p *proxy) stop() {
	_ = p.Stop(10 * time.Second)
	_ = os.RemoveAll(p.dir)
}

// startProxy runs the sdr-caddy binary ($SDR_CADDY_BIN, else one built
// now) with sdr_ros in front of upstream.
func startProxy(upstream string, admin bool) (*proxy, error) {
	bin, err := harness.CaddyBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "sdr-bench-ros-")
	if err != nil {
		return nil, err
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	adminAddr := "off"
	if admin {
		adminPort, err := harness.FreePort()
		if err != nil {
			return nil, err
		}
		adminAddr = fmt.Sprintf("127.0.0.1:%d", adminPort)
	}
	caddyfile := fmt.Sprintf(`{
	admin %s
}
http://127.0.0.1:%d {
	handle /ros/* {
		sdr_ros %s {
			rate_limit off
		}
	}
}
`, adminAddr, port, upstream)
	hp, err := harness.StartCaddy("caddy", bin, dir, caddyfile)
	if err != nil {
		return nil, err
	}
	p := &proxy{Process: hp, pid: hp.Pid(), url: fmt.Sprintf("ws://127.0.0.1:%d/ros/", port), dir: dir, admin: adminAddr}
	// Ready once a client is let in: sdr_ros answers 502 until its
	// upstream connection is up.
	if err := p.WaitReady(30*time.Second, func(ctx context.Context) error {
		c, _, err := websocket.DefaultDialer.DialContext(ctx, p.url, nil)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		p.stop()
		return nil, fmt.Errorf("proxy not letting clients in: %w\n%s", err, p.Output())
	}
	return p, nil
}
