package rosbridge

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// The upstream in these tests is rostest, a protocol-faithful rosbridge v2
// test server standing in for rosbridge_server.

func denials(f *fixture, kind string) float64 {
	var m dto.Metric
	_ = f.mux.cnt.m.Denials.WithLabelValues(kind).Write(&m)
	return m.GetCounter().GetValue()
}

// An op that sdr_ros (Go) and rosbridge_server (Python's json) could read
// differently is refused with an error status before it is judged: keys
// equal but for case ("op"/"OP", "topic"/"Topic"), duplicate keys, a msg
// with colliding keys on a motion topic, a lone surrogate escape, nesting
// deeper than 32. Members are matched by their exact names, as
// rosbridge_server matches them. Nothing refused reaches the upstream.
func TestAmbiguousOpsRefused(t *testing.T) {
	t.Parallel()
	gate := &testGate{}
	f := start(t, func(o *Options) { o.Gate = gate; o.Subscribe = Allowlist{"/odom"} })
	c := f.dial()
	for _, tc := range []struct {
		name, op, want, kind string
	}{
		{"op and OP", `{"op":"subscribe","OP":"publish","topic":"/odom"}`,
			`invalid rosbridge message: duplicate key "OP" (same as "op" but for case) at byte 18`, "duplicate_key"},
		{"topic and Topic", `{"op":"subscribe","topic":"/secret","Topic":"/odom"}`,
			`duplicate key "Topic" (same as "topic" but for case)`, "duplicate_key"},
		{"duplicate topic", `{"op":"publish","topic":"/chatter","topic":"/cmd_vel","msg":{}}`,
			`duplicate key "topic" at byte 35`, "duplicate_key"},
		{"escaped OP", `{"op":"subscribe","\u004fP":"publish","topic":"/odom"}`, `duplicate key "OP"`, "duplicate_key"},
		{"colliding msg keys on /cmd_vel", `{"op":"publish","topic":"/cmd_vel","msg":{"linear":{"x":0.0,"X":5.0}}}`,
			`duplicate key "X" (same as "x" but for case)`, "duplicate_key"},
		{"duplicate msg keys on /cmd_vel", `{"op":"publish","topic":"/cmd_vel","msg":{"linear":{"x":0.0},"linear":{"x":5.0}}}`,
			`duplicate key "linear"`, "duplicate_key"},
		{"lone surrogate", `{"op":"publish","topic":"/chatter","msg":{"data":"\udc00"}}`, `lone surrogate \udc00`, "invalid_utf8"},
		{"33 deep", `{"op":"publish","topic":"/chatter","msg":{"data":` + strings.Repeat("[", 31) + strings.Repeat("]", 31) + `}}`,
			"nesting deeper than 32", "too_deep"},
		// read by exact names: no "op" at all
		{"OP alone", `{"OP":"publish","topic":"/chatter","msg":{}}`, "invalid rosbridge message: missing op", "invalid"},
	} {
		before := denials(f, tc.kind)
		if err := c.conn.WriteMessage(websocket.TextMessage, []byte(tc.op)); err != nil {
			t.Fatal(err)
		}
		s := c.next("status")
		if s["level"] != "error" || s["msg"] != nil && !strings.Contains(s["msg"].(string), tc.want) {
			t.Errorf("%s: status %v, want an error saying %q", tc.name, s, tc.want)
		}
		if d := denials(f, tc.kind) - before; d != 1 {
			t.Errorf("%s: %v denials of kind %s, want 1", tc.name, d, tc.kind)
		}
	}
	// a Topic alone is not the topic either
	c.send(map[string]any{"op": "subscribe", "id": "s", "Topic": "/odom"})
	if s := c.next("status"); !strings.Contains(s["msg"].(string), "missing topic") {
		t.Errorf("subscribe with Topic: %v, want missing topic", s)
	}
	// The connection still serves: a valid publish on /cmd_vel arrives
	// as sent.
	c.send(map[string]any{"op": "publish", "topic": "/cmd_vel", "msg": map[string]any{"linear": map[string]any{"x": 0.25}}})
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/cmd_vel") == 1 }); err != nil {
		t.Fatal(err)
	}
	for _, o := range f.up.Ops() {
		if o.Topic == "/secret" || o.Topic == "/chatter" || strings.Contains(string(o.Raw), "5.0") || o.Op == "subscribe" && o.Topic == "/odom" {
			t.Errorf("a refused op reached the upstream: %s", o.Raw)
		}
	}
}

// Topic and service names are checked by the ROS 2 naming rules before
// the allowlists: a name with "..", an empty segment or a trailing '/'
// (which `/rosapi/*` or `*` would match) is refused with an error status
// and never reaches the upstream. A relative name is judged, allowlists
// and motion topics alike, as the fully qualified name in the root
// namespace.
func TestNamesCheckedBeforeAllowlists(t *testing.T) {
	t.Parallel()
	gate := &testGate{}
	f := start(t, func(o *Options) { o.Gate = gate; o.Publish = Allowlist{"*"} })
	f.up.HandleService("/secret/shutdown", func(_ context.Context, _ json.RawMessage) (any, bool) { return "shut down", true })
	c := f.dial()
	for _, tc := range []struct {
		name string
		op   map[string]any
		want string
	}{
		{"dot-dot service", map[string]any{"op": "call_service", "id": "s1", "service": "/rosapi/../secret/shutdown"},
			`call_service: invalid ROS name "/rosapi/../secret/shutdown": character '.' not allowed`},
		{"service ending in /", map[string]any{"op": "call_service", "id": "s2", "service": "/rosapi/"},
			`invalid ROS name "/rosapi/": ends with '/'`},
		{"empty segment", map[string]any{"op": "subscribe", "id": "t1", "topic": "//x"},
			`subscribe: invalid ROS name "//x": empty segment ('//')`},
		{"topic ending in /", map[string]any{"op": "subscribe", "id": "t2", "topic": "/odom/"}, "ends with '/'"},
		{"root", map[string]any{"op": "subscribe", "id": "t3", "topic": "/"}, "root namespace"},
		{"dot-dot topic", map[string]any{"op": "publish", "id": "t4", "topic": "/x/../cmd_vel", "msg": map[string]any{}}, "'.' not allowed"},
		{"private", map[string]any{"op": "advertise", "id": "t5", "topic": "~/cmd_vel", "type": "geometry_msgs/Twist"}, "private names"},
		{"substitution", map[string]any{"op": "publish", "id": "t6", "topic": "/{node}/cmd_vel", "msg": map[string]any{}}, "substitutions"},
		{"digit", map[string]any{"op": "subscribe", "id": "t7", "topic": "/robot/1imu"}, `segment "1imu" starts with a digit`},
		{"space", map[string]any{"op": "subscribe", "id": "t8", "topic": "/odom "}, "' ' not allowed"},
	} {
		before := denials(f, "name")
		c.send(tc.op)
		s := c.next("status")
		if s["level"] != "error" || s["id"] != tc.op["id"] || !strings.Contains(s["msg"].(string), tc.want) {
			t.Errorf("%s: status %v, want an error saying %q", tc.name, s, tc.want)
		}
		if tc.op["op"] == "call_service" {
			if r := c.next("service_response"); r["result"] != false || r["id"] != tc.op["id"] {
				t.Errorf("%s: answered %v, want a failed service_response", tc.name, r)
			}
		}
		if d := denials(f, "name") - before; d != 1 {
			t.Errorf("%s: %v denials of kind name, want 1", tc.name, d)
		}
	}
	// A relative motion topic is /cmd_vel: gated like it, and what goes
	// upstream is the name judged.
	gate.stale.Store(true)
	c.send(map[string]any{"op": "publish", "id": "rel", "topic": "cmd_vel", "msg": map[string]any{"linear": map[string]any{"x": 9.5}}})
	if s := c.next("status"); s["level"] != "warning" || s["id"] != "rel" || !strings.Contains(s["msg"].(string), "publish on /cmd_vel dropped") {
		t.Errorf("relative motion publish with stale video: %v, want dropped by the gate", s)
	}
	gate.stale.Store(false)
	c.send(map[string]any{"op": "publish", "topic": "chatter", "msg": map[string]any{"data": "hi"}})
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/chatter") == 1 }); err != nil {
		t.Fatal(err)
	}
	for _, o := range f.up.Ops() {
		if strings.Contains(string(o.Raw), "9.5") || o.Service != "" || o.Topic != "/chatter" && o.Topic != "/cmd_vel" {
			t.Errorf("a refused op reached the upstream: %s", o.Raw)
		}
	}
}

// /ros/ fails a connection that sends text that is not UTF-8 with close
// code 1007 (RFC 6455 8.1), and answers a close frame with a code no
// endpoint may send (999, 1005) or a reason that is not UTF-8 with 1002
// (RFC 6455 7.4).
func TestCloseCodesOnRos(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	url := "ws" + strings.TrimPrefix(f.http.URL, "http")
	closeCode := func(t *testing.T, send func(*websocket.Conn) error) int {
		t.Helper()
		conn, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := send(conn); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(testwait.Deadline(wait))
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				if !errors.As(err, &ce) {
					t.Fatalf("connection ended without a close frame: %v", err)
				}
				return ce.Code
			}
		}
	}
	before := denials(f, "invalid_utf8")
	if code := closeCode(t, func(c *websocket.Conn) error {
		return c.WriteMessage(websocket.TextMessage, []byte("{\"op\":\"subscribe\",\"topic\":\"/a\xff\"}"))
	}); code != websocket.CloseInvalidFramePayloadData {
		t.Errorf("text not UTF-8: closed with %d, want 1007", code)
	}
	if d := denials(f, "invalid_utf8") - before; d != 1 {
		t.Errorf("%v denials of kind invalid_utf8, want 1", d)
	}
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"code 999", websocket.FormatCloseMessage(999, "")},
		{"code 1005", []byte{0x03, 0xed}}, // FormatCloseMessage(1005) is an empty body
		{"code 2999", websocket.FormatCloseMessage(2999, "")},
		{"reason not UTF-8", append(websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), 0xff, 0xfe)},
	} {
		if code := closeCode(t, func(c *websocket.Conn) error {
			return c.WriteControl(websocket.CloseMessage, tc.payload, testwait.Deadline(wait))
		}); code != websocket.CloseProtocolError {
			t.Errorf("%s: answered %d, want 1002", tc.name, code)
		}
	}
	if code := closeCode(t, func(c *websocket.Conn) error {
		return c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"), testwait.Deadline(wait))
	}); code == websocket.CloseProtocolError {
		t.Errorf("a valid close code 4000 was answered 1002")
	}
}
