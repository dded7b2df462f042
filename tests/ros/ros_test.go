// Package ros holds the live tests of sdr_ros: the built sdr-caddy binary
// between real roslibjs 2.x clients (Node.js, tests/node/ros/agent.mjs) and
// rostest, a protocol-faithful rosbridge v2 test server written in Go. The
// upstream is that test server because ROS 2 and rosbridge_server cannot be
// installed on these machines; it records every op the proxy sends and
// publishes on demand.
package ros

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

const wait = 20 * time.Second

// event is one line the agent printed.
type event struct {
	Ev     string          `json:"ev"`
	Client int             `json:"client"`
	Topic  string          `json:"topic"`
	Msg    json.RawMessage `json:"msg"`
	Tag    string          `json:"tag"`
	OK     bool            `json:"ok"`
	Values json.RawMessage `json:"values"`
	Status struct {
		ID    string `json:"id"`
		Level string `json:"level"`
		Msg   string `json:"msg"`
	} `json:"status"`
	Error string `json:"error"`
	N     int    `json:"n"`
}

// agent is a Node.js process running roslibjs clients.
type agent struct {
	t     *testing.T
	stdin io.WriteCloser

	mu      sync.Mutex
	events  []event
	changed chan struct{}
	exited  chan struct{}
}

func startAgent(t *testing.T) *agent {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found: %v", err)
	}
	dir := filepath.Join(testenv.Root(), "tests", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "roslib", "package.json")); err != nil {
		t.Fatalf("roslib is not installed in tests/node (run npm ci there): %v", err)
	}
	cmd := exec.Command(node, "ros/agent.mjs")
	cmd.Dir = dir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agent{t: t, stdin: stdin, changed: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(a.exited)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var e event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				continue
			}
			a.mu.Lock()
			a.events = append(a.events, e)
			close(a.changed)
			a.changed = make(chan struct{})
			a.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-a.exited:
		case <-testwait.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-a.exited
		}
		_ = cmd.Wait()
		for _, e := range a.snapshot() {
			if e.Ev == "error" {
				t.Logf("agent error (client %d): %s", e.Client, e.Error)
			}
		}
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("agent stderr:\n%s", stderr.String())
		}
	})
	return a
}

func (a *agent) send(cmd map[string]any) {
	a.t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := a.stdin.Write(append(b, '\n')); err != nil {
		a.t.Fatalf("writing to the agent: %v", err)
	}
}

func (a *agent) snapshot() []event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]event(nil), a.events...)
}

// waitFor waits until cond holds over every event so far.
func (a *agent) waitFor(what string, cond func([]event) bool) []event {
	a.t.Helper()
	deadline := time.NewTimer(testwait.Timeout(wait))
	defer deadline.Stop()
	for {
		a.mu.Lock()
		evs := append([]event(nil), a.events...)
		ch := a.changed
		a.mu.Unlock()
		if cond(evs) {
			return evs
		}
		select {
		case <-ch:
		case <-a.exited:
			a.t.Fatalf("agent exited while waiting for %s", what)
		case <-deadline.C:
			a.t.Fatalf("timed out after %v waiting for %s (%d events)", wait, what, len(evs))
		}
	}
}

// handled waits until sdr_ros has handled every op the clients sent so
// far: each sends an op the proxy refuses (set_level with an unknown
// level), and a client's ops are handled, and its replies sent, in order.
func (a *agent) handled(clients ...int) {
	a.t.Helper()
	tag := fmt.Sprintf("handled-%d", time.Now().UnixNano())
	for _, i := range clients {
		a.send(map[string]any{"cmd": "raw", "client": i, "msg": map[string]any{"op": "set_level", "id": tag, "level": "handled"}})
	}
	a.waitFor(fmt.Sprintf("sdr_ros to handle the ops of %d clients", len(clients)), func(evs []event) bool {
		seen := map[int]bool{}
		for _, e := range evs {
			if e.Ev == "status" && e.Status.ID == tag {
				seen[e.Client] = true
			}
		}
		return len(seen) == len(clients)
	})
}

// all lists the clients 0 to n-1.
func all(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// sync waits until the agent has run every command sent so far.
func (a *agent) sync() {
	a.t.Helper()
	tag := fmt.Sprintf("sync-%d", time.Now().UnixNano())
	a.send(map[string]any{"cmd": "sync", "tag": tag})
	a.waitFor("sync", func(evs []event) bool {
		for _, e := range evs {
			if e.Ev == "sync" && e.Tag == tag {
				return true
			}
		}
		return false
	})
}

func (a *agent) connect(url string, n int) {
	a.t.Helper()
	a.send(map[string]any{"cmd": "connect", "url": url, "clients": n})
	a.waitFor(fmt.Sprintf("%d roslibjs clients to connect", n), func(evs []event) bool {
		for _, e := range evs {
			if e.Ev == "ready" && e.N == n {
				return true
			}
		}
		return false
	})
}

// messages returns, per client, the seq fields of the messages on topic.
func messages(evs []event, topic string) map[int][]int {
	out := map[int][]int{}
	for _, e := range evs {
		if e.Ev != "msg" || e.Topic != topic {
			continue
		}
		var m struct {
			Seq int `json:"seq"`
		}
		_ = json.Unmarshal(e.Msg, &m)
		out[e.Client] = append(out[e.Client], m.Seq)
	}
	return out
}

func statuses(evs []event, client int) []event {
	var out []event
	for _, e := range evs {
		if e.Ev == "status" && e.Client == client {
			out = append(out, e)
		}
	}
	return out
}

// proxy starts rostest and the sdr-caddy binary with sdr_ros in front of
// it; block is the body of the sdr_ros block. It returns the test server
// and the ws:// URL of the endpoint, once sdr_ros lets clients in.
func proxy(t *testing.T, block string) (*rostest.Server, string) {
	t.Helper()
	up, err := rostest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	return up, startProxy(t, up.URL(), block, true)
}

// startProxy runs the sdr-caddy binary with sdr_ros in front of upstream
// and returns the ws:// URL of the endpoint; with connected, once sdr_ros
// lets clients in (it answers 502 until its upstream connection is up),
// else once it answers HTTP.
func startProxy(t *testing.T, upstream, block string, connected bool) string {
	t.Helper()
	port := testenv.FreePort(t)
	url := fmt.Sprintf("ws://127.0.0.1:%d/ros/", port)
	caddyfile := fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
}
http://127.0.0.1:%d {
	handle /ros/* {
		sdr_ros %s {
			reconnect 20ms 300ms
%s
		}
	}
}
`, port, upstream, block)
	testenv.StartCaddy(t, caddyfile, nil, func() error {
		if connected {
			return letsClientsIn(url)
		}
		resp, err := http.Get("http" + strings.TrimPrefix(url, "ws"))
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return url
}

// letsClientsIn reports, as an error, why sdr_ros at url does not let a
// rosbridge client in now.
func letsClientsIn(url string) error {
	c, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		return fmt.Errorf("dialing %s: %w (%v)", url, err, resp)
	}
	return c.Close()
}

func waitUp(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.ForWithin(t, wait, what, cond)
}

func TestROSFiftyClientsOneUpstreamSubscription(t *testing.T) {
	up, url := proxy(t, "")
	a := startAgent(t)
	const n = 50
	a.connect(url, n)
	a.send(map[string]any{"cmd": "subscribe", "clients": "all", "topic": "/odom", "type": "nav_msgs/msg/Odometry"})
	a.handled(all(n)...)
	waitUp(t, "the upstream subscription", func() bool { c, _ := up.Subscribers("/odom"); return c == 1 })
	if got := up.Count("subscribe", "/odom"); got != 1 {
		t.Fatalf("upstream received %d subscribe ops for /odom from 50 clients, want 1", got)
	}
	sentBefore := up.Sent()
	for seq := 1; seq <= 5; seq++ {
		if c, err := up.Publish("/odom", map[string]any{"seq": seq}); err != nil || c != 1 {
			t.Fatalf("upstream publish went to %d connections (%v), want 1", c, err)
		}
	}
	if sent := up.Sent() - sentBefore; sent != 5 {
		t.Fatalf("upstream wrote %d messages for 5 publishes", sent)
	}
	a.waitFor("every client to receive seq 1..5", func(evs []event) bool {
		per := messages(evs, "/odom")
		for i := 0; i < n; i++ {
			s := per[i]
			if len(s) < 5 || s[len(s)-1] != 5 {
				return false
			}
		}
		return true
	})
	for i, s := range messages(a.snapshot(), "/odom") {
		if fmt.Sprint(s) != "[1 2 3 4 5]" {
			t.Fatalf("client %d received %v; want 1 2 3 4 5 in order, once each", i, s)
		}
	}
}

func TestROSUnsubscribeBookkeeping(t *testing.T) {
	up, url := proxy(t, "")
	a := startAgent(t)
	a.connect(url, 3)
	a.send(map[string]any{"cmd": "subscribe", "clients": "all", "topic": "/scan"})
	a.handled(0, 1, 2)
	waitUp(t, "subscription", func() bool { c, _ := up.Subscribers("/scan"); return c == 1 })
	for i := 0; i < 3; i++ {
		a.send(map[string]any{"cmd": "unsubscribe", "clients": []int{i}, "topic": "/scan"})
		if i < 2 {
			// A subscribe to a new topic after the unsubscribe goes up the
			// same connection: once it has arrived, a wrong unsubscribe
			// would have too.
			mark := fmt.Sprintf("/mark%d", i)
			a.send(map[string]any{"cmd": "subscribe", "clients": []int{i}, "topic": mark})
			if err := up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "subscribe", mark) == 1 }); err != nil {
				t.Fatal(err)
			}
			if got := up.Count("unsubscribe", "/scan"); got != 0 {
				t.Fatalf("upstream unsubscribed while %d clients still subscribe", 2-i)
			}
		}
	}
	if err := up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "unsubscribe", "/scan") == 1 }); err != nil {
		t.Fatalf("last unsubscribe did not remove the upstream subscription: %v", err)
	}
	if c, _ := up.Subscribers("/scan"); c != 0 {
		t.Fatalf("upstream still subscribed")
	}
	// subscribing again subscribes upstream again
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{1}, "topic": "/scan"})
	if err := up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "subscribe", "/scan") == 2 }); err != nil {
		t.Fatal(err)
	}
}

func countOps(ops []rostest.Op, op, name string) int {
	n := 0
	for _, o := range ops {
		if o.Op == op && (o.Topic == name || o.Service == name) {
			n++
		}
	}
	return n
}

func TestROSThrottleAndQueueLength(t *testing.T) {
	up, url := proxy(t, "")
	a := startAgent(t)
	a.connect(url, 3)
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{0}, "topic": "/odom"})
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{1}, "topic": "/odom", "throttle_rate": 60000})
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{2}, "topic": "/odom", "throttle_rate": 400, "queue_length": 2})
	a.send(map[string]any{"cmd": "subscribe", "clients": "all", "topic": "/mark"})
	a.handled(0, 1, 2)
	waitUp(t, "subscriptions", func() bool {
		c, _ := up.Subscribers("/odom")
		m, _ := up.Subscribers("/mark")
		return c == 1 && m == 1
	})
	began := time.Now()
	for seq := 1; seq <= 20; seq++ {
		_, _ = up.Publish("/odom", map[string]any{"seq": seq})
	}
	burst := time.Since(began) // on a loaded machine the burst may outlast a throttle period
	evs := a.waitFor("the plain and queued clients to get seq 20", func(evs []event) bool {
		per := messages(evs, "/odom")
		return len(per[0]) == 20 && len(per[2]) > 0 && per[2][len(per[2])-1] == 20
	})
	// A marker on another topic after the burst: what the proxy passed on
	// of the burst reached each client before it.
	_, _ = up.Publish("/mark", map[string]any{"seq": 1})
	evs = a.waitFor("the marker on every client", func(evs []event) bool { return len(messages(evs, "/mark")) == 3 })
	per := messages(evs, "/odom")
	if len(per[0]) != 20 {
		t.Fatalf("unthrottled client got %v", per[0])
	}
	if len(per[1]) != 1 || per[1][0] != 1 {
		t.Fatalf("client with throttle_rate 60000 got %v, want [1]", per[1])
	}
	q := per[2]
	if most := 3 + int(burst/(400*time.Millisecond)); len(q) > most || len(q) < 2 || q[len(q)-2] != 19 || q[len(q)-1] != 20 {
		t.Fatalf("client with throttle_rate 400, queue_length 2 got %v; want at most %d, ending 19 and 20", q, most)
	}
}

func TestROSUpstreamRestartRestoresSubscriptions(t *testing.T) {
	up, url := proxy(t, "publish /chatter")
	a := startAgent(t)
	a.connect(url, 2)
	a.send(map[string]any{"cmd": "subscribe", "clients": "all", "topic": "/odom"})
	a.send(map[string]any{"cmd": "publish", "client": 1, "topic": "/chatter", "type": "std_msgs/String", "msg": map[string]any{"data": "a"}})
	a.sync()
	if err := up.WaitFor(wait, func(ops []rostest.Op) bool {
		return countOps(ops, "subscribe", "/odom") == 1 && countOps(ops, "advertise", "/chatter") == 1
	}); err != nil {
		t.Fatal(err)
	}
	if err := up.Restart(500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := up.WaitFor(wait, func(ops []rostest.Op) bool {
		return countOps(ops, "subscribe", "/odom") == 2 && countOps(ops, "advertise", "/chatter") == 2
	}); err != nil {
		t.Fatalf("subscriptions and advertisements not restored: %v", err)
	}
	waitUp(t, "resubscribed", func() bool { c, _ := up.Subscribers("/odom"); return c == 1 })
	_, _ = up.Publish("/odom", map[string]any{"seq": 42})
	a.waitFor("both clients to get seq 42 after the restart", func(evs []event) bool {
		per := messages(evs, "/odom")
		return len(per[0]) == 1 && per[0][0] == 42 && len(per[1]) == 1 && per[1][0] == 42
	})
	for _, e := range a.snapshot() {
		if e.Ev == "close" {
			t.Fatalf("client %d was disconnected by an upstream restart", e.Client)
		}
	}
}

func TestROSServiceCallsRoutedByID(t *testing.T) {
	up, url := proxy(t, "services /echo /rosapi/*")
	// The calls overlap: the first ones wait upstream until the agent has
	// sent every call.
	sent := make(chan struct{})
	up.HandleService("/echo", func(ctx context.Context, args json.RawMessage) (any, bool) {
		select {
		case <-sent:
		case <-ctx.Done():
		}
		return args, true
	})
	a := startAgent(t)
	const n = 10
	a.connect(url, n)
	for i := 0; i < n; i++ {
		for k := 0; k < 3; k++ {
			a.send(map[string]any{"cmd": "call", "client": i, "service": "/echo", "args": map[string]any{"client": i, "k": k},
				"tag": fmt.Sprintf("%d/%d", i, k)})
		}
	}
	a.sync()
	close(sent)
	evs := a.waitFor("30 service responses", func(evs []event) bool {
		n := 0
		for _, e := range evs {
			if e.Ev == "response" {
				n++
			}
		}
		return n == 30
	})
	for _, e := range evs {
		if e.Ev != "response" {
			continue
		}
		var v struct{ Client, K int }
		if err := json.Unmarshal(e.Values, &v); err != nil || !e.OK || fmt.Sprintf("%d/%d", v.Client, v.K) != e.Tag || v.Client != e.Client {
			t.Fatalf("client %d call %s answered %s (ok %v): routed to the wrong caller", e.Client, e.Tag, e.Values, e.OK)
		}
	}
	// rosapi through the allowlist: roslib's getTopics helper shape
	a.send(map[string]any{"cmd": "call", "client": 0, "service": "/rosapi/topics", "tag": "topics"})
	a.waitFor("rosapi answer", func(evs []event) bool {
		for _, e := range evs {
			if e.Tag == "topics" && e.Ev == "response" && e.OK {
				return true
			}
		}
		return false
	})
}

func TestROSHungServiceDoesNotDelayTopics(t *testing.T) {
	up, url := proxy(t, "services /hang\n\t\t\tservice_timeout 4s\n\t\t\tpublish /chatter")
	up.HandleService("/hang", rostest.Hang)
	a := startAgent(t)
	a.connect(url, 2)
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{1}, "topic": "/odom"})
	a.sync()
	waitUp(t, "subscription", func() bool { c, _ := up.Subscribers("/odom"); return c == 1 })
	start := time.Now()
	a.send(map[string]any{"cmd": "call", "client": 0, "service": "/hang", "tag": "hang"})
	if err := up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "call_service", "/hang") == 1 }); err != nil {
		t.Fatal(err)
	}
	// while the call hangs: topic traffic both ways, on both clients
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{0}, "topic": "/chatter"})
	a.send(map[string]any{"cmd": "publish", "client": 0, "topic": "/chatter", "type": "std_msgs/String", "msg": map[string]any{"seq": 7}})
	for seq := 1; seq <= 10; seq++ {
		_, _ = up.Publish("/odom", map[string]any{"seq": seq})
		time.Sleep(20 * time.Millisecond) // the subject: topic traffic spread over the hung call
	}
	evs := a.waitFor("topic traffic during the hung call", func(evs []event) bool {
		return len(messages(evs, "/odom")[1]) == 10 && len(messages(evs, "/chatter")[0]) >= 1
	})
	topicsDone := time.Since(start)
	for _, e := range evs {
		if e.Ev == "response" {
			t.Fatalf("hung call answered before the topic traffic finished: %+v", e)
		}
	}
	evs = a.waitFor("the timeout answer", func(evs []event) bool {
		for _, e := range evs {
			if e.Ev == "response" && e.Tag == "hang" {
				return true
			}
		}
		return false
	})
	answered := time.Since(start)
	for _, e := range evs {
		if e.Ev == "response" && (e.OK || !strings.Contains(string(e.Values), "did not answer")) {
			t.Fatalf("hung call answered %+v; want result false with a timeout message", e)
		}
	}
	if answered < 3500*time.Millisecond || topicsDone > answered {
		t.Fatalf("timeout answered after %v, topics done after %v; want the 4s timeout to come last", answered, topicsDone)
	}
}

func TestROSAllowlistDenials(t *testing.T) {
	up, url := proxy(t, "subscribe /odom /tf*\n\t\t\tpublish /chatter\n\t\t\tservices /rosapi/topics")
	a := startAgent(t)
	a.connect(url, 1)
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{0}, "topic": "/secret/map"})
	a.send(map[string]any{"cmd": "publish", "client": 0, "topic": "/arm/cmd", "type": "std_msgs/Float64", "msg": map[string]any{"data": 1}})
	a.send(map[string]any{"cmd": "call", "client": 0, "service": "/rosapi/set_param", "args": map[string]any{"name": "x", "value": "1"}, "tag": "param"})
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{0}, "topic": "/tf_static"})
	evs := a.waitFor("three denials and the param call's failure", func(evs []event) bool {
		failed := false
		for _, e := range evs {
			if e.Ev == "response" && e.Tag == "param" && !e.OK {
				failed = true
			}
		}
		return failed && len(statuses(evs, 0)) >= 4 // subscribe, advertise, publish, call_service
	})
	var text []string
	for _, s := range statuses(evs, 0) {
		if s.Status.Level != "error" {
			t.Fatalf("denial status at level %q", s.Status.Level)
		}
		text = append(text, s.Status.Msg)
	}
	all := strings.Join(text, "\n")
	for _, want := range []string{"subscribe /secret/map refused", "advertise /arm/cmd refused", "publish on /arm/cmd refused", "call_service /rosapi/set_param refused"} {
		if !strings.Contains(all, want) {
			t.Errorf("no status saying %q in:\n%s", want, all)
		}
	}
	if err := up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "subscribe", "/tf_static") == 1 }); err != nil {
		t.Fatal(err)
	}
	for _, o := range up.Ops() {
		if o.Topic == "/secret/map" || o.Topic == "/arm/cmd" || o.Service == "/rosapi/set_param" {
			t.Fatalf("denied op reached the upstream: %s", o.Raw)
		}
	}
}

func TestROSMotionRefusedWithoutGate(t *testing.T) {
	// No sdr_nats app in this config: there is no video safety gate, so
	// /cmd_vel publishes are refused (the safe default).
	up, url := proxy(t, "publish /cmd_vel /chatter")
	a := startAgent(t)
	a.connect(url, 1)
	twist := map[string]any{"linear": map[string]any{"x": 0.5, "y": 0, "z": 0}, "angular": map[string]any{"x": 0, "y": 0, "z": 0.1}}
	a.send(map[string]any{"cmd": "publish", "client": 0, "topic": "/cmd_vel", "type": "geometry_msgs/Twist", "msg": twist})
	a.send(map[string]any{"cmd": "publish", "client": 0, "topic": "/chatter", "type": "std_msgs/String", "msg": map[string]any{"data": "hi"}})
	evs := a.waitFor("the motion refusal", func(evs []event) bool { return len(statuses(evs, 0)) >= 1 })
	s := statuses(evs, 0)[0].Status
	if s.Level != "error" || !strings.Contains(s.Msg, "publish on /cmd_vel refused") || !strings.HasPrefix(s.ID, "publish:/cmd_vel:") {
		t.Fatalf("status %+v", s)
	}
	if err := up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/chatter") == 1 }); err != nil {
		t.Fatal(err)
	}
	if got := up.Count("publish", "/cmd_vel"); got != 0 {
		t.Fatalf("%d /cmd_vel publishes reached the upstream without a gate", got)
	}
}

func TestROSFragmentsToRoslib(t *testing.T) {
	up, url := proxy(t, "")
	a := startAgent(t)
	a.connect(url, 1)
	// roslib has no fragment_size option on Topic: send the subscribe op
	// raw and let roslib's own fragment reassembly rebuild the message
	a.send(map[string]any{"cmd": "listen", "client": 0, "topic": "/big"})
	a.send(map[string]any{"cmd": "raw", "client": 0, "msg": map[string]any{"op": "subscribe", "id": "big1", "topic": "/big", "fragment_size": 100}})
	a.sync()
	waitUp(t, "subscription", func() bool { c, _ := up.Subscribers("/big"); return c == 1 })
	text := strings.Repeat("ünïcödé ✓ ", 200)
	_, _ = up.Publish("/big", map[string]any{"seq": 3, "text": text})
	evs := a.waitFor("the reassembled message", func(evs []event) bool { return len(messages(evs, "/big")[0]) == 1 })
	for _, e := range evs {
		if e.Ev == "msg" && e.Topic == "/big" {
			var m struct{ Text string }
			_ = json.Unmarshal(e.Msg, &m)
			if m.Text != text {
				t.Fatalf("roslib reassembled %d bytes, want %d", len(m.Text), len(text))
			}
		}
	}
}

func TestROSCompressedSubscriptionsToRoslib(t *testing.T) {
	up, url := proxy(t, "")
	a := startAgent(t)
	a.connect(url, 4)
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{0, 1}, "topic": "/odom", "compression": "cbor"})
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{2}, "topic": "/odom"})
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{3}, "topic": "/odom", "compression": "png"})
	a.handled(0, 1, 2, 3)
	// one upstream subscription per (topic, compression), each on a
	// connection of its own, as rosbridge_server merges compressions per
	// connection
	waitUp(t, "three upstream subscriptions", func() bool { c, _ := up.Subscribers("/odom"); return c == 3 })
	if got := up.Count("subscribe", "/odom"); got != 3 {
		t.Fatalf("%d upstream subscribes, want 3", got)
	}
	comps := map[string]int{}
	for _, o := range up.Ops() {
		if o.Op == "subscribe" && o.Topic == "/odom" {
			var m struct{ Compression string }
			_ = json.Unmarshal(o.Raw, &m)
			comps[m.Compression]++
		}
	}
	if comps["cbor"] != 1 || comps["png"] != 1 || comps["none"] != 1 {
		t.Fatalf("upstream subscribes by compression: %v", comps)
	}
	_, _ = up.Publish("/odom", map[string]any{"seq": 9, "pose": map[string]any{"x": 1.5}})
	a.waitFor("seq 9 decoded by roslib on all four clients (JSON, CBOR, PNG)", func(evs []event) bool {
		per := messages(evs, "/odom")
		for i := 0; i < 4; i++ {
			if s := per[i]; len(s) == 0 || s[len(s)-1] != 9 {
				return false
			}
		}
		return true
	})
}

func TestROSLatchedTopicReachesLateRoslibClient(t *testing.T) {
	up, url := proxy(t, "") // default latched_topics include /tf_static
	a := startAgent(t)
	a.connect(url, 2)
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{0}, "topic": "/tf_static"})
	a.sync()
	waitUp(t, "subscription", func() bool { c, _ := up.Subscribers("/tf_static"); return c == 1 })
	_, _ = up.Publish("/tf_static", map[string]any{"seq": 11})
	a.waitFor("the first client's message", func(evs []event) bool { return len(messages(evs, "/tf_static")[0]) == 1 })
	sent := up.Sent()
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{1}, "topic": "/tf_static"})
	a.waitFor("the latched message on the late client", func(evs []event) bool {
		s := messages(evs, "/tf_static")[1]
		return len(s) == 1 && s[0] == 11
	})
	if up.Sent() != sent || up.Count("subscribe", "/tf_static") != 1 {
		t.Fatalf("the late client cost upstream traffic: %d messages, %d subscribes", up.Sent()-sent, up.Count("subscribe", "/tf_static"))
	}
}

// With no allowlists sdr_ros lets every op through, as SDR_OS's edge
// proxied /ros/ raw to rosbridge: the SDR_OS client's gamepad topics
// (/controller/button_states, /controller/joystick_state, std_msgs/String)
// published with roslibjs reach the upstream.
func TestROSRoslibClientTopicsPassByDefault(t *testing.T) {
	up, url := proxy(t, "")
	a := startAgent(t)
	a.connect(url, 1)
	for _, topic := range []string{"/controller/button_states", "/controller/joystick_state"} {
		a.send(map[string]any{"cmd": "publish", "client": 0, "topic": topic, "type": "std_msgs/String", "msg": map[string]any{"data": `{"a":1}`}})
		if err := up.WaitFor(wait, func(ops []rostest.Op) bool {
			return countOps(ops, "advertise", topic) == 1 && countOps(ops, "publish", topic) == 1
		}); err != nil {
			t.Fatalf("roslibjs publish on %s did not reach the upstream: %v", topic, err)
		}
	}
	for _, s := range statuses(a.snapshot(), 0) {
		t.Errorf("status %+v", s.Status)
	}
}

// Without a running rosbridge_server roslibjs cannot connect (502, as the
// raw proxy answered), so the SDR_OS app shows ROS disconnected rather than
// connected to nothing; once rosbridge_server (rostest, its
// protocol-faithful stand-in) runs, roslibjs connects and subscribes.
func TestROSRoslibCannotConnectWithoutRosbridge(t *testing.T) {
	up, err := rostest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	up.Close() // rosbridge_server not started
	url := startProxy(t, up.URL(), "", false)
	a := startAgent(t)
	a.send(map[string]any{"cmd": "connect", "url": url, "clients": 1})
	evs := a.waitFor("roslibjs to fail to connect", func(evs []event) bool {
		for _, e := range evs {
			if e.Client == 0 && (e.Ev == "close" || e.Ev == "error") {
				return true
			}
		}
		return false
	})
	for _, e := range evs {
		if e.Ev == "connected" {
			t.Fatalf("roslibjs connected with no rosbridge_server behind sdr_ros")
		}
	}
	if err := up.Listen(); err != nil {
		t.Fatal(err)
	}
	waitUp(t, "sdr_ros to let clients in", func() bool { return letsClientsIn(url) == nil })
	a.connect(url, 1) // client 1
	a.send(map[string]any{"cmd": "subscribe", "clients": []int{1}, "topic": "/odom"})
	waitUp(t, "the upstream subscription", func() bool { c, _ := up.Subscribers("/odom"); return c == 1 })
	_, _ = up.Publish("/odom", map[string]any{"seq": 1})
	a.waitFor("the message on the connected client", func(evs []event) bool { return len(messages(evs, "/odom")[1]) == 1 })
}
