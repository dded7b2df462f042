// Command nats benchmarks the sdr_nats relay inside the built binary while
// video streams: telemetry from NATS to N /stream/ws clients, its effect on
// video latency, and the 0x04 command path to NATS.
//
// A ring writer in this process produces a 1080p60-like stream (60 frames/s,
// a 100,000-byte keyframe every 60th frame, 15,000-byte deltas, the commit
// time in frame_id); N WebSocket clients read /stream/ws with reused
// buffers. The measured time alternates video-only segments and segments in
// which an ordinary NATS client publishes -rate telemetry messages/s; the
// first quarter of each segment settles and is not recorded. Video p99 with
// telemetry is compared with video p99 without, measured in the same run and
// interleaved, so that the ratio holds on a machine whose load drifts.
// Meanwhile one more client sends 0x04 commands at -cmd-rate/s and a NATS
// subscriber times their delivery (recorded in telemetry segments).
//
// The target is telemetry's share: video p99 with telemetry at most
// (1 + telemetry bytes / video bytes) x video p99 without, both byte counts
// those the clients received in the telemetry segments, so that telemetry
// costs video no more than its bytes.
//
// Last line: BENCH nats clients=.. relay_p99_ms=.. video_p99_delta_pct=.. cmd_p99_ms=..
// ... telemetry_bytes_ratio=.. video_p99_allowed_ms=.. vs_allowed=.. telemetry_share_ok=..
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// Phases: samples are kept only inside the measured segments.
const (
	phaseIdle      int32 = iota // warm-up and settling: nothing recorded
	phaseBase                   // video only
	phaseTelemetry              // video while telemetry flows
	phaseCount
)

var phase atomic.Int32

var cpuProfile string

func main() {
	clients := flag.Int("clients", 500, "WebSocket clients on /stream/ws")
	rate := flag.Int("rate", 1000, "telemetry messages per second")
	cmdRate := flag.Int("cmd-rate", 40, "commands per second from one client (under the 50/s default limit)")
	warmup := flag.Duration("warmup", 3*time.Second, "warm-up before measuring")
	window := flag.Duration("window", 24*time.Second, "measured time, split into alternating video-only and telemetry segments")
	segment := flag.Duration("segment", 2*time.Second, "length of one segment (the first quarter settles, unrecorded)")
	linger := flag.Duration("linger", 5*time.Millisecond, "sdr_nats telemetry_linger (5ms is its default; 0 is off)")
	hold := flag.String("hold", "", "sdr_stream telemetry_hold (empty: its default, 20ms; off: none)")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write the server's CPU profile over the measured time to this file")
	flag.Parse()
	if err := run(*clients, *rate, *cmdRate, *warmup, *window, *segment, *linger, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "bench nats:", err)
		os.Exit(1)
	}
}

// client is one /stream/ws reader; it records latencies in microseconds.
type client struct {
	video     [phaseCount][]int32
	telemetry [phaseCount][]int32
	// Bytes received (WebSocket frames whole) by kind and phase.
	videoBytes, telemetryBytes [phaseCount]atomic.Int64
	lost                       atomic.Bool
}

func (c *client) read(conn *websocket.Conn) {
	buf := make([]byte, 256<<10)
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			c.lost.Store(true)
			return
		}
		n, err := io.ReadFull(r, buf[:64])
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			c.lost.Store(true)
			return
		}
		c.record(buf[:n], 0)
		for {
			if _, err := r.Read(buf); err != nil {
				break
			}
		}
	}
}

// record takes the first bytes of one message, and the size of the
// WebSocket frame that carried it.
func (c *client) record(head []byte, size int64) {
	now := time.Now().UnixNano()
	p := phase.Load()
	switch {
	case len(head) >= 33 && head[0] == wire.TypeVideo:
		sent := int64(binary.LittleEndian.Uint64(head[1:9])) // frame_id: commit time
		if p == phaseBase || p == phaseTelemetry {
			c.video[p] = append(c.video[p], int32((now-sent)/1000))
			c.videoBytes[p].Add(size)
		}
	case len(head) >= 1 && head[0] == wire.TypeTelemetry:
		c.telemetryBytes[p].Add(size)
		if sent, ok := telemetrySent(head); ok && p == phaseTelemetry {
			c.telemetry[p] = append(c.telemetry[p], int32((now-sent)/1000))
		}
	}
}

// readRaw reads server frames straight from a large buffer: the load
// generator must cost little next to the server on the same two cores
// (BASELINES.md), so there is no per-message allocation and one read
// syscall takes many messages.
func (c *client) readRaw(br *bufio.Reader) {
	for {
		h, err := br.Peek(2)
		if err != nil {
			c.lost.Store(true)
			return
		}
		op, n, hl := h[0]&0x0f, int64(h[1]&0x7f), 2
		switch n {
		case 126:
			hl += 2
		case 127:
			hl += 8
		}
		hdr, err := br.Peek(hl)
		if err != nil {
			c.lost.Store(true)
			return
		}
		switch n {
		case 126:
			n = int64(binary.BigEndian.Uint16(hdr[2:4]))
		case 127:
			n = int64(binary.BigEndian.Uint64(hdr[2:10]))
		}
		_, _ = br.Discard(hl)
		if op == 0x8 {
			c.lost.Store(true)
			return
		}
		if op == 0x2 {
			head, err := br.Peek(int(min(n, 64)))
			if err != nil {
				c.lost.Store(true)
				return
			}
			c.record(head, int64(hl)+n)
		}
		if _, err := br.Discard(int(n)); err != nil {
			c.lost.Store(true)
			return
		}
	}
}

// dialRaw opens a WebSocket to ws://addr/path with a plain handshake and
// returns the connection and a 256 KiB reader on it.
func dialRaw(addr, path string) (net.Conn, *bufio.Reader, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
		path, addr, base64.StdEncoding.EncodeToString(key[:])); err != nil {
		conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(conn, 256<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, nil, fmt.Errorf("upgrade answered %s", resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, nil
}

// telemetryPayload is {"t":<19 digits>,"p":"..."}: the send time at a fixed
// offset, so that reading it costs nothing.
func telemetryPayload(dst []byte, t int64) []byte {
	dst = append(dst[:0], `{"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, `,"p":"`...)
	for len(dst) < 198 {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...)
}

func telemetrySent(msg []byte) (int64, bool) {
	subj, payload, err := wire.ParseTelemetry(msg)
	if err != nil || subj != "telemetry.training.metrics" || len(payload) < 5+19 {
		return 0, false
	}
	v, err := strconv.ParseInt(string(payload[5:5+19]), 10, 64)
	return v, err == nil
}

// holdLine is the sdr_stream telemetry_hold line for -hold.
func holdLine(hold string) string {
	if hold == "" {
		return ""
	}
	return "telemetry_hold " + hold
}

func run(n, rate, cmdRate int, warmup, window, segment, linger time.Duration, hold string) error {
	dir, err := os.MkdirTemp("", "bench-nats-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ringPath := filepath.Join(dir, "frames")
	w, err := shmring.CreateWriter(ringPath, 4<<20)
	if err != nil {
		return err
	}
	defer w.Close()
	stopWriter := make(chan struct{})
	var writerDone sync.WaitGroup
	writerDone.Add(1)
	go func() {
		defer writerDone.Done()
		writeVideo(w, stopWriter)
	}()
	defer func() { close(stopWriter); writerDone.Wait() }()

	natsPort, httpPort := harness.MustFreePort(), harness.MustFreePort()
	srv, err := startCaddy(dir, fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	sdr_nats {
		embedded {
			listen 127.0.0.1:%d
		}
		telemetry_linger %s
	}
}

http://127.0.0.1:%d {
	route /stream/ws {
		sdr_stream {
			source shm %s 4MiB
			max_clients %d
			%s
		}
	}
}
`, natsPort, linger, httpPort, ringPath, n+10, holdLine(hold)))
	if err != nil {
		return err
	}
	defer srv.stop()

	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort))
	if err != nil {
		return fmt.Errorf("connecting to the embedded nats-server: %w", err)
	}
	defer nc.Close()

	url := fmt.Sprintf("ws://127.0.0.1:%d/stream/ws", httpPort)
	cs := make([]*client, n)
	conns := make([]io.Closer, 0, n+1)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	for i := range cs {
		conn, br, err := dialRaw(addr, "/stream/ws")
		if err != nil {
			return fmt.Errorf("dialing client %d of %d: %w", i+1, n, err)
		}
		conns = append(conns, conn)
		cs[i] = &client{}
		go cs[i].readRaw(br)
	}
	// The command client also reads (its acks), like a browser.
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	cmdConn, _, err := dialer.Dial(url, nil)
	if err != nil {
		return fmt.Errorf("dialing the command client: %w", err)
	}
	conns = append(conns, cmdConn)
	go (&client{}).read(cmdConn)

	var cmdMu sync.Mutex
	var cmdLat []int32
	sub, err := nc.Subscribe("command.genesis.camera", func(m *nats.Msg) {
		now := time.Now().UnixNano()
		i := strings.Index(string(m.Data), `"t":`)
		if i < 0 {
			return
		}
		v, err := strconv.ParseInt(string(m.Data[i+4:i+4+19]), 10, 64)
		if err != nil || phase.Load() != phaseTelemetry {
			return
		}
		cmdMu.Lock()
		cmdLat = append(cmdLat, int32((now-v)/1000))
		cmdMu.Unlock()
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return err
	}

	fmt.Printf("bench nats: %d clients, telemetry %d msg/s (linger %s), commands %d/s, warm-up %s, %s measured in alternating %s segments\n",
		n, rate, linger, cmdRate, warmup, window, segment)
	cpu0, _ := harness.CPUSeconds(srv.Pid())
	self0, _ := harness.CPUSeconds(os.Getpid())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var publishing atomic.Bool
	var published atomic.Int64
	wg.Add(2)
	go func() {
		defer wg.Done()
		publishTelemetry(nc, rate, &publishing, stop, &published)
	}()
	go func() {
		defer wg.Done()
		sendCommands(cmdConn, cmdRate, stop)
	}()
	time.Sleep(warmup)
	if cpuProfile != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := saveProfile(srv.admin, window, cpuProfile); err != nil {
				fmt.Fprintln(os.Stderr, "bench nats: cpu profile:", err)
			}
		}()
	}
	// Alternate video-only and telemetry segments, so that drift in the
	// machine's load (other processes) falls on both alike.
	settle := segment / 4
	// CPU seconds of the server and of this process (the load generator)
	// over the recorded part of each kind of segment.
	var phaseCPU [2][2]float64
	var phaseTime [2]time.Duration
	for end := time.Now().Add(window); time.Now().Before(end); {
		for i, on := range []bool{false, true} {
			publishing.Store(on)
			phase.Store(phaseIdle)
			time.Sleep(settle)
			if on {
				phase.Store(phaseTelemetry)
			} else {
				phase.Store(phaseBase)
			}
			s0, _ := harness.CPUSeconds(srv.Pid())
			l0, _ := harness.CPUSeconds(os.Getpid())
			t0 := time.Now()
			time.Sleep(segment - settle)
			s1, _ := harness.CPUSeconds(srv.Pid())
			l1, _ := harness.CPUSeconds(os.Getpid())
			phaseCPU[i][0] += s1 - s0
			phaseCPU[i][1] += l1 - l0
			phaseTime[i] += time.Since(t0)
		}
	}
	phase.Store(phaseIdle)
	close(stop)
	wg.Wait()
	pubN := published.Load()
	cpu1, _ := harness.CPUSeconds(srv.Pid())
	self1, _ := harness.CPUSeconds(os.Getpid())

	var base, withTel, tel []int32
	var videoBytes, telemetryBytes int64
	lost := 0
	for _, c := range cs {
		base = append(base, c.video[phaseBase]...)
		withTel = append(withTel, c.video[phaseTelemetry]...)
		tel = append(tel, c.telemetry[phaseTelemetry]...)
		videoBytes += c.videoBytes[phaseTelemetry].Load()
		telemetryBytes += c.telemetryBytes[phaseTelemetry].Load()
		if c.lost.Load() {
			lost++
		}
	}
	cmdMu.Lock()
	cmds := slices.Clone(cmdLat)
	cmdMu.Unlock()
	if len(base) == 0 || len(withTel) == 0 || len(tel) == 0 || len(cmds) == 0 {
		return fmt.Errorf("no samples: video %d/%d, telemetry %d, commands %d (clients lost: %d)\n%s",
			len(base), len(withTel), len(tel), len(cmds), lost, srv.Output())
	}
	b50, b99 := pct(base, 50), pct(base, 99)
	v50, v99 := pct(withTel, 50), pct(withTel, 99)
	r50, r99 := pct(tel, 50), pct(tel, 99)
	c50, c99 := pct(cmds, 50), pct(cmds, 99)
	delta := (v99 - b99) / b99 * 100
	// Telemetry's share: it may cost video as much as its bytes add.
	share := float64(telemetryBytes) / float64(max(videoBytes, 1))
	allowed := (1 + share) * b99
	expected := float64(pubN) * float64(n)
	fmt.Printf("video only:      p50 %.2f ms  p99 %.2f ms  (%d samples)\n", b50, b99, len(base))
	fmt.Printf("video+telemetry: p50 %.2f ms  p99 %.2f ms  (%d samples)\n", v50, v99, len(withTel))
	fmt.Printf("telemetry relay: p50 %.2f ms  p99 %.2f ms  delivered %d of %d (%.1f%%; lossy by design)\n",
		r50, r99, len(tel), int64(expected), 100*float64(len(tel))/max(expected, 1))
	fmt.Printf("command path:    p50 %.2f ms  p99 %.2f ms  (%d commands)\n", c50, c99, len(cmds))
	fmt.Printf("telemetry share: %.1f MB of telemetry to %.1f MB of video in the telemetry segments (%.1f%%): video p99 allowed %.2f ms, measured %.2f ms\n",
		float64(telemetryBytes)/1e6, float64(videoBytes)/1e6, 100*share, allowed, v99)
	fmt.Printf("CPU over the measured run: server %.1f s, load generator %.1f s; clients disconnected: %d\n", cpu1-cpu0, self1-self0, lost)
	if c, err := harness.Counters(http.DefaultClient, "http://"+srv.admin+"/metrics", "caddy_sdr_stream_"); err == nil {
		fmt.Printf("server counters over the run: %.0f telemetry batches dropped for clients too far behind, %.0f writes handed to client goroutines\n",
			c["telemetry_dropped_total"], c["handovers_total"])
	}
	perSec := func(i, who int) float64 { return phaseCPU[i][who] / max(phaseTime[i].Seconds(), 1e-9) }
	fmt.Printf("CPU (cores) video only: server %.2f, load generator %.2f; with telemetry: server %.2f, load generator %.2f\n",
		perSec(0, 0), perSec(0, 1), perSec(1, 0), perSec(1, 1))
	if hold == "" {
		hold = "default"
	}
	fmt.Println("target: video p99 with telemetry <= (1 + telemetry bytes / video bytes) x video p99 without (vs_allowed <= 1)")
	fmt.Printf("BENCH nats clients=%d relay_p99_ms=%.2f video_p99_delta_pct=%.1f cmd_p99_ms=%.2f relay_p50_ms=%.2f cmd_p50_ms=%.2f video_p99_base_ms=%.2f video_p99_telemetry_ms=%.2f telemetry_rate=%d linger_ms=%g hold=%s telemetry_bytes_ratio=%.3f video_p99_allowed_ms=%.2f vs_allowed=%.2f telemetry_share_ok=%t load1=%s\n",
		n, r99, delta, c99, r50, c50, b99, v99, rate, float64(linger)/float64(time.Millisecond), hold, share, allowed, v99/allowed, v99 <= allowed, harness.LoadAvg(1))
	return nil
}

// saveProfile fetches the server's CPU profile over d from its admin
// endpoint.
func saveProfile(admin string, d time.Duration, path string) error {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, int(d.Seconds())))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeVideo commits 60 frames/s: a 100,000-byte keyframe every 60th frame,
// 15,000-byte deltas; frame_id is the commit time (WriteFrame sets it).
func writeVideo(w *shmring.Writer, stop <-chan struct{}) {
	key := make([]byte, 100_000)
	delta := make([]byte, 15_000)
	next := time.Now()
	for i := 0; ; i++ {
		h := shmring.Header{Codec: shmring.CodecH264}
		p := delta
		if i%60 == 0 {
			h.Flags = shmring.FlagKeyframe
			p = key
		}
		_, _ = w.WriteFrame(h, p)
		next = next.Add(time.Second / 60)
		select {
		case <-stop:
			return
		case <-time.After(time.Until(next)):
		}
	}
}

// publishTelemetry publishes rate messages/s while on is set, each carrying
// its send time; it counts those sent inside telemetry segments.
func publishTelemetry(nc *nats.Conn, rate int, on *atomic.Bool, stop <-chan struct{}, count *atomic.Int64) {
	buf := make([]byte, 0, 256)
	tk := time.NewTicker(time.Millisecond)
	defer tk.Stop()
	var start time.Time
	var sent int64
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
		}
		if !on.Load() {
			start = time.Time{}
			continue
		}
		if start.IsZero() {
			start, sent = time.Now(), 0
		}
		due := int64(time.Since(start).Seconds() * float64(rate))
		for ; sent < due; sent++ {
			buf = telemetryPayload(buf, time.Now().UnixNano())
			_ = nc.Publish("telemetry.training.metrics", buf)
			if phase.Load() == phaseTelemetry {
				count.Add(1)
			}
		}
	}
}

// sendCommands sends rate 0x04 camera commands per second on conn.
func sendCommands(conn *websocket.Conn, rate int, stop <-chan struct{}) {
	tk := time.NewTicker(time.Second / time.Duration(rate))
	defer tk.Stop()
	msg := make([]byte, 0, 128)
	for seq := 1; ; seq++ {
		select {
		case <-stop:
			return
		case <-tk.C:
		}
		msg = append(msg[:0], wire.TypeCommand)
		msg = fmt.Appendf(msg, `{"action":"camera","cmd_seq":%d,"data":{"t":%d}}`, seq, time.Now().UnixNano())
		if err := conn.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			return
		}
	}
}

func pct(xs []int32, p float64) float64 {
	slices.Sort(xs)
	i := int(float64(len(xs)-1) * p / 100)
	return float64(xs[i]) / 1000
}

type caddyProc struct {
	*harness.Process
	admin string
}

func (c *caddyProc) stop() { _ = c.Stop(10 * time.Second) }

// startCaddy runs $SDR_CADDY_BIN (make sets it), else a fresh build, with
// the Caddyfile, and waits for its admin endpoint.
func startCaddy(dir, caddyfile string) (*caddyProc, error) {
	bin, err := harness.CaddyBin()
	if err != nil {
		return nil, err
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	admin := fmt.Sprintf("127.0.0.1:%d", port)
	hp, err := harness.StartCaddy("caddy", bin, dir, caddyfile, "SDR_TEST_ADMIN="+admin)
	if err != nil {
		return nil, err
	}
	p := &caddyProc{Process: hp, admin: admin}
	if err := p.WaitReady(30*time.Second, harness.Answers("http://"+admin+"/config/")); err != nil {
		p.stop()
		return nil, fmt.Errorf("%w\n%s", err, p.Output())
	}
	return p, nil
}
