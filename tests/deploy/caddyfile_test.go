package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// cleanEnv is the process environment without SDR_* variables, so that the
// Caddyfile's own defaults apply unless a test sets a variable.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SDR_") || strings.HasPrefix(kv, "SDR_CADDY_BIN=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// runCaddy runs the built binary with args and returns its combined output.
func runCaddy(t *testing.T, env []string, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.CaddyBin(t), args...)
	cmd.Dir = testenv.Root()
	cmd.Env = env
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestCaddyfileExampleValidates(t *testing.T) {
	t.Parallel()
	xdg := t.TempDir()
	base := cleanEnv("XDG_CONFIG_HOME="+xdg, "XDG_DATA_HOME="+xdg)
	// With the defaults (a developer machine), and with what
	// docker-compose.yml sets for the caddy service.
	root := testenv.Root()
	p, err := loadCompose(t, root, []string{"docker-compose.yml"}, []string{"sim"})
	if err != nil {
		t.Fatal(err)
	}
	composeEnv := append([]string(nil), base...)
	for k, v := range p.Services["caddy"].Environment {
		if v != nil {
			composeEnv = append(composeEnv, k+"="+*v)
		}
	}
	// Validation provisions every module and starts none of them: with no
	// SDR_NATS_URL the embedded nats-server is configured (here on a free
	// port, SDR_NATS_EMBEDDED_ADDR) but not started; with a URL nothing
	// dials it (TestValidateLiveConfig).
	embedded := append(append([]string(nil), base...),
		fmt.Sprintf("SDR_NATS_EMBEDDED_ADDR=127.0.0.1:%d", testenv.FreePort(t)))
	withNATS := append(append([]string(nil), base...), "SDR_NATS_URL="+testenv.StartNATS(t))
	for name, env := range map[string][]string{"defaults (embedded NATS)": embedded, "defaults with a NATS URL": withNATS, "compose": composeEnv} {
		out, err := runCaddy(t, env, "", "validate", "--config", "Caddyfile.example", "--adapter", "caddyfile")
		if err != nil || !strings.Contains(out, "Valid configuration") {
			t.Errorf("%s: caddy validate: %v\n%s", name, err, out)
		}
	}
}

func TestCaddyfileExampleFormatted(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile(filepath.Join(testenv.Root(), "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.CaddyBin(t), "fmt", "-")
	cmd.Stdin = strings.NewReader(string(src))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("caddy fmt: %v", err)
	}
	if string(out) != string(src) {
		t.Errorf("Caddyfile.example is not formatted: run bin/caddy fmt --overwrite Caddyfile.example")
	}
}

// example is Caddyfile.example running on free loopback ports.
type example struct {
	edge, transport, admin string   // base URLs / host:port
	metrics                string   // host:port of the metrics site
	ring                   string   // the encoded-frame ring file it reads
	nats                   string   // URL of the nats-server it connects to
	env                    []string // the SDR_* settings it runs with
	caddy                  *testenv.Caddy
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago and that no other test process is given (testenv.FreePort).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = testenv.FreePort(t)
	}
	return ports
}

// startExample runs Caddyfile.example unchanged with its listening addresses
// moved to free loopback ports through the environment, as the demo does.
func startExample(t *testing.T, extra ...string) *example {
	t.Helper()
	return startExampleWith(t, testenv.StartOptions{}, extra...)
}

// startExampleWith is startExample with options for the process.
func startExampleWith(t *testing.T, o testenv.StartOptions, extra ...string) *example {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(testenv.Root(), "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 6)
	e := &example{
		edge:      fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		transport: fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		admin:     fmt.Sprintf("127.0.0.1:%d", ports[2]),
		metrics:   fmt.Sprintf("127.0.0.1:%d", ports[5]),
		ring:      filepath.Join(t.TempDir(), "frames"),
		nats:      testenv.StartNATSOn(t, ports[3]),
	}
	env := []string{
		"SDR_SHM_PATH=" + e.ring,
		"SDR_NATS_URL=" + e.nats,
		// Nothing listens there: sdr_ros keeps retrying in the background.
		fmt.Sprintf("SDR_ROS_UPSTREAM=ws://127.0.0.1:%d", ports[4]),
		"SDR_BIND_HOST=127.0.0.1",
		"SDR_HTTP_ADDR=:" + e.edge[strings.LastIndex(e.edge, ":")+1:],
		"SDR_LISTEN_ADDR=:" + e.transport[strings.LastIndex(e.transport, ":")+1:],
		"SDR_ADMIN_ADDR=" + e.admin,
		// A port alone: on SDR_BIND_HOST, as docker-compose.yml's :9180.
		fmt.Sprintf("SDR_METRICS_ADDR=:%d", ports[5]),
	}
	env = append(env, extra...)
	e.env = env
	e.caddy = testenv.StartCaddyWith(t, string(src), env, func() error {
		resp, err := http.Get(e.edge + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}, o)
	return e
}

// get fetches a URL and returns status, body and Content-Type.
func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b), resp.Header.Get("Content-Type")
}

func TestCaddyfileExampleServesEdgeRoutes(t *testing.T) {
	closed := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	e := startExample(t, "SDR_NODE_UPSTREAM="+closed, "SDR_WEB_ROOT="+t.TempDir())

	if code, body, _ := get(t, e.edge+"/health"); code != 200 || body != "OK" {
		t.Errorf("/health = %d %q, want 200 OK", code, body)
	}
	// No web app on disk: the embedded player is the page at /.
	if code, body, ct := get(t, e.edge+"/"); code != 200 || !strings.HasPrefix(ct, "text/html") || !strings.Contains(body, "/sdr/") {
		t.Errorf("/ = %d %s, want the player page:\n%.300s", code, ct, body)
	}
	if code, _, ct := get(t, e.edge+"/sdr/player.js"); code != 200 || !strings.Contains(ct, "javascript") {
		t.Errorf("/sdr/player.js = %d %s", code, ct)
	}
	if code, _, _ := get(t, e.edge+"/no/such/page"); code != 404 {
		t.Errorf("/no/such/page = %d, want 404 without a web app", code)
	}
	// /api/* and /socket.io/* go to the Node service: nothing listens there,
	// so the proxy answers 502.
	for _, p := range []string{"/api/status", "/socket.io/?EIO=4&transport=polling"} {
		if code, _, _ := get(t, e.edge+p); code != http.StatusBadGateway {
			t.Errorf("%s = %d, want 502 from reverse_proxy to the absent Node service", p, code)
		}
	}
	// Prometheus metrics on the metrics site: ours and Caddy's per-route
	// HTTP metrics (the edge has served requests by now), and nothing else
	// there.
	if code, body, _ := get(t, "http://"+e.metrics+"/metrics"); code != 200 || !strings.Contains(body, "caddy_sdr_stream_clients") || !strings.Contains(body, "caddy_http_requests_total") {
		t.Errorf("metrics site /metrics = %d, without caddy_sdr_stream_clients or caddy_http_requests_total:\n%.500s", code, body)
	}
	for _, p := range []string{"/", "/config/", "/load"} {
		if code, _, _ := get(t, "http://"+e.metrics+p); code != 404 {
			t.Errorf("metrics site %s = %d, want 404: it serves /metrics only", p, code)
		}
	}
}

func TestCaddyfileExampleServesWebApp(t *testing.T) {
	www := t.TempDir()
	for name, body := range map[string]string{"index.html": "<html>spa</html>", "app.js": "console.log(1)"} {
		if err := os.WriteFile(filepath.Join(www, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e := startExample(t, "SDR_WEB_ROOT="+www)
	for path, want := range map[string]string{"/": "<html>spa</html>", "/app.js": "console.log(1)", "/robots/arm/3": "<html>spa</html>"} {
		if code, body, _ := get(t, e.edge+path); code != 200 || body != want {
			t.Errorf("%s = %d %q, want the web app's %q", path, code, body, want)
		}
	}
	// The player's modules stay reachable beside the web app.
	if code, _, ct := get(t, e.edge+"/sdr/player.js"); code != 200 || !strings.Contains(ct, "javascript") {
		t.Errorf("/sdr/player.js = %d %s", code, ct)
	}
}

// TestCaddyfileExampleTwoInstances runs two copies side by side: every
// address the file opens is a placeholder.
func TestCaddyfileExampleTwoInstances(t *testing.T) {
	a := startExample(t)
	b := startExample(t)
	for _, e := range []*example{a, b} {
		if code, body, _ := get(t, e.edge+"/health"); code != 200 || body != "OK" {
			t.Errorf("%s/health = %d %q", e.edge, code, body)
		}
	}
}

// TestCaddyfileExampleStreams writes frames into the ring Caddyfile.example
// reads and receives them as 0x01 messages on /stream/ws of both sites; the
// transport-compatible site answers /health with the old JSON.
func TestCaddyfileExampleStreams(t *testing.T) {
	e := startExample(t)
	stop := writeFrames(t, e.ring)

	for _, base := range []string{e.edge, e.transport} {
		url := "ws" + strings.TrimPrefix(base, "http") + "/stream/ws"
		conn, resp, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatalf("dial %s: %v (%v)", url, err, resp)
		}
		_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		for got := 0; got < 5; {
			typ, msg, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("%s: after %d frames: %v", url, got, err)
			}
			if typ != websocket.BinaryMessage || len(msg) < 1+shmring.HeaderSize || msg[0] != 0x01 {
				continue // telemetry or other types
			}
			h, err := shmring.ParseHeader(msg[1:])
			if err != nil {
				t.Fatal(err)
			}
			if got == 0 && !h.Keyframe() {
				t.Errorf("%s: first frame is not a keyframe: %+v", url, h)
			}
			payload := msg[1+shmring.HeaderSize:]
			if int(h.Size) != len(payload) || shmring.Checksum(payload) != h.CRC32 {
				t.Errorf("%s: frame %d: header %+v does not describe its %d-byte payload", url, h.FrameSeq, h, len(payload))
			}
			got++
		}
		conn.Close()
	}

	code, body, ct := get(t, e.transport+"/health")
	var health map[string]any
	if code != 200 || !strings.Contains(ct, "json") || json.Unmarshal([]byte(body), &health) != nil {
		t.Fatalf("transport /health = %d %s %q, want the old JSON", code, ct, body)
	}
	for _, k := range []string{"status", "clients", "shm_seq", "last_frame_age_ms", "uptime_s", "frames_broadcast", "client_lag_total", "avg_frame_size_bytes"} {
		if _, ok := health[k]; !ok {
			t.Errorf("transport /health lacks %q: %s", k, body)
		}
	}
	if health["nats"] != "connected" {
		t.Errorf("transport /health nats = %v, want connected (sdr_nats is configured): %s", health["nats"], body)
	}
	if seq, _ := health["shm_seq"].(float64); seq < 1 {
		t.Errorf("transport /health shm_seq = %v after frames were written", health["shm_seq"])
	}
	stop()
}

// writeFrames commits H.264-flagged frames (a keyframe every tenth) into a
// new ring at path every 20 ms until the returned stop is called.
func writeFrames(t *testing.T, path string) (stop func()) {
	t.Helper()
	w := shmringtest.NewWriter(t, path, shmring.DefaultSize)
	return w.Start(t, shmringtest.Cadence{Period: 20 * time.Millisecond, GOP: 10, Size: 1000})
}

// TestCaddyfileExampleNATS: commands sent as 0x04 on /stream/ws reach NATS
// unchanged, telemetry published on NATS reaches the browser as 0x02, a
// malformed action is refused, and /nats/ws relays without video.
func TestCaddyfileExampleNATS(t *testing.T) {
	e := startExample(t)
	writeFrames(t, e.ring)
	nc := testenv.ConnectNATS(t, e.nats)
	sub, err := nc.SubscribeSync("command.genesis.>")
	if err != nil {
		t.Fatal(err)
	}
	// Joining clients ask for an IDR (command.genesis.force_idr): not ours.
	next := func(timeout time.Duration) (*nats.Msg, error) {
		for {
			m, err := sub.NextMsg(timeout)
			if err != nil || m.Subject != "command.genesis.force_idr" {
				return m, err
			}
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	for _, path := range []string{"/stream/ws", "/nats/ws"} {
		url := "ws" + strings.TrimPrefix(e.edge, "http") + path
		conn, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", url, err)
		}
		cmd := []byte(`{"action":"pause","cmd_seq":7,"ttl_ms":500,"data":{"from":"` + path + `"}}`)
		// The relay subscribes as the client attaches; send until a command
		// arrives, then check it.
		var msg *nats.Msg
		for i := 0; i < 50 && msg == nil; i++ {
			if err := conn.WriteMessage(websocket.BinaryMessage, append([]byte{0x04}, cmd...)); err != nil {
				t.Fatal(err)
			}
			msg, _ = next(200 * time.Millisecond)
		}
		if msg == nil || msg.Subject != "command.genesis.pause" || !bytes.Equal(msg.Data, cmd) {
			t.Fatalf("%s: command on NATS = %v, want %s on command.genesis.pause", path, msg, cmd)
		}
		for { // drain repeats
			if _, err := next(300 * time.Millisecond); err != nil {
				break
			}
		}

		// A malformed action is answered to this client alone on
		// telemetry.command.ack, and never published.
		if err := conn.WriteMessage(websocket.BinaryMessage, append([]byte{0x04}, `{"action":"pause.>","cmd_seq":8}`...)); err != nil {
			t.Fatal(err)
		}
		stats := []byte(`{"frame_id":1,"encode_ms":2.5,"codec":"h264","frame_bytes":1000}`)
		gotAck, gotStats := false, false
		_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		for !gotAck || !gotStats {
			if err := nc.Publish("telemetry.frame.stats", stats); err != nil {
				t.Fatal(err)
			}
			_, m, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("%s: ack %v, stats %v: %v", path, gotAck, gotStats, err)
			}
			if len(m) < 3 || m[0] != 0x02 {
				continue
			}
			n := int(m[1]) | int(m[2])<<8
			if len(m) < 3+n {
				t.Fatalf("%s: short 0x02 message", path)
			}
			subject, payload := string(m[3:3+n]), m[3+n:]
			switch subject {
			case "telemetry.command.ack":
				if bytes.Contains(payload, []byte(`"rejected"`)) && bytes.Contains(payload, []byte(`"cmd_seq":8`)) {
					gotAck = true
				}
			case "telemetry.frame.stats":
				gotStats = gotStats || bytes.Equal(payload, stats)
			}
		}
		if m, err := next(300 * time.Millisecond); err == nil {
			t.Errorf("%s: a malformed action reached NATS: %s %s", path, m.Subject, m.Data)
		}
		conn.Close()
	}
}

// TestCaddyfileExampleSafetyGate is the old transport-server's smoke test on
// Caddyfile.example: video stops, no browser attached, and the gate publishes
// HOLD and a zero set_cmd_vel. The smoke test wants HOLD within 2 s; this
// test checks the wiring of the file, with slack for a loaded machine (the
// gate's own timing is tested in internal/gate and tests/nats).
func TestCaddyfileExampleSafetyGate(t *testing.T) {
	e := startExample(t)
	stop := writeFrames(t, e.ring)
	nc := testenv.ConnectNATS(t, e.nats)
	gate, err := nc.SubscribeSync("telemetry.safety.video_gate")
	if err != nil {
		t.Fatal(err)
	}
	zero, err := nc.SubscribeSync("command.genesis.set_cmd_vel")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Video flowing: the gate is armed (only an armed gate publishes on its
	// own when the video stops).
	testwait.For(t, "the video to arm the gate", func() bool {
		m, err := testenv.Metrics(e.admin)
		return err == nil && m[`caddy_sdr_gate_armed{stream="default"}`] == "1"
	})
	stop()
	stopped := time.Now()
	// How soon HOLD follows is the gate's timer, judged on a fake clock in
	// internal/gate; here it must come, and not before the hold threshold.
	for {
		m, err := gate.NextMsg(testwait.Timeout(testwait.Default))
		if err != nil {
			t.Fatalf("no HOLD on telemetry.safety.video_gate within %v of video stopping: %v", testwait.Timeout(testwait.Default), err)
		}
		if bytes.Contains(m.Data, []byte(`"HOLD"`)) {
			d := time.Since(stopped)
			t.Logf("HOLD %v after the last frame", d)
			if d < 900*time.Millisecond {
				t.Errorf("HOLD %v after video stopped, before the 1 s threshold", d)
			}
			break
		}
	}
	m, err := zero.NextMsg(testwait.Timeout(10 * time.Second))
	if err != nil || !bytes.Contains(m.Data, []byte(`"_safety":"hold"`)) {
		t.Errorf("zero set_cmd_vel with _safety hold: %v %v", m, err)
	}
}
