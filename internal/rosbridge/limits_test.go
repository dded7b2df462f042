package rosbridge

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// The upstream is rostest, a protocol-faithful stand-in for
// rosbridge_server (see mux_test.go).

// rawDial dials the mux with gorilla/websocket for the handshake; the test
// then writes raw frames on the underlying connection.
func (f *fixture) rawDial() *websocket.Conn {
	f.t.Helper()
	url := "ws" + strings.TrimPrefix(f.http.URL, "http")
	conn, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		f.t.Fatalf("dialing %s: %v (%v)", url, err, resp)
	}
	f.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// closedWith reads conn until it ends and returns the close code the
// server sent; the read deadline detects a hang.
func closedWith(t *testing.T, conn *websocket.Conn) int {
	t.Helper()
	_ = conn.SetReadDeadline(testwait.Deadline(wait))
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("connection ended without a close frame: %v", err)
		}
		return ce.Code
	}
}

func closes(t *testing.T, f *fixture, reason string) float64 {
	t.Helper()
	var m dto.Metric
	if err := f.mux.cnt.m.Closes.WithLabelValues(reason).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// flood writes first, then next over and over on conn's socket until a
// write fails.
func flood(conn *websocket.Conn, first, next []byte) {
	raw := conn.UnderlyingConn()
	if _, err := raw.Write(first); err != nil {
		return
	}
	for {
		if _, err := raw.Write(next); err != nil {
			return
		}
	}
}

// An endless message of empty continuation frames (never FIN), which held
// a core, closes the client with 1009 at the fragment limit.
func TestEndlessContinuationClosed(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	c := f.rawDial()
	key := [4]byte{3, 1, 4, 1}
	go flood(c, wire.AppendClientFrame(nil, wire.OpText, false, key, []byte("{")),
		wire.AppendClientFrame(nil, wire.OpContinuation, false, key, nil))
	if code := closedWith(t, c); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	if n := closes(t, f, wire.ReasonFragments); n != 1 {
		t.Fatalf("fragments closes %v, want 1", n)
	}
}

// Frames faster than the frame limit close the client with 1008.
func TestFrameFloodClosed(t *testing.T) {
	t.Parallel()
	f := start(t, func(o *Options) { o.FrameLimits = wire.FrameLimits{Rate: 10, Burst: 50} })
	c := f.rawDial()
	pong := wire.AppendClientFrame(nil, wire.OpPong, true, [4]byte{2, 7, 1, 8}, nil)
	go flood(c, pong, pong)
	if code := closedWith(t, c); code != websocket.ClosePolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
	if n := closes(t, f, wire.ReasonFrameRate); n != 1 {
		t.Fatalf("frame_rate closes %v, want 1", n)
	}
}

// A client that stops answering pings is closed (1001) while one that
// answers stays and keeps getting its topic.
func TestPingTimeout(t *testing.T) {
	t.Parallel()
	// The interval leaves an answering client ample time for its pong.
	f := start(t, func(o *Options) { o.PingInterval = 300 * time.Millisecond })
	live := f.dial()
	live.send(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"})
	f.subscribed("/odom", 1)
	dead := f.rawDial()
	dead.SetPingHandler(func(string) error { return nil }) // reads, never answers
	if code := closedWith(t, dead); code != websocket.CloseGoingAway {
		t.Fatalf("silent client closed with %d, want 1001", code)
	}
	if n := closes(t, f, reasonPingTimeout); n != 1 {
		t.Fatalf("ping_timeout closes %v, want 1", n)
	}
	if _, err := f.up.Publish("/odom", map[string]any{"seq": 5}); err != nil {
		t.Fatal(err)
	}
	if got := seqOf(live.next("publish")); got != 5 {
		t.Fatalf("answering client got seq %d, want 5", got)
	}
}

// The DNS rebinding guard: a page that rebound its own name to the robot
// sends Host and Origin both evil.example; it may subscribe, its publishes
// and service calls are refused naming the host and SDR_ALLOWED_HOSTS.
// The names a LAN, mDNS, Tailscale, an IP or SDR_OS's development proxy
// give are trusted, and a listed host is.
func TestRebindingHostMaySubscribeNotCommand(t *testing.T) {
	t.Parallel()
	f := start(t, func(o *Options) { o.Hosts = []string{"robot.example.com"} })
	evil := f.dialWith(http.Header{"Origin": {"http://evil.example"}, "Host": {"evil.example"}})
	evil.send(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"})
	f.subscribed("/odom", 1)
	if _, err := f.up.Publish("/odom", map[string]any{"seq": 1}); err != nil {
		t.Fatal(err)
	}
	if got := seqOf(evil.next("publish")); got != 1 {
		t.Fatalf("rebound page's subscriber got seq %d, want 1", got)
	}
	refusal := "host evil.example not allowed; add it to SDR_ALLOWED_HOSTS"
	for _, op := range []map[string]any{
		{"op": "advertise", "id": "a", "topic": "/chatter", "type": "std_msgs/String"},
		{"op": "publish", "id": "p", "topic": "/chatter", "msg": map[string]any{"data": "x"}},
		{"op": "call_service", "id": "c", "service": "/rosapi/topics"},
	} {
		evil.send(op)
		s := evil.next("status")
		if s["level"] != "error" || s["id"] != op["id"] || !strings.HasSuffix(s["msg"].(string), "refused: "+refusal) {
			t.Fatalf("%s from a rebound page: status %v", op["op"], s)
		}
	}
	if r := evil.next("service_response"); r["id"] != "c" || r["result"] != false || !strings.Contains(fmt.Sprint(r["values"]), refusal) {
		t.Fatalf("service_response %v, want a failure naming the refusal", r)
	}

	for i, host := range []string{"robot.local", "robot.tail1.ts.net", "192.168.1.5:8080", "transport-server:8080", "robot.example.com"} {
		c := f.dialWith(http.Header{"Origin": {"http://" + host}, "Host": {host}})
		c.send(map[string]any{"op": "publish", "topic": "/chatter", "msg": map[string]any{"seq": i}})
		if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/chatter") == i+1 }); err != nil {
			t.Fatalf("publish with Host %s did not reach the upstream: %v", host, err)
		}
	}
	for _, o := range f.up.Ops() {
		if o.Op == "advertise" || o.Op == "call_service" {
			t.Fatalf("a refused op reached the upstream: %s", o.Raw)
		}
	}
}
