package rosbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// The upstream in these tests is rostest, a protocol-faithful rosbridge v2
// test server: ROS 2 and rosbridge_server cannot be installed here.

// wait is these tests' hang detector (stretched by testwait.Timeout):
// generous, since under -race and a CPU hog TestSlowClientDoesNotHoldOthers
// took over 10 s to move its 5 MiB.
const wait = testwait.Default

type fixture struct {
	t    *testing.T
	up   *rostest.Server
	mux  *Mux
	http *httptest.Server
}

func start(t *testing.T, mod func(*Options)) *fixture {
	t.Helper()
	up, err := rostest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	opts := Options{
		Upstream:       up.URL(),
		Subscribe:      Allowlist{"*"},
		Publish:        Allowlist{"/chatter", "/cmd_vel"},
		Services:       Allowlist{"/rosapi/*", "/echo", "/hang"},
		MotionTopics:   []string{"/cmd_vel"},
		ServiceTimeout: testwait.Timeout(wait), // a hang detector; the tests of the timeout set theirs
		MinBackoff:     20 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&opts)
	}
	mux, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	mux.Start()
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		mux.Close()
	})
	f := &fixture{t: t, up: up, mux: mux, http: srv}
	f.eventually("upstream connected", mux.Connected)
	// Service calls go over links of their own, which connect beside the
	// main one.
	f.eventually("service links connected", func() bool {
		for _, l := range mux.services.links {
			if !l.connected() {
				return false
			}
		}
		return true
	})
	return f
}

// viewsNotCommands checks that evil, a client whose commands are refused,
// still subscribes and receives, and that each command op is refused with a
// status (and the call with a service_response) that ends in refusal.
func (f *fixture) viewsNotCommands(evil *tclient, refusal, who string) {
	f.t.Helper()
	evil.send(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"})
	f.subscribed("/odom", 1)
	if _, err := f.up.Publish("/odom", map[string]any{"seq": 1}); err != nil {
		f.t.Fatal(err)
	}
	if got := seqOf(evil.next("publish")); got != 1 {
		f.t.Fatalf("subscriber from %s got seq %d, want 1", who, got)
	}
	for _, op := range []map[string]any{
		{"op": "advertise", "id": "a", "topic": "/chatter", "type": "std_msgs/String"},
		{"op": "publish", "id": "p", "topic": "/chatter", "msg": map[string]any{"data": "x"}},
		{"op": "call_service", "id": "c", "service": "/rosapi/topics"},
	} {
		evil.send(op)
		s := evil.next("status")
		if s["level"] != "error" || s["id"] != op["id"] || !strings.HasSuffix(s["msg"].(string), "refused: "+refusal) {
			f.t.Fatalf("%s from %s: status %v", op["op"], who, s)
		}
	}
	if r := evil.next("service_response"); r["id"] != "c" || r["result"] != false || !strings.Contains(fmt.Sprint(r["values"]), refusal) {
		f.t.Fatalf("service_response %v, want a failure naming the refusal", r)
	}
}

// commandsReach checks that a client dialed with each of hdrs publishes
// upstream, and that none of the ops refused before reached the upstream.
func (f *fixture) commandsReach(hdrs []http.Header) {
	f.t.Helper()
	for i, hdr := range hdrs {
		c := f.dialWith(hdr)
		c.send(map[string]any{"op": "publish", "topic": "/chatter", "msg": map[string]any{"seq": i}})
		if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/chatter") == i+1 }); err != nil {
			f.t.Fatalf("publish with headers %v did not reach the upstream: %v", hdr, err)
		}
	}
	for _, o := range f.up.Ops() {
		if o.Op == "advertise" || o.Op == "call_service" {
			f.t.Fatalf("a refused op reached the upstream: %s", o.Raw)
		}
	}
}

func (f *fixture) eventually(what string, cond func() bool) {
	f.t.Helper()
	testwait.ForWithin(f.t, wait, what, cond)
}

// subscribed waits until n clients subscribe to topic through the mux and
// the upstream holds the mux's subscription.
func (f *fixture) subscribed(topic string, n int) {
	f.t.Helper()
	f.eventually(fmt.Sprintf("%d subscribers of %s", n, topic), func() bool {
		conns, _ := f.up.Subscribers(topic)
		return subscribers(f.mux, topic) == n && conns == 1
	})
}

var cborMaps, _ = cbor.DecOptions{DefaultMapType: reflect.TypeOf(map[string]any{})}.DecMode()

// tclient is a raw rosbridge client.
type tclient struct {
	t    *testing.T
	conn *websocket.Conn
	in   chan map[string]any
}

func (f *fixture) dial() *tclient {
	f.t.Helper()
	return f.dialWith(nil)
}

// dialWith dials with the request headers given (Origin, Host).
func (f *fixture) dialWith(hdr http.Header) *tclient {
	f.t.Helper()
	url := "ws" + strings.TrimPrefix(f.http.URL, "http")
	conn, resp, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		f.t.Fatalf("dialing %s: %v (%v)", url, err, resp)
	}
	c := &tclient{t: f.t, conn: conn, in: make(chan map[string]any, 10000)}
	go func() {
		defer close(c.in)
		for {
			typ, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var m map[string]any
			if typ == websocket.BinaryMessage {
				if cborMaps.Unmarshal(data, &m) == nil {
					m["_binary"] = true
					c.in <- m
				}
				continue
			}
			if json.Unmarshal(data, &m) == nil {
				c.in <- m
			}
		}
	}()
	f.t.Cleanup(func() { _ = conn.Close() })
	return c
}

func (c *tclient) send(v map[string]any) {
	c.t.Helper()
	if err := c.conn.WriteJSON(v); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next message with this op, skipping others.
func (c *tclient) next(op string) map[string]any {
	c.t.Helper()
	timer := time.NewTimer(testwait.Timeout(wait))
	defer timer.Stop()
	for {
		select {
		case m, ok := <-c.in:
			if !ok {
				c.t.Fatalf("connection closed while waiting for %s", op)
			}
			if m["op"] == op {
				return m
			}
		case <-timer.C:
			c.t.Fatalf("no %s within %v", op, wait)
		}
	}
}

// nextAny returns the next message, whatever its op.
func (c *tclient) nextAny() map[string]any {
	c.t.Helper()
	return testwait.RecvWithin(c.t, c.in, wait, "a message")
}

// marker subscribes c, the first subscriber of /mark, to it, publishes
// {"seq":-1} on it upstream and returns what c gets next, whatever its op:
// the mux handles a client's ops, and hands it upstream messages, in
// order, so anything due to c before the marker comes first.
func (f *fixture) marker(c *tclient) map[string]any {
	f.t.Helper()
	c.send(map[string]any{"op": "subscribe", "id": "mark", "topic": "/mark"})
	// The mux adds c to /mark under the same lock as it subscribes
	// upstream, and takes that lock to fan out what comes back.
	f.eventually("the upstream /mark subscription", func() bool { n, _ := f.up.Subscribers("/mark"); return n == 1 })
	if _, err := f.up.Publish("/mark", map[string]any{"seq": -1}); err != nil {
		f.t.Fatal(err)
	}
	return c.nextAny()
}

func seqOf(m map[string]any) int {
	return int(m["msg"].(map[string]any)["seq"].(float64))
}

func TestSubscriptionsAreSharedUpstream(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	var clients []*tclient
	for i := 0; i < 5; i++ {
		c := f.dial()
		c.send(map[string]any{"op": "subscribe", "id": "sub1", "topic": "/odom", "type": "nav_msgs/Odometry"})
		// a second Topic object in the same client: same upstream subscription
		c.send(map[string]any{"op": "subscribe", "id": "sub2", "topic": "/odom", "type": "nav_msgs/msg/Odometry"})
		clients = append(clients, c)
	}
	f.subscribed("/odom", 5)
	if n := f.up.Count("subscribe", "/odom"); n != 1 {
		t.Fatalf("upstream got %d subscribes for /odom, want 1", n)
	}
	for seq := 1; seq <= 3; seq++ {
		if n, _ := f.up.Publish("/odom", map[string]any{"seq": seq}); n != 1 {
			t.Fatalf("upstream published to %d connections, want 1", n)
		}
	}
	for i, c := range clients {
		for seq := 1; seq <= 3; seq++ {
			if got := seqOf(c.next("publish")); got != seq {
				t.Fatalf("client %d got seq %d, want %d (one copy per message per client)", i, got, seq)
			}
		}
	}
	// unsubscribe bookkeeping: only the last unsubscribe goes upstream
	for i, c := range clients {
		c.send(map[string]any{"op": "unsubscribe", "id": "sub1", "topic": "/odom"})
		c.send(map[string]any{"op": "unsubscribe", "id": "sub2", "topic": "/odom"})
		if i < len(clients)-1 {
			f.eventually("subscriber gone", func() bool { return subscribers(f.mux, "/odom") == len(clients)-1-i })
			if n := f.up.Count("unsubscribe", "/odom"); n != 0 {
				t.Fatalf("upstream unsubscribed with %d subscribers left", len(clients)-1-i)
			}
		}
	}
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "unsubscribe", "/odom") == 1 }); err != nil {
		t.Fatal(err)
	}
	if conns, _ := f.up.Subscribers("/odom"); conns != 0 {
		t.Fatalf("upstream still has %d subscriptions to /odom", conns)
	}
	if f.mux.UpstreamTopics() != 0 {
		t.Fatalf("mux still holds %d upstream topics", f.mux.UpstreamTopics())
	}
}

func subscribers(m *Mux, topic string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.topics[topicKey{topic, "none"}]; t != nil {
		return len(t.subs)
	}
	return 0
}

func countOps(ops []rostest.Op, op, topic string) int {
	n := 0
	for _, o := range ops {
		if o.Op == op && (o.Topic == topic || o.Service == topic) {
			n++
		}
	}
	return n
}

func TestDisconnectReleasesUpstream(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	c := f.dial()
	c.send(map[string]any{"op": "subscribe", "id": "s", "topic": "/scan"})
	c.send(map[string]any{"op": "advertise", "id": "a", "topic": "/chatter", "type": "std_msgs/String"})
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool {
		return countOps(ops, "subscribe", "/scan") == 1 && countOps(ops, "advertise", "/chatter") == 1
	}); err != nil {
		t.Fatal(err)
	}
	_ = c.conn.Close()
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool {
		return countOps(ops, "unsubscribe", "/scan") == 1 && countOps(ops, "unadvertise", "/chatter") == 1
	}); err != nil {
		t.Fatal(err)
	}
	f.eventually("client gone", func() bool { return f.mux.Clients() == 0 })
}

func TestUpstreamRestartRestores(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	c := f.dial()
	c.send(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"})
	c.send(map[string]any{"op": "advertise", "id": "a", "topic": "/chatter", "type": "std_msgs/String"})
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool {
		return countOps(ops, "subscribe", "/odom") == 1 && countOps(ops, "advertise", "/chatter") == 1
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.up.Restart(100 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool {
		return countOps(ops, "subscribe", "/odom") == 2 && countOps(ops, "advertise", "/chatter") == 2
	}); err != nil {
		t.Fatal(err)
	}
	f.eventually("upstream resubscribed", func() bool { n, _ := f.up.Subscribers("/odom"); return n == 1 })
	if _, err := f.up.Publish("/odom", map[string]any{"seq": 7}); err != nil {
		t.Fatal(err)
	}
	if got := seqOf(c.next("publish")); got != 7 {
		t.Fatalf("got seq %d after restart, want 7", got)
	}
	// the client's publish reaches the restarted upstream and loops back
	c.send(map[string]any{"op": "subscribe", "id": "s2", "topic": "/chatter"})
	f.eventually("chatter subscribed", func() bool { n, _ := f.up.Subscribers("/chatter"); return n == 1 })
	c.send(map[string]any{"op": "publish", "topic": "/chatter", "msg": map[string]any{"seq": 8}})
	if got := seqOf(c.next("publish")); got != 8 {
		t.Fatalf("loopback seq %d, want 8", got)
	}
}

func TestServiceCallsRouteByID(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	// The calls overlap: the first ones wait upstream until every client
	// has sent all of its calls.
	sent := make(chan struct{})
	f.up.HandleService("/echo", func(ctx context.Context, args json.RawMessage) (any, bool) {
		select {
		case <-sent:
		case <-ctx.Done():
		}
		return json.RawMessage(args), true
	})
	const n = 8
	clients := make([]*tclient, n)
	for i := range clients {
		clients[i] = f.dial()
	}
	for i, c := range clients {
		// every client uses the same ids: routing must not mix them up
		for k := 0; k < 3; k++ {
			c.send(map[string]any{"op": "call_service", "id": fmt.Sprintf("call:%d", k), "service": "/echo",
				"args": map[string]any{"client": i, "k": k}})
		}
	}
	close(sent)
	for i, c := range clients {
		seen := map[string]bool{}
		for k := 0; k < 3; k++ {
			r := c.next("service_response")
			vals, ok := r["values"].(map[string]any)
			if !ok || r["result"] != true || vals["client"] != float64(i) {
				t.Fatalf("client %d got %v", i, r)
			}
			want := fmt.Sprintf("call:%d", int(vals["k"].(float64)))
			if r["id"] != want || seen[want] {
				t.Fatalf("client %d: response id %v for k=%v", i, r["id"], vals["k"])
			}
			seen[want] = true
		}
	}
	for _, o := range f.up.Ops() {
		if o.Op == "call_service" && strings.HasPrefix(o.ID, "call:") {
			t.Fatalf("client id %q reached the upstream; want the mux's own ids", o.ID)
		}
	}
}

func TestHungServiceTimesOutWithoutStallingTopics(t *testing.T) {
	t.Parallel()
	// Topics go on while a call hangs: the call waits upstream until the
	// topic traffic has been seen, so it is pending for certain, however
	// slow the machine (the service timeout is a hang detector here).
	f := start(t, func(o *Options) { o.ServiceConnections = 1 })
	release := make(chan struct{})
	f.up.HandleService("/hang", func(ctx context.Context, _ json.RawMessage) (any, bool) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return map[string]any{}, true
	})
	caller := f.dial()
	sub := f.dial()
	sub.send(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"})
	f.eventually("subscribed upstream", func() bool { n, _ := f.up.Subscribers("/odom"); return n == 1 })
	caller.send(map[string]any{"op": "call_service", "id": "h1", "service": "/hang", "args": map[string]any{}})
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "call_service", "/hang") == 1 }); err != nil {
		t.Fatal(err)
	}
	// while the service hangs: new subscriptions and publishes still go through
	caller.send(map[string]any{"op": "subscribe", "id": "s2", "topic": "/chatter"})
	f.eventually("subscribe during hang", func() bool { n, _ := f.up.Subscribers("/chatter"); return n == 1 })
	caller.send(map[string]any{"op": "publish", "topic": "/chatter", "msg": map[string]any{"seq": 1}})
	if got := seqOf(caller.next("publish")); got != 1 {
		t.Fatalf("chatter seq %d", got)
	}
	if _, err := f.up.Publish("/odom", map[string]any{"seq": 2}); err != nil {
		t.Fatal(err)
	}
	if got := seqOf(sub.next("publish")); got != 2 {
		t.Fatalf("odom seq %d", got)
	}
	close(release)
	if r := caller.next("service_response"); r["result"] != true || r["id"] != "h1" {
		t.Fatalf("released call answered %v", r)
	}

	// A call that hangs past the service timeout is answered result false,
	// not before the timeout.
	g := start(t, func(o *Options) { o.ServiceTimeout = 500 * time.Millisecond; o.ServiceConnections = 1 })
	g.up.HandleService("/hang", rostest.Hang)
	c := g.dial()
	begun := time.Now()
	c.send(map[string]any{"op": "call_service", "id": "h2", "service": "/hang", "args": map[string]any{}})
	r := c.next("service_response")
	if r["result"] != false || r["id"] != "h2" || r["service"] != "/hang" {
		t.Fatalf("timeout response %v", r)
	}
	if el := time.Since(begun); el < 400*time.Millisecond {
		t.Fatalf("timeout answered after %v, before the 500ms timeout", el)
	}
}

func TestAllowlistDenials(t *testing.T) {
	t.Parallel()
	f := start(t, func(o *Options) { o.Subscribe = Allowlist{"/odom", "/tf*"} })
	c := f.dial()
	cases := []struct {
		msg  map[string]any
		want string
	}{
		{map[string]any{"op": "subscribe", "id": "x1", "topic": "/secret"}, "subscribe allowlist"},
		{map[string]any{"op": "advertise", "id": "x2", "topic": "/arm", "type": "std_msgs/Float64"}, "publish allowlist"},
		{map[string]any{"op": "publish", "id": "x3", "topic": "/arm", "msg": map[string]any{"data": 1}}, "publish allowlist"},
		{map[string]any{"op": "call_service", "id": "x4", "service": "/reboot"}, "services allowlist"},
		{map[string]any{"op": "advertise_service", "id": "x5", "service": "/mine", "type": "std_srvs/Trigger"}, "not served"},
		{map[string]any{"op": "subscribe", "id": "x6", "topic": "/odom", "compression": "bson"}, "compression"},
	}
	for _, tc := range cases {
		c.send(tc.msg)
		s := c.next("status")
		if s["level"] != "error" || s["id"] != tc.msg["id"] || !strings.Contains(s["msg"].(string), tc.want) {
			t.Fatalf("%v: status %v, want error containing %q", tc.msg, s, tc.want)
		}
		if tc.msg["op"] == "call_service" {
			if r := c.next("service_response"); r["result"] != false || r["id"] != "x4" {
				t.Fatalf("denied call answered %v", r)
			}
		}
	}
	c.send(map[string]any{"op": "subscribe", "id": "ok", "topic": "/tf_static"})
	c.send(map[string]any{"op": "call_service", "id": "r", "service": "/rosapi/topics"})
	if r := c.next("service_response"); r["result"] != true || r["id"] != "r" {
		t.Fatalf("rosapi call answered %v", r)
	}
	for _, o := range f.up.Ops() {
		if o.Topic == "/secret" || o.Topic == "/arm" || o.Service == "/reboot" || o.Service == "/mine" {
			t.Fatalf("denied op reached upstream: %s", o.Raw)
		}
	}
}

// testGate is a frame.MotionGate a test switches.
type testGate struct {
	stale atomic.Bool
	asked atomic.Int64
}

func (g *testGate) Allow(action string) (bool, string) {
	g.asked.Add(1)
	if action != "set_cmd_vel" {
		panic("unexpected action " + action)
	}
	if g.stale.Load() {
		return false, "HOLD"
	}
	return true, "ARMED"
}

func zeroTwists(ops []rostest.Op) int {
	n := 0
	for _, o := range ops {
		if o.Op == "publish" && o.Topic == "/cmd_vel" && strings.Contains(string(o.Raw), `"linear":{"x":0.0,"y":0.0,"z":0.0}`) {
			n++
		}
	}
	return n
}

func TestMotionPublishesPassTheGate(t *testing.T) {
	t.Parallel()
	gate := &testGate{}
	f := start(t, func(o *Options) { o.Gate = gate })
	c := f.dial()
	twist := func(x float64) map[string]any {
		return map[string]any{"op": "publish", "id": fmt.Sprintf("p%g", x), "topic": "/cmd_vel",
			"msg": map[string]any{"linear": map[string]any{"x": x, "y": 0, "z": 0}, "angular": map[string]any{"x": 0, "y": 0, "z": 0}}}
	}
	c.send(map[string]any{"op": "advertise", "id": "a", "topic": "/cmd_vel", "type": "geometry_msgs/Twist"})
	c.send(twist(0.5))
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/cmd_vel") == 1 }); err != nil {
		t.Fatal(err)
	}
	gate.stale.Store(true)
	for i := 0; i < 3; i++ {
		c.send(twist(0.6))
		s := c.next("status")
		if s["level"] != "warning" || s["id"] != "p0.6" || !strings.Contains(s["msg"].(string), "HOLD") {
			t.Fatalf("gated publish status %v", s)
		}
	}
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return zeroTwists(ops) == 1 }); err != nil {
		t.Fatal(err)
	}
	gate.stale.Store(false)
	c.send(twist(0.7))
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/cmd_vel") == 3 }); err != nil {
		t.Fatal(err) // 0.5, the zero twist, 0.7
	}
	gate.stale.Store(true) // a second episode: one more zero twist
	c.send(twist(0.8))
	c.next("status")
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return zeroTwists(ops) == 2 }); err != nil {
		t.Fatal(err)
	}
	for _, o := range f.up.Ops() {
		if strings.Contains(string(o.Raw), "0.6") || strings.Contains(string(o.Raw), "0.8") {
			t.Fatalf("gated publish reached upstream: %s", o.Raw)
		}
	}
}

func TestMotionWithoutGate(t *testing.T) {
	t.Parallel()
	msg := map[string]any{"op": "publish", "id": "p", "topic": "/cmd_vel", "msg": map[string]any{"linear": map[string]any{"x": 1}}}
	refuse := start(t, nil)
	c := refuse.dial()
	c.send(msg)
	if s := c.next("status"); s["level"] != "error" || !strings.Contains(s["msg"].(string), "no") {
		t.Fatalf("status %v", s)
	}
	c.send(map[string]any{"op": "publish", "topic": "/chatter", "msg": map[string]any{"data": "x"}})
	if err := refuse.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/chatter") == 1 }); err != nil {
		t.Fatal(err)
	}
	if n := refuse.up.Count("publish", "/cmd_vel"); n != 0 {
		t.Fatalf("%d motion publishes reached upstream without a gate", n)
	}

	allow := start(t, func(o *Options) { o.AllowMotionWithoutGate = true })
	c = allow.dial()
	c.send(msg)
	if err := allow.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/cmd_vel") == 1 }); err != nil {
		t.Fatal(err)
	}
}

func TestThrottleAndQueueLengthPerClient(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	plain := f.dial()
	throttled := f.dial()
	queued := f.dial()
	plain.send(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"})
	throttled.send(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom", "throttle_rate": 60000})
	queued.send(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom", "throttle_rate": 300, "queue_length": 2})
	f.subscribed("/odom", 3)
	began := time.Now()
	for seq := 1; seq <= 10; seq++ {
		if _, err := f.up.Publish("/odom", map[string]any{"seq": seq}); err != nil {
			t.Fatal(err)
		}
	}
	burst := time.Since(began) // on a loaded machine the burst may outlast a throttle period
	for seq := 1; seq <= 10; seq++ {
		if got := seqOf(plain.next("publish")); got != seq {
			t.Fatalf("plain client got %d, want %d", got, seq)
		}
	}
	// throttled: the first message passes, the rest fall inside 60 s
	if got := seqOf(throttled.next("publish")); got != 1 {
		t.Fatalf("throttled client got %d first", got)
	}
	if m := f.marker(throttled); m["topic"] != "/mark" {
		t.Fatalf("throttled client got %v after its first message, want nothing before the marker", m)
	}
	// queue_length 2, throttle 300 ms: the first goes at once (or is
	// overtaken by the burst), then the newest two, one per 300 ms
	var got []int
	for len(got) == 0 || got[len(got)-1] != 10 {
		got = append(got, seqOf(queued.next("publish")))
	}
	if most := 3 + int(burst/(300*time.Millisecond)); len(got) > most || got[len(got)-2] != 9 {
		t.Fatalf("queued client got %v; want at most %d messages ending 9, 10", got, most)
	}
}

func TestSlowClientDoesNotHoldOthers(t *testing.T) {
	t.Parallel()
	f := start(t, func(o *Options) { o.ClientQueue = 8 })
	url := "ws" + strings.TrimPrefix(f.http.URL, "http")
	small := &websocket.Dialer{NetDialContext: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}).DialContext}
	slow, _, err := small.Dial(url, nil) // never reads
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if err := slow.WriteJSON(map[string]any{"op": "subscribe", "id": "s", "topic": "/img"}); err != nil {
		t.Fatal(err)
	}
	fast := f.dial()
	fast.send(map[string]any{"op": "subscribe", "id": "s", "topic": "/img"})
	f.subscribed("/img", 2)
	pad := strings.Repeat("x", 16<<10)
	const n = 300 // 5 MiB towards a client that does not read
	go func() {
		for seq := 1; seq <= n; seq++ {
			_, _ = f.up.Publish("/img", map[string]any{"seq": seq, "pad": pad})
		}
	}()
	// the fast client sees the end of the stream in time although the slow
	// one fills its socket and then its queue
	deadline := testwait.Deadline(wait)
	last := 0
	for last != n && time.Now().Before(deadline) {
		select {
		case m := <-fast.in:
			if m["op"] == "publish" {
				last = seqOf(m)
			}
		case <-testwait.After(wait):
		}
	}
	if last != n {
		t.Fatalf("fast client stopped at seq %d of %d", last, n)
	}
	var drops dto.Metric
	if err := f.mux.cnt.dropQueue.Write(&drops); err != nil || drops.GetCounter().GetValue() == 0 {
		t.Fatal("the slow client's queue never overflowed: the test did not test")
	}
}

func TestFragmentsBothWays(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	c := f.dial()
	c.send(map[string]any{"op": "subscribe", "id": "s", "topic": "/chatter", "fragment_size": 1})
	f.eventually("subscribed", func() bool { n, _ := f.up.Subscribers("/chatter"); return n == 1 })
	// a publish sent as fragments by the client, looped back to it as fragments
	whole, _ := json.Marshal(map[string]any{"op": "publish", "topic": "/chatter", "msg": map[string]any{"data": strings.Repeat("héllo wörld ✓ ", 10)}})
	parts := fragments("f1", whole, 7)
	for _, p := range parts {
		var m map[string]any
		_ = json.Unmarshal(p, &m)
		c.send(m)
	}
	var text strings.Builder
	total := -1
	for i := 0; total < 0 || i < total; i++ {
		fr := c.next("fragment")
		total = int(fr["total"].(float64))
		if int(fr["num"].(float64)) != i {
			t.Fatalf("fragment %v out of order", fr)
		}
		text.WriteString(fr["data"].(string))
	}
	if total < 2 || total > 300/minFragment {
		t.Fatalf("message came in %d fragment(s); fragment_size 1 must be raised to %d", total, minFragment)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(text.String()), &m); err != nil {
		t.Fatalf("fragments do not join into JSON: %v: %q", err, text.String())
	}
	if m["msg"].(map[string]any)["data"] != strings.Repeat("héllo wörld ✓ ", 10) {
		t.Fatalf("reassembled %v", m)
	}
}

func TestSizeCapAndRateLimit(t *testing.T) {
	t.Parallel()
	f := start(t, func(o *Options) { o.MaxMessageSize = 4096; o.RateLimit = 5; o.RateBurst = 5 })
	c := f.dial()
	began := time.Now()
	for i := 0; i < 20; i++ {
		c.send(map[string]any{"op": "publish", "topic": "/chatter", "msg": map[string]any{"i": i}})
	}
	s := c.next("status")
	if !strings.Contains(s["msg"].(string), "rate limit") {
		t.Fatalf("status %v", s)
	}
	f.eventually("all 20 publishes handled (passed upstream or dropped)", func() bool {
		var dropped dto.Metric
		_ = f.mux.cnt.dropRate.Write(&dropped)
		return f.up.Count("publish", "/chatter")+int(dropped.GetCounter().GetValue()) == 20
	})
	// the burst, plus what the bucket refilled while the ops were handled
	most := 5 + int(math.Ceil(time.Since(began).Seconds()*5))
	if n := f.up.Count("publish", "/chatter"); n < 5 || n > most {
		t.Fatalf("%d of 20 publishes passed a 5/s limit with burst 5; want 5 to %d", n, most)
	}
	big := f.dial()
	// the write itself may fail once the mux has closed the connection
	_ = big.conn.WriteJSON(map[string]any{"op": "publish", "topic": "/chatter", "msg": map[string]any{"pad": strings.Repeat("y", 8192)}})
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-big.in:
			if !ok {
				return // closed for the oversized message
			}
		case <-timer.C:
			t.Fatal("oversized message did not close the connection")
		}
	}
}

// Every origin may connect and subscribe; advertise, publish and
// call_service from a connection whose Origin is not trusted are refused
// with an error status (and a failed service_response), counted and kept
// from the upstream. Trusted: listed origins, the page's own host on any
// port, loopback pages, and clients without an Origin.
func TestUntrustedOriginMaySubscribeNotCommand(t *testing.T) {
	t.Parallel()
	f := start(t, func(o *Options) { o.Origins = []string{"https://app.example.com"} })
	evil := f.dialWith(http.Header{"Origin": {"https://evil.example.com"}})
	f.viewsNotCommands(evil, "origin https://evil.example.com not allowed; add it to SDR_ALLOWED_ORIGINS", "an untrusted origin")
	var denied dto.Metric
	if err := f.mux.cnt.m.Denials.WithLabelValues("origin").Write(&denied); err != nil || denied.GetCounter().GetValue() != 3 {
		t.Fatalf("origin denials %v, want 3", denied.GetCounter().GetValue())
	}

	f.commandsReach([]http.Header{
		{"Origin": {"https://app.example.com"}},
		{"Origin": {"http://robot.lan:3000"}, "Host": {"robot.lan:8080"}},
		{"Origin": {"http://localhost:5173"}},
		nil,
	})
}

// While the upstream is unreachable (never connected, or lost and not
// back) a new client gets 502, as a plain reverse proxy in front of a
// stopped rosbridge_server answered, so the browser app shows ROS as
// disconnected. Clients connected when it dropped stay, and their
// subscriptions are restored when it is back. The upstream is rostest,
// a protocol-faithful stand-in for rosbridge_server, stopped and started.
func TestNewClientsRefusedWhileUpstreamDown(t *testing.T) {
	t.Parallel()
	up, err := rostest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	up.Close() // rosbridge_server not started yet
	metrics := NewMetrics()
	mux, err := New(Options{
		Upstream: up.URL(), Subscribe: Allowlist{"*"},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux.Start()
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		mux.Close()
	})
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	refused := func(what string) {
		t.Helper()
		c, resp, err := websocket.DefaultDialer.Dial(url, nil)
		if err == nil {
			c.Close()
			t.Fatalf("%s: a new client was let in", what)
		}
		if resp == nil || resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("%s: %v (%v), want 502", what, err, resp)
		}
	}
	refused("never connected")
	var n dto.Metric
	if err := metrics.UpstreamRefused.Write(&n); err != nil || n.GetCounter().GetValue() != 1 {
		t.Fatalf("upstream refusals %v, want 1", n.GetCounter().GetValue())
	}

	if err := up.Listen(); err != nil { // rosbridge_server starts
		t.Fatal(err)
	}
	f := &fixture{t: t, up: up, mux: mux, http: srv}
	f.eventually("the upstream connection", mux.Connected)
	c := f.dial()
	c.send(map[string]any{"op": "subscribe", "id": "s", "topic": "/odom"})
	f.subscribed("/odom", 1)

	up.Close() // rosbridge_server stops
	f.eventually("the mux to notice", func() bool { return !mux.Connected() })
	refused("connection lost")
	if err := up.Listen(); err != nil { // and comes back
		t.Fatal(err)
	}
	f.subscribed("/odom", 1) // restored for the client that stayed
	if _, err := up.Publish("/odom", map[string]any{"seq": 5}); err != nil {
		t.Fatal(err)
	}
	if got := seqOf(c.next("publish")); got != 5 {
		t.Fatalf("the client that stayed got seq %d, want 5", got)
	}
	f.dial() // new clients are let in again
}

func TestUpstreamStatusReachesTheSubscribers(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	f.up.SetTopicType("/odom", "nav_msgs/msg/Odometry")
	f.up.SetTopicType("/chatter", "std_msgs/msg/String")
	a := f.dial()
	a.send(map[string]any{"op": "subscribe", "id": "mine-a", "topic": "/odom", "type": "std_msgs/String"})
	s := a.next("status")
	if s["level"] != "error" || s["id"] != "mine-a" || !strings.Contains(s["msg"].(string), "upstream: subscribe: TypeMismatch") {
		t.Fatalf("status %v, want the upstream's type mismatch under the client's id", s)
	}
	a.send(map[string]any{"op": "advertise", "id": "adv-a", "topic": "/chatter", "type": "std_msgs/Int32"})
	if s := a.next("status"); s["id"] != "adv-a" || !strings.Contains(s["msg"].(string), "advertise: TypeMismatch") {
		t.Fatalf("advertise status %v", s)
	}
}

func TestSetLevel(t *testing.T) {
	t.Parallel()
	gate := &testGate{}
	gate.stale.Store(true)
	f := start(t, func(o *Options) { o.Gate = gate })
	c := f.dial()
	pub := map[string]any{"op": "publish", "id": "p", "topic": "/cmd_vel", "msg": map[string]any{}}
	c.send(pub) // default level warning: the gate warning arrives
	if s := c.next("status"); s["level"] != "warning" {
		t.Fatalf("status %v", s)
	}
	c.send(map[string]any{"op": "set_level", "level": "error"})
	c.send(pub)                                                                                   // below the level: silent
	c.send(map[string]any{"op": "subscribe", "id": "x", "topic": "/odom", "compression": "bson"}) // an error: sent
	s := c.next("status")
	if s["level"] != "error" || s["id"] != "x" {
		t.Fatalf("after set_level error got %v before the error status", s)
	}
	c.send(map[string]any{"op": "set_level", "level": "none"})
	c.send(map[string]any{"op": "subscribe", "id": "y", "topic": "/odom", "compression": "bson"})
	c.send(map[string]any{"op": "set_level", "level": "bogus"})
	if m := f.marker(c); m["op"] != "publish" {
		t.Fatalf("got %v at level none, want nothing before the marker", m)
	}
	if gate.asked.Load() != 2 {
		t.Fatalf("gate asked %d times, want 2", gate.asked.Load())
	}
}

func TestCBORSubscriptionsHaveTheirOwnLane(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	plain, b1, b2 := f.dial(), f.dial(), f.dial()
	plain.send(map[string]any{"op": "subscribe", "id": "p", "topic": "/odom"})
	b1.send(map[string]any{"op": "subscribe", "id": "c", "topic": "/odom", "compression": "cbor"})
	b2.send(map[string]any{"op": "subscribe", "id": "c", "topic": "/odom", "compression": "cbor"})
	// rosbridge_server keeps one compression per topic per connection: the
	// two compressions need two upstream connections
	f.eventually("two upstream subscriptions", func() bool {
		conns, _ := f.up.Subscribers("/odom")
		f.mux.mu.Lock()
		defer f.mux.mu.Unlock()
		t := f.mux.topics[topicKey{"/odom", "cbor"}]
		return conns == 2 && t != nil && len(t.subs) == 2 && subscribersLocked(f.mux, "/odom") == 1
	})
	if n := f.up.Count("subscribe", "/odom"); n != 2 {
		t.Fatalf("%d upstream subscribes for /odom with two compressions and three clients, want 2", n)
	}
	if _, err := f.up.Publish("/odom", map[string]any{"seq": 5}); err != nil {
		t.Fatal(err)
	}
	if m := plain.next("publish"); m["_binary"] != nil || seqOf(m) != 5 {
		t.Fatalf("plain client got %v", m)
	}
	for _, c := range []*tclient{b1, b2} {
		m := c.next("publish")
		if m["_binary"] != true || m["topic"] != "/odom" {
			t.Fatalf("cbor client got %v", m)
		}
		if seq := fmt.Sprint(m["msg"].(map[string]any)["seq"]); seq != "5" {
			t.Fatalf("cbor client got msg %v", m["msg"])
		}
	}
	b1.send(map[string]any{"op": "subscribe", "id": "again", "topic": "/odom"})
	if s := b1.next("status"); s["id"] != "again" || !strings.Contains(s["msg"].(string), "already subscribes to it with compression cbor") {
		t.Fatalf("status %v", s)
	}
	b1.send(map[string]any{"op": "unsubscribe", "id": "c", "topic": "/odom"})
	b2.send(map[string]any{"op": "unsubscribe", "id": "c", "topic": "/odom"})
	f.eventually("the cbor lane unsubscribed", func() bool { conns, _ := f.up.Subscribers("/odom"); return conns == 1 })
}

func subscribersLocked(m *Mux, topic string) int {
	if t := m.topics[topicKey{topic, "none"}]; t != nil {
		return len(t.subs)
	}
	return 0
}

func TestLatchedTopicsReplayToLateSubscribers(t *testing.T) {
	t.Parallel()
	f := start(t, func(o *Options) { o.Latched = Allowlist{"/tf_static"} })
	early := f.dial()
	early.send(map[string]any{"op": "subscribe", "id": "a", "topic": "/tf_static"})
	early.send(map[string]any{"op": "subscribe", "id": "b", "topic": "/odom"})
	f.subscribed("/tf_static", 1)
	f.subscribed("/odom", 1)
	_, _ = f.up.Publish("/tf_static", map[string]any{"seq": 1})
	_, _ = f.up.Publish("/odom", map[string]any{"seq": 2})
	early.next("publish")
	early.next("publish")

	late := f.dial()
	late.send(map[string]any{"op": "subscribe", "id": "b", "topic": "/odom"})
	late.send(map[string]any{"op": "subscribe", "id": "a", "topic": "/tf_static"})
	m := late.next("publish")
	if m["topic"] != "/tf_static" || seqOf(m) != 1 {
		t.Fatalf("late subscriber got %v first; want the latched /tf_static message", m)
	}
	// /odom is not latched: nothing replayed, the next /odom is live
	_, _ = f.up.Publish("/odom", map[string]any{"seq": 3})
	if m := late.next("publish"); m["topic"] != "/odom" || seqOf(m) != 3 {
		t.Fatalf("late subscriber got %v, want the live /odom seq 3", m)
	}
	if n := f.up.Count("subscribe", "/tf_static"); n != 1 {
		t.Fatalf("%d upstream subscribes for /tf_static", n)
	}
}

func TestMalformedInputGetsStatusNotACrash(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	f.up.HandleService("/echo", func(_ context.Context, args json.RawMessage) (any, bool) { return args, true })
	c := f.dial()
	bad := []string{
		`not json`,
		`[]`,
		`{"op":5}`,
		`{}`,
		`{"op":"subscribe"}`,
		`{"op":"subscribe","topic":"/a","throttle_rate":1e30}`,
		`{"op":"subscribe","topic":"/a","throttle_rate":9223372036854775807,"queue_length":-5,"fragment_size":-1}`,
		`{"op":"fragment","id":"x","num":-1,"total":2,"data":"a"}`,
		`{"op":"fragment","id":"x","num":0,"total":99999999999,"data":"a"}`,
		`{"op":"fragment","id":"y","num":0,"total":1,"data":"{\"op\":\"fragment\"}"}`,
		`{"op":"publish","topic":"/chatter"}`,
		`{"op":"call_service"}`,
		`{"op":"unsubscribe","topic":"/never"}`,
		`{"op":"unadvertise","topic":"/never"}`,
		`{"op":"advertise","topic":"/chatter"}`,
		`{"op":"set_level","level":7}`,
		`{"op":"auth","mac":"x"}`,
		`{"op":"png","data":"x"}`,
	}
	for _, b := range bad {
		if err := c.conn.WriteMessage(websocket.TextMessage, []byte(b)); err != nil {
			t.Fatalf("connection dropped before %s: %v", b, err)
		}
	}
	if err := c.conn.WriteMessage(websocket.BinaryMessage, []byte{0xa1, 0x62, 0x6f, 0x70}); err != nil {
		t.Fatal(err)
	}
	// still served: a call with an absurd timeout gets its answer
	c.send(map[string]any{"op": "call_service", "id": "ok", "service": "/echo", "args": map[string]any{"v": 1}, "timeout": 1e308})
	if r := c.next("service_response"); r["id"] != "ok" || r["result"] != true {
		t.Fatalf("after malformed input: %v", r)
	}
	// a throttle_rate of 2^63-1 ms was clamped, not wrapped negative
	f.subscribed("/a", 1)
	_, _ = f.up.Publish("/a", map[string]any{"seq": 1})
	_, _ = f.up.Publish("/a", map[string]any{"seq": 2})
	if got := seqOf(c.next("publish")); got != 1 {
		t.Fatalf("got seq %d", got)
	}
	if m := f.marker(c); m["topic"] != "/mark" {
		t.Fatalf("got %v after seq 1, want nothing before the marker (seq 2 throttled)", m)
	}
}

func TestGateHandoverAcrossConfigs(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	c := f.dial()
	pub := func(id string) {
		c.send(map[string]any{"op": "publish", "id": id, "topic": "/cmd_vel", "msg": map[string]any{}})
	}
	old, fresh := &testGate{}, &testGate{}
	old.stale.Store(true)
	f.mux.SetGate("config-1", old)
	pub("1")
	if s := c.next("status"); s["level"] != "warning" || s["id"] != "1" {
		t.Fatalf("status %v", s)
	}
	f.mux.SetGate("config-2", fresh) // a reload: the new config's gate applies
	pub("2")
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/cmd_vel") == 2 }); err != nil {
		t.Fatal(err) // the zero twist of the first episode, then publish 2
	}
	f.mux.DropGate("config-2") // the new config failed and went: the old gate again
	pub("3")
	if s := c.next("status"); s["level"] != "warning" || s["id"] != "3" {
		t.Fatalf("status %v", s)
	}
	f.mux.DropGate("config-1") // no gate at all: refused
	pub("4")
	if s := c.next("status"); s["level"] != "error" || s["id"] != "4" {
		t.Fatalf("status %v", s)
	}
	if old.asked.Load() != 2 || fresh.asked.Load() != 1 {
		t.Fatalf("gates asked %d and %d times", old.asked.Load(), fresh.asked.Load())
	}
}

func TestServiceResponseFragments(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	big := strings.Repeat("ü", 5000)
	f.up.HandleService("/echo", func(context.Context, json.RawMessage) (any, bool) { return map[string]any{"text": big}, true })
	c := f.dial()
	c.send(map[string]any{"op": "call_service", "id": "big", "service": "/echo", "fragment_size": 40})
	var text strings.Builder
	for i, total := 0, 1; i < total; i++ {
		fr := c.next("fragment")
		total = int(fr["total"].(float64))
		if fr["id"] != "big" || int(fr["num"].(float64)) != i {
			t.Fatalf("fragment %v", fr)
		}
		text.WriteString(fr["data"].(string))
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(text.String()), &r); err != nil {
		t.Fatal(err)
	}
	if r["op"] != "service_response" || r["id"] != "big" || r["values"].(map[string]any)["text"] != big {
		t.Fatalf("reassembled %.200v", r)
	}
}

func TestPerClientBounds(t *testing.T) {
	t.Parallel()
	f := start(t, func(o *Options) { o.RateLimit = -1; o.ServiceTimeout = 5 * time.Second })
	f.up.HandleService("/hang", rostest.Hang)
	c := f.dial()
	for i := 0; i < maxClientCalls+1; i++ {
		c.send(map[string]any{"op": "call_service", "id": fmt.Sprint(i), "service": "/hang"})
	}
	r := c.next("service_response")
	if r["id"] != fmt.Sprint(maxClientCalls) || r["result"] != false || !strings.Contains(r["values"].(string), "too many service calls") {
		t.Fatalf("call over the cap answered %v", r)
	}
	for i := 0; i < maxClientTopics+1; i++ {
		c.send(map[string]any{"op": "subscribe", "id": "s", "topic": fmt.Sprintf("/t%d", i)})
	}
	s := c.next("status")
	if s["level"] != "error" || !strings.Contains(s["msg"].(string), fmt.Sprintf("/t%d refused: a client may subscribe to at most", maxClientTopics)) {
		t.Fatalf("status %v", s)
	}
}

func TestStaleVideoStopsADrivenRobotWithoutAnotherPublish(t *testing.T) {
	t.Parallel()
	gate := &testGate{}
	stop := json.RawMessage(`{"header":{"frame_id":"base"},"twist":{"linear":{"x":0},"angular":{"z":0}}}`)
	f := start(t, func(o *Options) { o.Gate = gate; o.StopMessage = stop })
	c := f.dial()
	c.send(map[string]any{"op": "publish", "topic": "/cmd_vel", "msg": map[string]any{"twist": map[string]any{"linear": map[string]any{"x": 1}}}})
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/cmd_vel") == 1 }); err != nil {
		t.Fatal(err)
	}
	gate.stale.Store(true) // the video stops; the browser sends nothing more
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/cmd_vel") == 2 }); err != nil {
		t.Fatalf("no stop message after the gate closed: %v", err)
	}
	ops := f.up.Ops()
	if last := ops[len(ops)-1]; !strings.Contains(string(last.Raw), `"frame_id":"base"`) {
		t.Fatalf("stop message %s, want the configured one", last.Raw)
	}
	// the watcher keeps asking (every 100 ms): still one stop message
	asked := gate.asked.Load()
	f.eventually("the watcher to ask the gate five more times", func() bool { return gate.asked.Load() >= asked+5 })
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return true }); err != nil {
		t.Fatal(err)
	}
	c.send(map[string]any{"op": "publish", "topic": "/chatter", "msg": map[string]any{"seq": 1}})
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/chatter") == 1 }); err != nil {
		t.Fatal(err) // a later op on the same upstream connection: the stop messages before it have arrived
	}
	if n := f.up.Count("publish", "/cmd_vel"); n != 2 {
		t.Fatalf("%d publishes on /cmd_vel, want the drive and one stop", n)
	}
}

func TestStopMessageMustBeAnObject(t *testing.T) {
	t.Parallel()
	if _, err := New(Options{Upstream: "ws://127.0.0.1:1", StopMessage: json.RawMessage(`[1]`)}); err == nil {
		t.Fatal("a JSON array was accepted as the stop message")
	}
}

func TestPNGSubscriptions(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	c := f.dial()
	c.send(map[string]any{"op": "subscribe", "id": "p", "topic": "/map", "compression": "png", "fragment_size": 200})
	f.eventually("the png lane", func() bool { n, _ := f.up.Subscribers("/map"); return n == 1 })
	cells := make([]int, 500)
	for i := range cells {
		cells[i] = i % 101
	}
	if _, err := f.up.Publish("/map", map[string]any{"seq": 4, "data": cells}); err != nil {
		t.Fatal(err)
	}
	// fragment_size applies to the png op, as rosbridge_server does it
	var text strings.Builder
	for i, total := 0, 1; i < total; i++ {
		fr := c.next("fragment")
		total = int(fr["total"].(float64))
		text.WriteString(fr["data"].(string))
	}
	var op struct{ Op, Data string }
	if err := json.Unmarshal([]byte(text.String()), &op); err != nil || op.Op != "png" {
		t.Fatalf("reassembled %.100q: %v", text.String(), err)
	}
	inner, err := pngPayload(op.Data, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(inner, &m); err != nil || m["topic"] != "/map" || seqOf(m) != 4 {
		t.Fatalf("png payload %.200s: %v", inner, err)
	}
	if _, err := pngPayload("bm90IGEgcG5n", 1<<20); err == nil {
		t.Fatal("a non-PNG payload decoded")
	}
}

func TestCBORRawSubscriptions(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	c := f.dial()
	c.send(map[string]any{"op": "subscribe", "id": "r", "topic": "/scan", "compression": "cbor-raw"})
	f.eventually("the cbor-raw lane", func() bool { n, _ := f.up.Subscribers("/scan"); return n == 1 })
	if _, err := f.up.Publish("/scan", map[string]any{"seq": 6}); err != nil {
		t.Fatal(err)
	}
	m := c.next("publish")
	raw, ok := m["msg"].(map[string]any)["bytes"].([]byte)
	if m["_binary"] != true || m["topic"] != "/scan" || !ok || !strings.Contains(string(raw), `"seq":6`) {
		t.Fatalf("cbor-raw client got %v", m)
	}
}

// TestMuxDialsOnStart: New dials nothing (caddy validate provisions sdr_ros
// and must not touch rosbridge_server); Start connects, once.
func TestMuxDialsOnStart(t *testing.T) {
	t.Parallel()
	up, err := rostest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	opts := Options{Upstream: up.URL(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	idle, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	running, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	running.Start()
	running.Start()
	// The topic connection and the two service connections of the one
	// started mux, made after the idle one was created.
	testwait.For(t, "the started mux to connect", func() bool { return running.Connected() && up.Connections() == 3 })
	if idle.Connected() || up.Connections() != 3 {
		t.Fatalf("the mux that was not started is connected (%t), or more connections than the started one's: %d", idle.Connected(), up.Connections())
	}
	idle.Start()
	testwait.For(t, "the second mux to connect once started", func() bool { return idle.Connected() && up.Connections() == 6 })
	idle.Close()
	idle.Start() // after Close: nothing
	testwait.For(t, "the closed mux's connections to end", func() bool { return up.Connections() == 3 })
}
