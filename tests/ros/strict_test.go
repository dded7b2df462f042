package ros

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// rawClient is a plain rosbridge client of the binary's /ros/: its
// replies come on in; the close frame that ends it on closed.
type rawClient struct {
	conn   *websocket.Conn
	in     chan map[string]any
	closed chan int // the close code the server sent
}

func dialRaw(t *testing.T, url string) *rawClient {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{conn: conn, in: make(chan map[string]any, 100), closed: make(chan int, 1)}
	go func() {
		for {
			_, data, err := conn.ReadMessage()
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.closed <- ce.Code
			}
			if err != nil {
				close(c.closed)
				return
			}
			var m map[string]any
			if json.Unmarshal(data, &m) == nil {
				c.in <- m
			}
		}
	}()
	return c
}

func (c *rawClient) write(t *testing.T, text string) {
	t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
		t.Fatal(err)
	}
}

// next returns the next reply with this op.
func (c *rawClient) next(t *testing.T, op string) map[string]any {
	t.Helper()
	for {
		if m := testwait.RecvWithin(t, c.in, wait, "a "+op); m["op"] == op {
			return m
		}
	}
}

// TestROSStrictOpsAndNames runs the binary in front of rostest, a
// protocol-faithful stand-in for rosbridge_server, with the allowlists
// `/rosapi/*` and `*`: names outside the ROS naming rules that those
// patterns match (`/rosapi/../secret/shutdown`, `/rosapi/`, `//x`, a
// trailing '/') and ops with keys equal but for case are refused with an
// error status and never reach the upstream; text that is not UTF-8 closes
// the connection with 1007, a close frame with code 999 is answered 1002.
func TestROSStrictOpsAndNames(t *testing.T) {
	up, url := proxy(t, "subscribe *\n\t\t\tpublish /chatter\n\t\t\tservices /rosapi/*")
	c := dialRaw(t, url)
	for _, tc := range []struct {
		op, want string
		service  bool
	}{
		{`{"op":"call_service","id":"s1","service":"/rosapi/../secret/shutdown"}`,
			`call_service: invalid ROS name "/rosapi/../secret/shutdown": character '.' not allowed`, true},
		{`{"op":"call_service","id":"s2","service":"/rosapi/"}`, `invalid ROS name "/rosapi/": ends with '/'`, true},
		{`{"op":"subscribe","id":"t1","topic":"//x"}`, `subscribe: invalid ROS name "//x": empty segment ('//')`, false},
		{`{"op":"subscribe","id":"t2","topic":"/odom/"}`, `invalid ROS name "/odom/": ends with '/'`, false},
		{`{"op":"publish","OP":"subscribe","topic":"/chatter","msg":{"data":"x"}}`,
			`invalid rosbridge message: duplicate key "OP" (same as "op" but for case) at byte 16`, false},
		{`{"op":"publish","topic":"/chatter","Topic":"/arm","msg":{"data":"x"}}`, `duplicate key "Topic"`, false},
	} {
		c.write(t, tc.op)
		s := c.next(t, "status")
		if s["level"] != "error" || !strings.Contains(s["msg"].(string), tc.want) {
			t.Errorf("%s: status %v, want an error saying %q", tc.op, s, tc.want)
		}
		if tc.service {
			if r := c.next(t, "service_response"); r["result"] != false {
				t.Errorf("%s: answered %v, want a failed service_response", tc.op, r)
			}
		}
	}
	c.write(t, `{"op":"publish","topic":"/chatter","msg":{"data":"ok"}}`)
	if err := up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/chatter") == 1 }); err != nil {
		t.Fatal(err)
	}
	for _, o := range up.Ops() {
		if o.Service != "" || o.Topic != "/chatter" || !strings.Contains(string(o.Raw), `"ok"`) {
			t.Errorf("a refused op reached the upstream: %s", o.Raw)
		}
	}

	c.write(t, "{\"op\":\"publish\",\"topic\":\"/chatter\",\"msg\":{\"data\":\"\xff\"}}")
	if code := testwait.RecvWithin(t, c.closed, wait, "the close frame"); code != websocket.CloseInvalidFramePayloadData {
		t.Errorf("text not UTF-8: closed with %d, want 1007", code)
	}
	c = dialRaw(t, url)
	if err := c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(999, ""), testwait.Deadline(wait)); err != nil {
		t.Fatal(err)
	}
	if code := testwait.RecvWithin(t, c.closed, wait, "the close frame"); code != websocket.CloseProtocolError {
		t.Errorf("close code 999: answered %d, want 1002", code)
	}
}
