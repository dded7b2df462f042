package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

func streamDial(t *testing.T, url string, hdr http.Header) *websocket.Conn {
	t.Helper()
	return testenv.DialWS(t, url, hdr, 20*time.Second)
}

// waitHealth waits until the health JSON at url satisfies ok.
func waitHealth(t *testing.T, url string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	var h map[string]any
	testwait.For(t, "the health JSON at "+url, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		h = nil
		return json.NewDecoder(resp.Body).Decode(&h) == nil && ok(h)
	})
	return h
}

// startStream runs Caddy with one sdr_stream at /stream/* on a new ring,
// with the extra subdirectives given, and returns the ring's writer.
func startStream(t *testing.T, extra string) *shmringtest.Writer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "frames")
	w := shmringtest.NewWriter(t, path, 1<<20)
	localhostTester(t, fmt.Sprintf(`
	http://localhost:9080 {
		handle /stream/* {
			sdr_stream {
				source shm %s
				%s
			}
		}
	}`, path, extra))
	return w
}

func TestStreamServeGOPStartAndHealth(t *testing.T) {
	w := startStream(t, "join_max_age 1m") // the GOP is replayed however slow the machine
	health := "http://localhost:9080/stream/health"
	// A keyframe and two deltas, each taken by the reader before the next.
	for i := range 3 {
		seq := w.Write(t, i == 0, 1000+i)
		waitHealth(t, health, func(h map[string]any) bool { return h["shm_seq"] == float64(seq) })
	}
	c := streamDial(t, "ws://localhost:9080/stream/ws", nil)
	for want := uint64(1); want <= 3; want++ {
		if h, _ := shmringtest.ReadVideo(t, c); h.FrameSeq != want {
			t.Fatalf("joining client got frame %d, want %d (the current GOP from its keyframe)", h.FrameSeq, want)
		}
	}
	w.Write(t, false, 10)
	if h, _ := shmringtest.ReadVideo(t, c); h.FrameSeq != 4 {
		t.Fatalf("live frame %d, want 4", h.FrameSeq)
	}

	resp, err := http.Get(health)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("health content type %q", ct)
	}
	// Field names and order exactly as the old service.
	var keys []string
	dec := json.NewDecoder(strings.NewReader(string(body)))
	_, _ = dec.Token()
	for dec.More() {
		k, _ := dec.Token()
		keys = append(keys, k.(string))
		var v any
		_ = dec.Decode(&v)
	}
	// The old service's fields first, in its order, then the ring's.
	want := "status clients shm_seq last_frame_age_ms uptime_s frames_broadcast client_lag_total avg_frame_size_bytes ring reader_heartbeat_age_ms"
	if strings.Join(keys, " ") != want {
		t.Fatalf("health fields %v, want %s", keys, want)
	}
	var h map[string]any
	if err := json.Unmarshal(body, &h); err != nil {
		t.Fatal(err)
	}
	// frames_broadcast and avg_frame_size_bytes count, as the old service
	// did, the frames read while a client was connected: frame 4 alone.
	if h["status"] != "ok" || h["clients"] != float64(1) || h["shm_seq"] != float64(4) ||
		h["frames_broadcast"] != float64(1) || h["client_lag_total"] != float64(0) {
		t.Errorf("health %s", body)
	}
	if age, ok := h["last_frame_age_ms"].(float64); !ok || age < 0 || age > 15000 {
		t.Errorf("last_frame_age_ms %v", h["last_frame_age_ms"])
	}
	if avg := h["avg_frame_size_bytes"].(float64); avg != 10 {
		t.Errorf("avg_frame_size_bytes %v, want 10 (frame 4)", avg)
	}
	req, _ := http.NewRequest(http.MethodPost, health, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d, want 405", resp.StatusCode)
	}
}

func TestStreamServeKeyframeFirstAndTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "frames")
	w := shmringtest.NewWriter(t, path, 1<<20)
	localhostTester(t, fmt.Sprintf(`
	http://localhost:9080 {
		handle /stream/* {
			sdr_stream {
				source shm %s
				idr_timeout 800ms
			}
		}
		handle /patient/* {
			sdr_stream {
				source shm %s
				idr_timeout 60s
			}
		}
	}`, path, path))
	health := "http://localhost:9080/stream/health"
	seq := w.Write(t, false, 100)
	waitHealth(t, health, func(h map[string]any) bool { return h["shm_seq"] == float64(seq) })

	// Deltas flow and no keyframe comes: closed with 4000 once they have
	// flowed for the IDR timeout.
	c := streamDial(t, "ws://localhost:9080/stream/ws", nil)
	waitHealth(t, health, func(h map[string]any) bool { return h["clients"] == float64(1) })
	start := time.Now()
	stopDeltas := w.Start(t, shmringtest.Cadence{Period: 10 * time.Millisecond, Size: 2000})
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != int(wire.CloseKeyframeTimeout) {
		t.Fatalf("client without keyframe: %v, want close 4000", err)
	}
	if d := time.Since(start); d < 700*time.Millisecond {
		t.Errorf("closed after %v, before the 800ms IDR timeout", d)
	}
	stopDeltas()

	// Deltas first, then a keyframe: the client sees the keyframe first.
	c2 := streamDial(t, "ws://localhost:9080/patient/ws", nil)
	waitHealth(t, "http://localhost:9080/patient/health", func(h map[string]any) bool { return h["clients"] == float64(1) })
	for range 3 {
		seq = w.Write(t, false, 100)
		waitHealth(t, health, func(h map[string]any) bool { return h["shm_seq"] == float64(seq) })
	}
	key := w.Write(t, true, 100)
	if h, _ := shmringtest.ReadVideo(t, c2); h.FrameSeq != key || !h.Keyframe() {
		t.Fatalf("first frame %d (keyframe %v), want keyframe %d", h.FrameSeq, h.Keyframe(), key)
	}
}

// max_clients holds under concurrent upgrades: of many at once exactly
// max_clients get through, the rest get 503 with Retry-After, and a place
// given back takes a new client.
func TestStreamServeMaxClientsConcurrent(t *testing.T) {
	w := startStream(t, "max_clients 3")
	w.Write(t, true, 100)
	const tries = 16
	var (
		mu       sync.Mutex
		conns    []*websocket.Conn
		rejected int
		wg       sync.WaitGroup
	)
	for range tries {
		wg.Go(func() {
			c, resp, err := websocket.DefaultDialer.Dial("ws://localhost:9080/stream/ws", nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				conns = append(conns, c)
			case resp != nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
				rejected++
			default:
				t.Errorf("dial: %v (%v)", err, resp)
			}
		})
	}
	wg.Wait()
	for _, c := range conns {
		t.Cleanup(func() { c.Close() })
	}
	if len(conns) != 3 || rejected != tries-3 {
		t.Fatalf("%d upgraded and %d refused of %d concurrent, want 3 and %d", len(conns), rejected, tries, tries-3)
	}
	conns[0].Close()
	waitHealth(t, "http://localhost:9080/stream/health", func(h map[string]any) bool { return h["clients"] == float64(2) })
	// The health JSON counts a client once its place is given back.
	c, resp, err := websocket.DefaultDialer.Dial("ws://localhost:9080/stream/ws", nil)
	if err != nil {
		t.Fatalf("the place given back did not take a client: %v (%v)", err, resp)
	}
	c.Close()
}

// Every origin may connect and watch, as with the old transport-server;
// without sdr_nats every command is answered "unavailable", to that client
// alone.
func TestStreamServeOriginsAndCommands(t *testing.T) {
	w := startStream(t, `allowed_origins https://app.example.com
				max_message_size 1KiB`)
	w.Write(t, true, 100)
	url := "ws://localhost:9080/stream/ws"
	for _, origin := range []string{"", "http://localhost:9080", "https://app.example.com", "https://evil.example.com", "http://localhost:9081"} {
		hdr := http.Header{}
		if origin != "" {
			hdr.Set("Origin", origin)
		}
		c, resp, err := websocket.DefaultDialer.Dial(url, hdr)
		if err != nil {
			t.Errorf("origin %q refused: %v (%v)", origin, err, resp)
			continue
		}
		_ = c.SetReadDeadline(testwait.Deadline(20 * time.Second))
		if h, _ := shmringtest.ReadVideo(t, c); !h.Keyframe() {
			t.Errorf("origin %q: first frame is not the keyframe", origin)
		}
		c.Close()
	}

	// Without sdr_nats, a command is answered "unavailable" to that client.
	c := streamDial(t, url, nil)
	other := streamDial(t, url, nil)
	command := func(c *websocket.Conn, body string) map[string]any {
		t.Helper()
		if err := c.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, body...)); err != nil {
			t.Fatal(err)
		}
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if msg[0] == wire.TypeVideo {
				continue
			}
			subj, payload, err := wire.ParseTelemetry(msg)
			if err != nil || subj != "telemetry.command.ack" {
				t.Fatalf("reply %q: %v", msg, err)
			}
			var ack map[string]any
			if err := json.Unmarshal(payload, &ack); err != nil {
				t.Fatal(err)
			}
			return ack
		}
	}
	if ack := command(c, `{"action":"set_cmd_vel","cmd_seq":42,"data":{}}`); ack["action"] != "set_cmd_vel" ||
		ack["cmd_seq"] != float64(42) || ack["status"] != "unavailable" || ack["detail"] != "no NATS configured" {
		t.Errorf("ack %v", ack)
	}
	// The other client's own ack is the first it gets: it was not sent
	// the first client's.
	if ack := command(other, `{"action":"pause","cmd_seq":7}`); ack["cmd_seq"] != float64(7) {
		t.Errorf("the other client got the ack %v first", ack)
	}

	// Hostile input: an oversized message closes with 1009; garbage first.
	for _, m := range [][]byte{{0xff}, {}, {wire.TypeSignaling, '{'}, {wire.TypeCommand}} {
		if err := c.WriteMessage(websocket.BinaryMessage, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WriteMessage(websocket.BinaryMessage, make([]byte, 2048)); err != nil {
		t.Fatal(err)
	}
	for {
		_, m, err := c.ReadMessage()
		if err == nil {
			if m[0] == wire.TypeTelemetry { // the ack of the empty 0x04
				continue
			}
			t.Fatalf("unexpected message %x", m[:1])
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
			t.Fatalf("oversized message: %v, want close 1009", err)
		}
		break
	}
}

// natsStream runs Caddy with the sdr_nats app (its embedded server) and
// the site given, and returns a NATS client of the embedded server.
func natsStream(t *testing.T, site string) *nats.Conn {
	t.Helper()
	natsPort := testenv.FreePort(t)
	tester := caddytest.NewTester(t)
	tester.InitServer(fmt.Sprintf(`
	{
		admin localhost:2999
		http_port 9080
		https_port 9443
		grace_period 1ns
		sdr_nats {
			embedded {
				listen 127.0.0.1:%d
			}
		}
	}
	%s`, natsPort, site), "caddyfile")
	unloadOnCleanup(t)
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// streamCommand sends one 0x04 command on c.
func streamCommand(t *testing.T, c *websocket.Conn, body string) {
	t.Helper()
	if err := c.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, body...)); err != nil {
		t.Fatal(err)
	}
}

// streamAck reads c until a telemetry.command.ack and returns it, passing
// over video and other telemetry.
func streamAck(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("reading the ack: %v", err)
		}
		subj, payload, err := wire.ParseTelemetry(msg)
		if err != nil || subj != "telemetry.command.ack" {
			continue
		}
		var ack map[string]any
		if err := json.Unmarshal(payload, &ack); err != nil {
			t.Fatal(err)
		}
		return ack
	}
}

// The Origin is judged on commands, not on the upgrade: every page may
// watch; a connection is trusted to command when its Origin is the page's
// own host on any port, the host a proxy names in X-Forwarded-Host, a
// loopback origin, or listed in allowed_origins ("*": any). SDR_OS's
// development server.js rewrites Host to transport-server:8080 and keeps
// the browser's Origin: trusted with X-Forwarded-Host, or from a loopback
// page, or when listed.
func TestStreamServeOriginJudgedOnCommands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "frames")
	w := shmringtest.NewWriter(t, path, 1<<20)
	nc := natsStream(t, fmt.Sprintf(`
	:9080 {
		handle /stream/* {
			sdr_stream {
				source shm %s
				allowed_origins https://app.example.com https://*.ops.example.com
			}
		}
		handle /open/* {
			sdr_stream {
				source shm %s
				allowed_origins *
			}
		}
	}`, path, path))
	cmds := subscribeChan(t, nc, "command.genesis.estop", 64)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	w.Write(t, true, 100)
	const refused = `caddy_sdr_stream_origin_rejected_total{stream="default"}` // process-wide
	refusedBefore := metricValue(t, refused)

	for i, tc := range []struct {
		path, origin, host, fwd string
		trusted                 bool
	}{
		{"/stream/ws", "", "robot:9080", "", true},
		{"/stream/ws", "http://robot", "robot:9080", "", true}, // a page on :80, the socket on :8080
		{"/stream/ws", "http://evil.example", "robot:9080", "", false},
		{"/stream/ws", "http://devbox.lan:3000", "transport-server:8080", "", false},
		{"/stream/ws", "http://devbox.lan:3000", "transport-server:8080", "devbox.lan:3000", true},
		{"/stream/ws", "http://localhost:3000", "transport-server:8080", "", true},
		{"/stream/ws", "http://127.0.0.1:3000", "robot:9080", "", true},
		{"/stream/ws", "https://app.example.com", "robot:9080", "", true},
		{"/stream/ws", "https://cam.ops.example.com", "robot:9080", "", true},
		{"/stream/ws", "https://app.example.org", "robot:9080", "", false},
		{"/open/ws", "http://evil.example", "robot:9080", "", true},
	} {
		hdr := http.Header{"Host": {tc.host}}
		if tc.origin != "" {
			hdr.Set("Origin", tc.origin)
		}
		if tc.fwd != "" {
			hdr.Set("X-Forwarded-Host", tc.fwd)
		}
		what := fmt.Sprintf("%s Origin %q Host %q X-Forwarded-Host %q", tc.path, tc.origin, tc.host, tc.fwd)
		c, resp, err := websocket.DefaultDialer.Dial("ws://127.0.0.1:9080"+tc.path, hdr)
		if err != nil {
			t.Fatalf("%s: upgrade refused: %v (%v)", what, err, resp)
		}
		_ = c.SetReadDeadline(testwait.Deadline(20 * time.Second))
		if h, _ := shmringtest.ReadVideo(t, c); !h.Keyframe() {
			t.Fatalf("%s: no video", what)
		}
		seq := i + 1
		streamCommand(t, c, fmt.Sprintf(`{"action":"estop","cmd_seq":%d}`, seq))
		if tc.trusted {
			m := testwait.Recv(t, cmds, what+": the estop on NATS")
			if m.Subject != "command.genesis.estop" || !strings.Contains(string(m.Data), fmt.Sprintf(`"cmd_seq":%d`, seq)) {
				t.Fatalf("%s: published %s %s", what, m.Subject, m.Data)
			}
		} else {
			ack := streamAck(t, c)
			want := "origin " + tc.origin + " not allowed; add it to SDR_ALLOWED_ORIGINS"
			if ack["status"] != "rejected" || ack["action"] != "estop" || ack["cmd_seq"] != float64(seq) || ack["detail"] != want {
				t.Fatalf("%s: ack %v, want rejected: %s", what, ack, want)
			}
		}
		c.Close()
	}
	// Only the trusted connections' commands reached NATS: a marker
	// published after them comes next.
	if err := nc.Publish("command.genesis.estop", []byte("marker")); err != nil {
		t.Fatal(err)
	}
	if m := testwait.Recv(t, cmds, "the marker"); string(m.Data) != "marker" {
		t.Fatalf("an untrusted command reached NATS: %s %s", m.Subject, m.Data)
	}
	if n := metricValue(t, refused) - refusedBefore; n != 3 {
		t.Errorf("caddy_sdr_stream_origin_rejected_total rose by %v, want 3", n)
	}
}

// While no video flows at all (the simulator starting or restarting, or
// dev mode), a client is not closed for a missing keyframe and its
// commands go out. A second client on a stream whose deltas flow without a
// keyframe is the clock: when it is closed for the IDR timeout, the first,
// connected before it, has waited longer than that too.
func TestStreamServeCommandsWithoutVideo(t *testing.T) {
	dir := t.TempDir()
	quiet, flowing := filepath.Join(dir, "quiet"), filepath.Join(dir, "flowing")
	shmringtest.NewWriter(t, quiet, 1<<20) // a ring nobody writes
	wf := shmringtest.NewWriter(t, flowing, 1<<20)
	nc := natsStream(t, fmt.Sprintf(`
	http://localhost:9080 {
		handle /stream/* {
			sdr_stream {
				source shm %s
				idr_timeout 300ms
			}
		}
		handle /flowing/* {
			sdr_stream flowing {
				source shm %s
				idr_timeout 300ms
			}
		}
	}`, quiet, flowing))
	cmds := subscribeChan(t, nc, "command.genesis.estop", 8)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := streamDial(t, "ws://localhost:9080/stream/ws", nil)
	waitHealth(t, "http://localhost:9080/stream/health", func(h map[string]any) bool { return h["clients"] == float64(1) })

	clock := streamDial(t, "ws://localhost:9080/flowing/ws", nil)
	stopDeltas := wf.Start(t, shmringtest.Cadence{Period: 10 * time.Millisecond, Size: 2000})
	_, _, err := clock.ReadMessage()
	stopDeltas()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != int(wire.CloseKeyframeTimeout) {
		t.Fatalf("client among deltas without a keyframe: %v, want close 4000", err)
	}

	streamCommand(t, c, `{"action":"estop","cmd_seq":1}`)
	for {
		// The safety gate of the stream without video publishes its own
		// estop after 5 s: pass over it.
		m := testwait.Recv(t, cmds, "the estop of the client without video")
		if strings.Contains(string(m.Data), `"cmd_seq":1`) {
			break
		}
		if !strings.Contains(string(m.Data), `"_safety"`) {
			t.Fatalf("published %s", m.Data)
		}
	}
	if h := waitHealth(t, "http://localhost:9080/stream/health", func(map[string]any) bool { return true }); h["clients"] != float64(1) {
		t.Fatalf("the client without video is gone: health %v", h)
	}
}

func TestStreamServeManyStreamsAndMetrics(t *testing.T) {
	dir := t.TempDir()
	front, wrist := filepath.Join(dir, "front"), filepath.Join(dir, "wrist")
	wf, ww := shmringtest.NewWriter(t, front, 1<<20), shmringtest.NewWriter(t, wrist, 1<<20)
	localhostTester(t, fmt.Sprintf(`
	http://localhost:9080 {
		handle /stream/front/* {
			sdr_stream front {
				source shm %s
			}
		}
		handle /stream/wrist/* {
			sdr_stream wrist {
				source shm %s
			}
		}
		handle /stream/again/* {
			sdr_stream front {
				source shm %s
			}
		}
	}`, front, wrist, front))
	stopFront := wf.Start(t, shmringtest.Cadence{Period: 5 * time.Millisecond, GOP: 10, Size: 2000})
	stopWrist := ww.Start(t, shmringtest.Cadence{Period: 5 * time.Millisecond, GOP: 10, Size: 2000})
	cf := streamDial(t, "ws://localhost:9080/stream/front/ws", nil)
	cw := streamDial(t, "ws://localhost:9080/stream/wrist/ws", nil)
	ca := streamDial(t, "ws://localhost:9080/stream/again/ws", nil)
	for _, c := range []*websocket.Conn{cf, cw, ca} {
		if h, _ := shmringtest.ReadVideo(t, c); !h.Keyframe() {
			t.Fatalf("first frame %d is not a keyframe", h.FrameSeq)
		}
		for range 20 {
			shmringtest.ReadVideo(t, c)
		}
	}
	stopFront()
	stopWrist()
	body := adminMetrics(t)
	for _, want := range []string{
		`caddy_sdr_stream_frames_out_total{stream="front"}`,
		`caddy_sdr_stream_frames_out_total{stream="wrist"}`,
		`caddy_sdr_stream_clients{stream="front"} 2`,
		`caddy_sdr_stream_delivery_seconds_bucket{stream="wrist",le="0.001"}`,
		`caddy_sdr_stream_idr_requests_total{stream="front"}`,
		fmt.Sprintf(`caddy_sdr_stream_ring_frames_total{path=%q}`, front),
		fmt.Sprintf(`caddy_sdr_stream_ring_attached{path=%q} 1`, wrist),
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// One reader per ring file: two handlers of "front" share one mapping.
	maps, err := os.ReadFile("/proc/self/maps")
	if err == nil {
		// The writer maps it too.
		if n := strings.Count(string(maps), front); n != 2 {
			t.Errorf("%d mappings of %s, want 2 (one writer, one shared reader)", n, front)
		}
	}
}
