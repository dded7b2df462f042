package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// wsURL is the WebSocket URL of path on base (http://host:port).
func wsURL(base, path string) string { return "ws" + strings.TrimPrefix(base, "http") + path }

// commandAck sends a 0x04 command on c and returns the next
// telemetry.command.ack for it, passing over video and telemetry.
func commandAck(t *testing.T, c *websocket.Conn, body string) map[string]any {
	t.Helper()
	if err := c.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, body...)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(testwait.Deadline(20 * time.Second))
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("reading the ack of %s: %v", body, err)
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

// TestCaddyfileExampleRebinding is the DNS rebinding break-in on
// Caddyfile.example: a page on evil.example that rebound its name to the
// robot's address sends Host and Origin both evil.example, so that the
// Origin rule alone trusts it. It may watch video, telemetry and ROS
// topics; its commands (on /stream/ws and /nats/ws) are acked "host
// evil.example not allowed", its ROS publish refused, and nothing reaches
// NATS or rosbridge. The names a browser uses on a LAN, over mDNS, over
// Tailscale, by IP, through SDR_OS's development proxy, or listed in
// SDR_ALLOWED_HOSTS, command. The rosbridge upstream is rostest, a
// protocol-faithful stand-in for rosbridge_server.
func TestCaddyfileExampleRebinding(t *testing.T) {
	up, err := rostest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	e := startExample(t, "SDR_ROS_UPSTREAM="+up.URL(), "SDR_ALLOWED_HOSTS=robot.example.com")
	writeFrames(t, e.ring)
	nc := testenv.ConnectNATS(t, e.nats)
	cmds := make(chan *nats.Msg, 256)
	if _, err := nc.ChanSubscribe("command.genesis.pause", cmds); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	evil := http.Header{"Host": {"evil.example"}, "Origin": {"http://evil.example"}}
	const refusal = "host evil.example not allowed; add it to SDR_ALLOWED_HOSTS"

	// Video flows to the rebound page; its command is refused.
	c := testenv.DialWS(t, wsURL(e.edge, "/stream/ws"), evil, 20*time.Second)
	if h, _ := shmringtest.ReadVideo(t, c); !h.Keyframe() {
		t.Fatalf("first frame %+v is not a keyframe", h)
	}
	if ack := commandAck(t, c, `{"action":"pause","cmd_seq":1}`); ack["status"] != "rejected" || ack["detail"] != refusal {
		t.Fatalf("/stream/ws ack %v, want rejected: %s", ack, refusal)
	}
	n := testenv.DialWS(t, wsURL(e.edge, "/nats/ws"), evil, 20*time.Second)
	if ack := commandAck(t, n, `{"action":"pause","cmd_seq":2}`); ack["status"] != "rejected" || ack["detail"] != refusal {
		t.Fatalf("/nats/ws ack %v, want rejected: %s", ack, refusal)
	}

	// ROS: it may subscribe; its publish is refused.
	var r *websocket.Conn
	testwait.For(t, "/ros/ to accept a client (rosbridge connected)", func() bool {
		r, _, err = websocket.DefaultDialer.Dial(wsURL(e.edge, "/ros/"), evil)
		return err == nil
	})
	t.Cleanup(func() { r.Close() })
	_ = r.SetReadDeadline(testwait.Deadline(20 * time.Second))
	if err := r.WriteJSON(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the /odom subscription upstream", func() bool { n, _ := up.Subscribers("/odom"); return n == 1 })
	if _, err := up.Publish("/odom", map[string]any{"seq": 1}); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteJSON(map[string]any{"op": "publish", "id": "p", "topic": "/cmd_vel", "msg": map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	gotTopic, gotRefusal := false, false
	for !gotTopic || !gotRefusal {
		var m map[string]any
		if err := r.ReadJSON(&m); err != nil {
			t.Fatalf("/ros/: topic %v, refusal %v: %v", gotTopic, gotRefusal, err)
		}
		switch m["op"] {
		case "publish":
			gotTopic = gotTopic || m["topic"] == "/odom"
		case "status":
			msg, _ := m["msg"].(string)
			if m["id"] == "p" && strings.HasSuffix(msg, "refused: "+refusal) {
				gotRefusal = true
			}
		}
	}

	// Trusted names command.
	for i, host := range []string{"robot.local", "robot.tail1.ts.net", "192.168.1.5:8080", "transport-server:8080", "robot.example.com"} {
		seq := 10 + i
		hdr := http.Header{"Host": {host}, "Origin": {"http://" + host}}
		ws := testenv.DialWS(t, wsURL(e.edge, "/stream/ws"), hdr, 20*time.Second)
		body := fmt.Sprintf(`{"action":"pause","cmd_seq":%d}`, seq)
		if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, body...)); err != nil {
			t.Fatal(err)
		}
		m := testwait.Recv(t, cmds, "the command of Host "+host)
		if !bytes.Equal(m.Data, []byte(body)) {
			t.Fatalf("Host %s: NATS got %s, want %s (a refused command got through before it?)", host, m.Data, body)
		}
		ws.Close()
	}
	// Nothing of the rebound page reached NATS (the commands above came
	// in order) or rosbridge.
	if err := nc.Publish("command.genesis.pause", []byte("marker")); err != nil {
		t.Fatal(err)
	}
	if m := testwait.Recv(t, cmds, "the marker"); string(m.Data) != "marker" {
		t.Fatalf("a refused command reached NATS: %s", m.Data)
	}
	if k := up.Count("publish", "/cmd_vel"); k != 0 {
		t.Fatalf("%d refused publishes reached rosbridge", k)
	}
}

// TestCaddyfileExampleSiteHostsTrusted: the configured site names (a domain
// SDR_HTTP_ADDR, SDR_TLS_SITE) are added to the trusted hosts of every
// module through SDR_SITE_HOSTS, after SDR_ALLOWED_HOSTS is empty.
func TestCaddyfileExampleSiteHostsTrusted(t *testing.T) {
	t.Parallel()
	out, logged, err := adaptFile(t, filepath.Join(testenv.Root(), "Caddyfile.example"),
		"SDR_HTTP_ADDR=robot.example.com", "SDR_TLS_SITE=amd-rtx.tail09c99.ts.net:8443")
	if err != nil {
		t.Fatalf("caddy adapt: %v\n%s", err, logged)
	}
	var lists [][]string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "allowed_hosts" || k == "hosts" {
					var l []string
					for _, h := range x.([]any) {
						l = append(l, h.(string))
					}
					lists = append(lists, l)
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var cfg any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	walk(cfg)
	// sdr_stream on the edge and the transport site, sdr_nats and sdr_ros
	// on the edge: the edge is served on two sites (HTTP and HTTPS).
	if len(lists) < 4 {
		t.Fatalf("%d host lists in the adapted config, want every sdr_stream, sdr_nats and sdr_ros: %v", len(lists), lists)
	}
	for _, l := range lists {
		if strings.Join(l, " ") != "robot.example.com amd-rtx.tail09c99.ts.net" {
			t.Errorf("host list %v, want the two site names", l)
		}
	}
}

// TestCaddyfileExampleHeaderTimeout: a connection that sends half a request
// header is closed after SDR_READ_HEADER_TIMEOUT (Caddy's default was a
// minute), on the edge and on the transport-compatible site. The deadline
// detects a hang; a minute is past it.
func TestCaddyfileExampleHeaderTimeout(t *testing.T) {
	e := startExample(t, "SDR_READ_HEADER_TIMEOUT=1s")
	for _, base := range []string{e.edge, e.transport} {
		c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET /health HTTP/1.1\r\nHost: robot\r\n")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(testwait.Deadline(20 * time.Second))
		buf := make([]byte, 512)
		for {
			_, err := c.Read(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%s: a half-sent header kept its connection open past %s", base, testwait.Timeout(20*time.Second))
			}
			if err != nil {
				break // closed by the server
			}
		}
	}
}

// TestCaddyfileExampleDescriptorExhaustion: many more idle connections
// than the process has file descriptors (the break-in held 20,000; here the
// limit is lowered to 512 and 700 are opened) neither lock out health
// checks nor make the ring remap fail: a video client connected before the
// flood keeps its video when the writer replaces the ring file, and a new
// one joins.
func TestCaddyfileExampleDescriptorExhaustion(t *testing.T) {
	e := startExampleWith(t, testenv.StartOptions{NoFile: 512})
	stop := writeFrames(t, e.ring)
	viewer := testenv.DialWS(t, wsURL(e.transport, "/stream/ws"), nil, 30*time.Second)
	shmringtest.ReadVideo(t, viewer)

	// The flood: idle connections that never send a byte.
	var flood []net.Conn
	t.Cleanup(func() {
		for _, c := range flood {
			c.Close()
		}
	})
	for range 700 {
		for _, base := range []string{e.edge, e.transport} {
			c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
			if err != nil {
				t.Fatalf("the test's own dial: %v", err)
			}
			flood = append(flood, c)
		}
	}

	// Health checks get in, on both sites.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: testwait.Timeout(20 * time.Second)}
	for _, url := range []string{e.edge + "/health", e.transport + "/health"} {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("health check during the flood: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d during the flood", url, resp.StatusCode)
		}
	}

	// The writer restarts on a new ring file: the reader remaps it, which
	// needs a descriptor, and video resumes for the viewer.
	stop()
	if err := os.Remove(e.ring); err != nil {
		t.Fatal(err)
	}
	marker := bytes.Repeat([]byte{0xA5}, 777)
	shmringtest.NewWriter(t, e.ring, shmring.DefaultSize).Start(t, shmringtest.Cadence{
		Period: 20 * time.Millisecond, GOP: 1, Payload: func(int) []byte { return marker },
	})
	_ = viewer.SetReadDeadline(testwait.Deadline(30 * time.Second))
	for {
		_, msg, err := viewer.ReadMessage()
		if err != nil {
			t.Fatalf("the viewer lost its connection during the flood, or no video after the ring was replaced: %v\n%s", err, e.caddy.Output())
		}
		if len(msg) > 0 && msg[0] == wire.TypeVideo {
			if _, payload, err := wire.ParseVideo(msg); err == nil && bytes.Equal(payload, marker) {
				break
			}
		}
	}
	// A new viewer joins during the flood.
	late := testenv.DialWS(t, wsURL(e.edge, "/stream/ws"), nil, 30*time.Second)
	shmringtest.ReadVideo(t, late)
	// The flood reached the cap (512 less a reserve of 128): the oldest
	// idle connections made room.
	testwait.For(t, "idle connections evicted at the cap", func() bool {
		m, err := testenv.Metrics(e.admin)
		return err == nil && m["caddy_sdr_conns_max"] == "384" && m["caddy_sdr_conns_evicted_total"] != "0" && m["caddy_sdr_conns_evicted_total"] != ""
	})
	if strings.Contains(e.caddy.Output(), "too many open files") {
		t.Errorf("caddy ran out of descriptors:\n%s", e.caddy.Output())
	}
}

// rawUpgrade opens a WebSocket to path on addr by hand and returns the
// connection once the handshake is answered; the caller then reads and
// writes nothing: a peer that went away without closing.
func rawUpgrade(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	// Read the response a byte at a time, so that nothing after it is
	// taken from the socket.
	_ = c.SetReadDeadline(testwait.Deadline(20 * time.Second))
	var head []byte
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		b := make([]byte, 1)
		if _, err := c.Read(b); err != nil {
			t.Fatalf("%s: reading the handshake response: %v (%q)", path, err, head)
		}
		head = append(head, b[0])
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 101")) {
		t.Fatalf("%s: handshake answered %q", path, head)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c
}

// pingedClient is a WebSocket client that reads all the time and answers
// every ping, counting them.
type pingedClient struct {
	pings chan struct{}
	ended chan error
}

func newPingedClient(t *testing.T, url string) (*websocket.Conn, *pingedClient) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dialing %s: %v (%v)", url, err, resp)
	}
	t.Cleanup(func() { c.Close() })
	p := &pingedClient{pings: make(chan struct{}, 1000), ended: make(chan error, 1)}
	c.SetPingHandler(func(data string) error {
		p.pings <- struct{}{}
		return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
	})
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				p.ended <- err
				return
			}
		}
	}()
	return c, p
}

// TestWebSocketPingsDropDeadPeers runs the built binary with a ping
// interval of 1 s on /stream/ws (video flowing), /nats/ws and /ros/: a
// client that completed its handshake and then reads and answers nothing
// is closed within about two intervals on each, counted as ping_timeout;
// a client that answers stays through pings after that. The rosbridge
// upstream is rostest, a protocol-faithful stand-in for rosbridge_server.
func TestWebSocketPingsDropDeadPeers(t *testing.T) {
	up, err := rostest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	natsURL := testenv.StartNATS(t)
	ring := filepath.Join(t.TempDir(), "frames")
	writeFrames(t, ring)
	port := testenv.FreePort(t)
	caddy := testenv.StartCaddy(t, testenv.Caddyfile(port, testenv.NATSOptions(natsURL), fmt.Sprintf(`
	handle /stream/ws {
		sdr_stream {
			source shm %s
			ping_interval 1s
		}
	}
	handle /nats/ws {
		sdr_nats {
			ping_interval 1s
		}
	}
	handle /ros/* {
		sdr_ros %s {
			ping_interval 1s
		}
	}`, ring, up.URL())), nil, nil)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	base := "ws://" + addr

	var live []*pingedClient
	for _, path := range []string{"/stream/ws", "/nats/ws"} {
		_, p := newPingedClient(t, base+path)
		live = append(live, p)
	}
	testwait.For(t, "/ros/ to accept a client (rosbridge connected)", func() bool {
		c, _, err := websocket.DefaultDialer.Dial(base+"/ros/", nil)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	_, p := newPingedClient(t, base+"/ros/")
	live = append(live, p)

	var dead []net.Conn
	for _, path := range []string{"/stream/ws", "/nats/ws", "/ros/"} {
		dead = append(dead, rawUpgrade(t, addr, path))
	}
	closed := []string{
		`caddy_sdr_stream_closes_total{reason="ping_timeout",stream="default"}`,
		`caddy_sdr_nats_ws_closes_total{reason="ping_timeout"}`,
		`caddy_sdr_ros_closes_total{reason="ping_timeout"}`,
	}
	testwait.For(t, "the silent clients closed for their pings", func() bool {
		m, err := testenv.Metrics(caddy.AdminAddr)
		if err != nil {
			return false
		}
		for _, k := range closed {
			if m[k] != "1" {
				return false
			}
		}
		return true
	})
	// Their sockets are closed: what the server wrote ends.
	for i, c := range dead {
		_ = c.SetReadDeadline(testwait.Deadline(20 * time.Second))
		for {
			_, err := c.Read(make([]byte, 64<<10))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("silent client %d: its socket is still open", i)
			}
			if err != nil {
				break
			}
		}
	}
	// The answering clients stay through three more pings each.
	for i, p := range live {
		for range 3 {
			select {
			case <-p.pings:
			case err := <-p.ended:
				t.Fatalf("answering client %d ended: %v", i, err)
			case <-testwait.After(20 * time.Second):
				t.Fatalf("answering client %d: no ping", i)
			}
		}
	}
	m, err := testenv.Metrics(caddy.AdminAddr)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range closed {
		if m[k] != "1" {
			t.Errorf("%s = %s, want 1: an answering client was closed", k, m[k])
		}
	}
}

// floodClosed dials url, writes first and then next over and over on the
// raw socket, and returns the close code the server answers with; the read
// deadline detects a hang (a flood the server never ends).
func floodClosed(t *testing.T, url string, first, next []byte) int {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dialing %s: %v (%v)", url, err, resp)
	}
	defer c.Close()
	go func() {
		raw := c.UnderlyingConn()
		if _, err := raw.Write(first); err != nil {
			return
		}
		for {
			if _, err := raw.Write(next); err != nil {
				return
			}
		}
	}()
	_ = c.SetReadDeadline(testwait.Deadline(20 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("%s: the flood was not closed with a close frame: %v", url, err)
		}
		return ce.Code
	}
}

// TestCaddyfileExampleFrameFloods is the CPU break-in on Caddyfile.example:
// an endless message of empty continuation frames (never FIN), which held a
// core and was never closed, is closed with 1009 on /stream/ws, /nats/ws
// and /ros/; a flood of pongs with 1008. Meanwhile a viewer keeps its
// video. The rosbridge upstream is rostest, a protocol-faithful stand-in
// for rosbridge_server.
func TestCaddyfileExampleFrameFloods(t *testing.T) {
	up, err := rostest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	e := startExample(t, "SDR_ROS_UPSTREAM="+up.URL())
	writeFrames(t, e.ring)
	viewer := testenv.DialWS(t, wsURL(e.edge, "/stream/ws"), nil, 30*time.Second)
	shmringtest.ReadVideo(t, viewer)
	testwait.For(t, "/ros/ to accept a client (rosbridge connected)", func() bool {
		c, _, err := websocket.DefaultDialer.Dial(wsURL(e.edge, "/ros/"), nil)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	key := [4]byte{1, 9, 8, 4}
	start := wire.AppendClientFrame(nil, wire.OpBinary, false, key, nil)
	cont := wire.AppendClientFrame(nil, wire.OpContinuation, false, key, nil)
	pong := wire.AppendClientFrame(nil, wire.OpPong, true, key, nil)
	for _, path := range []string{"/stream/ws", "/nats/ws", "/ros/"} {
		if code := floodClosed(t, wsURL(e.edge, path), start, cont); code != websocket.CloseMessageTooBig {
			t.Errorf("%s: endless continuation closed with %d, want 1009", path, code)
		}
		if code := floodClosed(t, wsURL(e.edge, path), pong, pong); code != websocket.ClosePolicyViolation {
			t.Errorf("%s: pong flood closed with %d, want 1008", path, code)
		}
		shmringtest.ReadVideo(t, viewer)
	}
}
