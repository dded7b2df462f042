package rosbridge

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"

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
	f.viewsNotCommands(evil, "host evil.example not allowed; add it to SDR_ALLOWED_HOSTS", "a rebound page")

	var hdrs []http.Header
	for _, host := range []string{"robot.local", "robot.tail1.ts.net", "192.168.1.5:8080", "transport-server:8080", "robot.example.com"} {
		hdrs = append(hdrs, http.Header{"Origin": {"http://" + host}, "Host": {host}})
	}
	f.commandsReach(hdrs)
}
