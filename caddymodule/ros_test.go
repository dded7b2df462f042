package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/gorilla/websocket"
)

func TestROSCaddyfile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, err string
		check         func(*ROS) bool
	}{
		{name: "bare", in: `sdr_ros`, check: func(r *ROS) bool { return r.Upstream == "" }},
		{name: "upstream arg", in: `sdr_ros ws://ros:9090`, check: func(r *ROS) bool { return r.Upstream == "ws://ros:9090" }},
		{name: "lists", in: "sdr_ros {\n subscribe /a /b*\n services /rosapi/*\n}", check: func(r *ROS) bool {
			return len(r.SubscribeTopics) == 2 && r.Services[0] == "/rosapi/*"
		}},
		{name: "rate off", in: "sdr_ros {\n rate_limit off\n}", check: func(r *ROS) bool { return r.RateLimit == -1 }},
		{name: "size", in: "sdr_ros {\n max_message_size 64KiB\n}", check: func(r *ROS) bool { return r.MaxMessageSize == 65536 }},
		{name: "two args", in: `sdr_ros ws://a ws://b`, err: `at most one argument`},
		{name: "upstream twice", in: "sdr_ros ws://a {\n upstream ws://b\n}", err: `upstream given twice`},
		{name: "unknown", in: "sdr_ros {\n topics /a\n}", err: `unknown subdirective "topics"`},
		{name: "duplicate", in: "sdr_ros {\n services /a\n services /b\n}", err: `duplicate subdirective "services"`},
		{name: "empty list", in: "sdr_ros {\n publish\n}", err: `publish needs at least one argument`},
		{name: "bad glob", in: "sdr_ros {\n publish cmd_vel\n}", err: `ROS names start with '/'`},
		{name: "bad timeout", in: "sdr_ros {\n service_timeout soon\n}", err: `service_timeout "soon"`},
		{name: "bad queue", in: "sdr_ros {\n client_queue 0\n}", err: `want a positive integer`},
		{name: "bad size", in: "sdr_ros {\n max_message_size big\n}", err: `want a size`},
		{name: "flag with arg", in: "sdr_ros {\n allow_motion_without_gate yes\n}", err: `takes no arguments`},
		{name: "bad reconnect", in: "sdr_ros {\n reconnect 5s 1s\n}", err: `min <= max`},
		{name: "http upstream", in: `sdr_ros http://ros:9090`, err: `want a ws:// or wss:// URL`},
		{name: "stop message", in: "sdr_ros {\n stop_message `{\"linear\":{\"x\":0}}`\n}", check: func(r *ROS) bool { return string(r.StopMessage) == `{"linear":{"x":0}}` }},
		{name: "bad stop message", in: "sdr_ros {\n stop_message `[0]`\n}", err: `want a JSON object`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var r ROS
			err := r.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
			if checkParseError(t, err, tc.err) {
				return
			}
			if !tc.check(&r) {
				t.Fatalf("parsed %+v", r)
			}
		})
	}
}

// TestROSServe runs sdr_ros inside Caddy against rostest, the
// protocol-faithful rosbridge v2 test server (ROS 2 and rosbridge_server
// cannot be installed here).
func TestROSServe(t *testing.T) {
	up := startROSBridge(t)
	tester := localhostTester(t, fmt.Sprintf(`
	http://localhost:9080 {
		handle /ros/* {
			sdr_ros %s {
				publish /chatter /cmd_vel
				reconnect 20ms 200ms
			}
		}
	}`, up.URL()))

	req, _ := http.NewRequest(http.MethodGet, "http://localhost:9080/ros/", nil)
	tester.AssertResponseCode(req, http.StatusBadRequest)

	conn, _, err := websocket.DefaultDialer.Dial("ws://localhost:9080/ros/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := conn.WriteJSON(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, _ := up.Subscribers("/odom"); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no upstream subscription to /odom")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := up.Publish("/odom", map[string]any{"seq": 1}); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := conn.ReadJSON(&got); err != nil || got["op"] != "publish" || got["topic"] != "/odom" {
		t.Fatalf("read %v, %v", got, err)
	}
	// no sdr_nats app: no gate, and motion publishes are refused by default
	if err := conn.WriteJSON(map[string]any{"op": "publish", "id": "p", "topic": "/cmd_vel", "msg": map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	if err := conn.ReadJSON(&got); err != nil || got["op"] != "status" || got["level"] != "error" || got["id"] != "p" {
		t.Fatalf("read %v, %v", got, err)
	}

	body := adminMetrics(t)
	for _, want := range []string{
		"caddy_sdr_ros_clients 1",
		"caddy_sdr_ros_upstream_subscriptions 1",
		`caddy_sdr_ros_denials_total{kind="motion"} 1`,
		`caddy_sdr_ros_messages_total{direction="upstream_in"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestROSReload checks that a config reload that leaves sdr_ros's settings
// alone keeps its clients connected and its upstream subscriptions, and one
// that changes them closes the old mux.
func TestROSReload(t *testing.T) {
	up := startROSBridge(t)
	config := func(extra, services string) string {
		return localhostOptions + fmt.Sprintf(`
	http://localhost:9080 {
		%s
		handle /ros/* {
			sdr_ros %s {
				services %s
				reconnect 20ms 200ms
			}
		}
	}`, extra, up.URL(), services)
	}
	tester := caddytest.NewTester(t)
	tester.InitServer(config("", "/a"), "caddyfile")
	conn, _, err := websocket.DefaultDialer.Dial("ws://localhost:9080/ros/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.WriteJSON(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { n, _ := up.Subscribers("/odom"); return n == 1 })

	// another route changes; sdr_ros does not: same mux, same client
	tester.InitServer(config("respond /other 204", "/a"), "caddyfile")
	if _, err := up.Publish("/odom", map[string]any{"seq": 1}); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got map[string]any
	if err := conn.ReadJSON(&got); err != nil || got["op"] != "publish" {
		t.Fatalf("after a reload that kept sdr_ros: %v, %v", got, err)
	}
	if n := up.Count("subscribe", "/odom"); n != 1 {
		t.Fatalf("%d upstream subscribes after the reload, want 1", n)
	}

	// sdr_ros's settings change: the old mux closes its clients
	tester.InitServer(config("respond /other 204", "/b"), "caddyfile")
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			break // closed, as it must be
		}
	}
	waitFor(t, func() bool { n, _ := up.Subscribers("/odom"); return n == 0 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
