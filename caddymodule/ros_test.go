package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

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
	const motion = `caddy_sdr_ros_denials_total{kind="motion"}` // process-wide
	motionBefore := metricValue(t, motion)

	conn := dialROS(t, "ws://localhost:9080/ros/", nil)
	_ = conn.SetReadDeadline(testwait.Deadline(10 * time.Second))
	if err := conn.WriteJSON(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { n, _ := up.Subscribers("/odom"); return n == 1 })
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

	if n := metricValue(t, motion) - motionBefore; n != 1 {
		t.Errorf("motion denials rose by %v, want 1", n)
	}
	body := adminMetrics(t)
	for _, want := range []string{
		"caddy_sdr_ros_clients 1",
		"caddy_sdr_ros_upstream_subscriptions 1",
		`caddy_sdr_ros_denials_total{kind="motion"}`,
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
	conn := dialROS(t, "ws://localhost:9080/ros/", nil)
	if err := conn.WriteJSON(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { n, _ := up.Subscribers("/odom"); return n == 1 })

	// another route changes; sdr_ros does not: same mux, same client
	tester.InitServer(config("respond /other 204", "/a"), "caddyfile")
	if _, err := up.Publish("/odom", map[string]any{"seq": 1}); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(testwait.Deadline(10 * time.Second))
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
	testwait.ForWithin(t, 10*time.Second, "the upstream's subscriptions", cond)
}

// dialROS dials the sdr_ros endpoint at url once it is let in: it answers
// 502 until its upstream connection is up, which is what this waits for.
// The connection is closed when t ends.
func dialROS(t *testing.T, url string, hdr http.Header) *websocket.Conn {
	t.Helper()
	var conn *websocket.Conn
	testwait.For(t, "sdr_ros to let clients in (its upstream connected)", func() bool {
		c, resp, err := websocket.DefaultDialer.Dial(url, hdr)
		if err == nil {
			conn = c
			return true
		}
		if resp == nil || resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("dialing %s: %v (%v), want 101 or, until the upstream is connected, 502", url, err, resp)
		}
		return false
	})
	t.Cleanup(func() { conn.Close() })
	return conn
}

// rosRead reads JSON messages from c until one satisfies want.
func rosRead(t *testing.T, c *websocket.Conn, what string, want func(map[string]any) bool) map[string]any {
	t.Helper()
	_ = c.SetReadDeadline(testwait.Deadline(10 * time.Second))
	for {
		var m map[string]any
		if err := c.ReadJSON(&m); err != nil {
			t.Fatalf("reading %s: %v", what, err)
		}
		if want(m) {
			return m
		}
	}
}

// With no allowlists sdr_ros lets every op through, as SDR_OS's raw
// reverse proxy to rosbridge did: the topics the SDR_OS client publishes
// (/controller/button_states, /controller/joystick_state) reach the
// upstream, services are called; /cmd_vel still needs the gate. Every
// origin may connect and subscribe, and SDR_ALLOWED_ORIGINS (origins)
// decides who may publish and call. The upstream is rostest, a
// protocol-faithful stand-in for rosbridge_server.
func TestROSDefaultsAllowAllAndOriginsJudgePublishes(t *testing.T) {
	up := startROSBridge(t)
	localhostTester(t, fmt.Sprintf(`
	http://localhost:9080 {
		handle /ros/* {
			sdr_ros %s {
				reconnect 20ms 200ms
			}
		}
		handle /listed/* {
			sdr_ros %s {
				origins https://app.example.com
				reconnect 20ms 200ms
			}
		}
	}`, up.URL(), up.URL()))

	const denied = `caddy_sdr_ros_denials_total{kind="origin"}` // process-wide
	deniedBefore := metricValue(t, denied)
	own := dialROS(t, "ws://localhost:9080/ros/", http.Header{"Origin": {"http://localhost:9080"}})
	for i, topic := range []string{"/controller/button_states", "/controller/joystick_state"} {
		if err := own.WriteJSON(map[string]any{"op": "advertise", "id": "a" + topic, "topic": topic, "type": "std_msgs/String"}); err != nil {
			t.Fatal(err)
		}
		if err := own.WriteJSON(map[string]any{"op": "publish", "id": "p" + topic, "topic": topic, "msg": map[string]any{"data": fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
		if err := up.WaitFor(testwait.Timeout(10*time.Second), func(ops []rostest.Op) bool { return rosCount(ops, "publish", topic) == 1 }); err != nil {
			t.Fatalf("publish on %s did not reach the upstream: %v", topic, err)
		}
	}
	if err := own.WriteJSON(map[string]any{"op": "call_service", "id": "c", "service": "/rosapi/topics"}); err != nil {
		t.Fatal(err)
	}
	if r := rosRead(t, own, "the service response", func(m map[string]any) bool { return m["op"] == "service_response" }); r["result"] != true {
		t.Fatalf("service call by default: %v", r)
	}

	evil := dialROS(t, "ws://localhost:9080/ros/", http.Header{"Origin": {"http://evil.example"}})
	if err := evil.WriteJSON(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { n, _ := up.Subscribers("/odom"); return n == 1 })
	if _, err := up.Publish("/odom", map[string]any{"seq": 1}); err != nil {
		t.Fatal(err)
	}
	rosRead(t, evil, "/odom on the untrusted connection", func(m map[string]any) bool { return m["op"] == "publish" && m["topic"] == "/odom" })
	if err := evil.WriteJSON(map[string]any{"op": "publish", "id": "p", "topic": "/controller/button_states", "msg": map[string]any{"data": "x"}}); err != nil {
		t.Fatal(err)
	}
	s := rosRead(t, evil, "the refusal", func(m map[string]any) bool { return m["op"] == "status" })
	if s["level"] != "error" || s["id"] != "p" || !strings.Contains(s["msg"].(string), "origin http://evil.example not allowed; add it to SDR_ALLOWED_ORIGINS") {
		t.Fatalf("status %v", s)
	}

	listed := dialROS(t, "ws://localhost:9080/listed/", http.Header{"Origin": {"https://app.example.com"}})
	if err := listed.WriteJSON(map[string]any{"op": "publish", "topic": "/controller/button_states", "msg": map[string]any{"data": "listed"}}); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitFor(testwait.Timeout(10*time.Second), func(ops []rostest.Op) bool { return rosCount(ops, "publish", "/controller/button_states") == 2 }); err != nil {
		t.Fatalf("publish of a listed origin did not reach the upstream: %v", err)
	}
	if n := metricValue(t, denied) - deniedBefore; n != 1 {
		t.Errorf("caddy_sdr_ros_denials_total{kind=\"origin\"} rose by %v, want 1", n)
	}
}

func rosCount(ops []rostest.Op, op, topic string) int {
	n := 0
	for _, o := range ops {
		if o.Op == op && o.Topic == topic {
			n++
		}
	}
	return n
}

// sdr_ros answers 502 while rosbridge_server is unreachable, as the raw
// proxy it replaces did, so that the SDR_OS app shows ROS disconnected;
// once rosbridge_server (here rostest, its protocol-faithful stand-in)
// runs, clients are let in.
func TestROSBadGatewayWithoutUpstream(t *testing.T) {
	up := startROSBridge(t)
	up.Close() // not started yet
	localhostTester(t, fmt.Sprintf(`
	http://localhost:9080 {
		handle /ros/* {
			sdr_ros %s {
				reconnect 20ms 100ms
			}
		}
	}`, up.URL()))
	_, resp, err := websocket.DefaultDialer.Dial("ws://localhost:9080/ros/", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("upgrade without rosbridge: %v (%v), want 502", err, resp)
	}
	if err := up.Listen(); err != nil {
		t.Fatal(err)
	}
	conn := dialROS(t, "ws://localhost:9080/ros/", nil)
	if err := conn.WriteJSON(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { n, _ := up.Subscribers("/odom"); return n == 1 })
	if body := adminMetrics(t); !strings.Contains(body, "caddy_sdr_ros_upstream_refused_total") {
		t.Errorf("metrics lack caddy_sdr_ros_upstream_refused_total")
	}
}
