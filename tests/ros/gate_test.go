package ros

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// gatedProxy runs one binary with the whole safety path: sdr_stream reads
// the ring as stream "cam", the sdr_nats app (embedded nats-server) keeps
// that stream's safety gate, and sdr_ros sends /cmd_vel publishes upstream
// through it. The upstream is rostest, a protocol-faithful rosbridge v2
// test server (rosbridge_server cannot run here). It returns the upstream,
// the /ros/ URL, the NATS URL and the admin address.
func gatedProxy(t *testing.T, ring, gateBlock string) (*rostest.Server, string, string, string) {
	t.Helper()
	up, err := rostest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	natsPort, port := testenv.FreePort(t), testenv.FreePort(t)
	caddyfile := fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	sdr_nats {
		embedded {
			listen 127.0.0.1:%d
		}
%s
	}
}
http://127.0.0.1:%d {
	handle /stream/* {
		sdr_stream cam {
			source shm %s
		}
	}
	handle /ros/* {
		sdr_ros %s {
			publish /cmd_vel
			gate_stream cam
			reconnect 20ms 300ms
		}
	}
}
`, natsPort, gateBlock, port, ring, up.URL())
	c := testenv.StartCaddy(t, caddyfile, nil, func() error {
		if up.Connections() < 1 {
			return fmt.Errorf("sdr_ros has not connected upstream yet")
		}
		return nil
	})
	return up, fmt.Sprintf("ws://127.0.0.1:%d/ros/", port), fmt.Sprintf("nats://127.0.0.1:%d", natsPort), c.AdminAddr
}

func twist(x float64) map[string]any {
	return map[string]any{"cmd": "publish", "client": 0, "topic": "/cmd_vel", "type": "geometry_msgs/Twist",
		"msg": map[string]any{"linear": map[string]any{"x": x, "y": 0, "z": 0}, "angular": map[string]any{"x": 0, "y": 0, "z": 0}}}
}

// moving counts the /cmd_vel publishes upstream with linear.x = x.
func moving(ops []rostest.Op, x string) int {
	n := 0
	for _, o := range ops {
		if o.Op == "publish" && o.Topic == "/cmd_vel" && strings.Contains(string(o.Raw), `"x":`+x) {
			n++
		}
	}
	return n
}

func waitMetric(t *testing.T, admin, name, want string) {
	t.Helper()
	testwait.For(t, fmt.Sprintf("metric %s = %s", name, want), func() bool {
		samples, err := testenv.Metrics(admin)
		return err == nil && samples[name] == want
	})
}

// TestROSCmdVelGatedByVideo: sdr_ros lets roslibjs /cmd_vel publishes
// through only while the video is fresh. When the writer stops, the proxy
// publishes one zero Twist upstream as soon as the gate holds (the robot was
// being driven), later publishes are dropped with a status warning, and no
// second zero Twist follows in the same episode; when the video returns,
// publishes pass.
func TestROSCmdVelGatedByVideo(t *testing.T) {
	dir := t.TempDir()
	ring := filepath.Join(dir, "frames")
	bin := testenv.CaddyBin(t)
	writer := startWriter(t, bin, ring)
	up, url, natsURL, admin := gatedProxy(t, ring, "")
	gateMsgs := testenv.Collect(t, testenv.ConnectNATS(t, natsURL), "telemetry.safety.video_gate")
	a := startAgent(t)
	a.connect(url, 1)

	// video flows: the first frame arms the gate, publishes pass
	waitMetric(t, admin, `caddy_sdr_gate_armed{stream="cam"}`, "1")
	a.send(twist(0.25))
	if err := up.WaitFor(testwait.Timeout(wait), func(ops []rostest.Op) bool { return moving(ops, "0.25") == 1 }); err != nil {
		t.Fatalf("no /cmd_vel publish passed while video flowed: %v", err)
	}
	zeroBefore := zeroTwists(up.Ops())

	// video stops: the robot was driven a moment ago, so the proxy stops
	// it as soon as the gate holds, without waiting for another publish
	stopWriter(t, writer)
	stopped := time.Now()
	if err := up.WaitFor(testwait.Timeout(wait), func(ops []rostest.Op) bool { return zeroTwists(ops) == zeroBefore+1 }); err != nil {
		t.Fatalf("no zero twist upstream when the gate closed: %v", err)
	}
	t.Logf("zero twist %v after the writer stopped (HOLD threshold 1 s)", time.Since(stopped).Round(time.Millisecond))
	for i := 0; i < 5; i++ {
		a.send(twist(0.5))
	}
	evs := a.waitFor("five gate warnings", func(evs []event) bool {
		n := 0
		for _, s := range statuses(evs, 0) {
			if s.Status.Level == "warning" && strings.Contains(s.Status.Msg, "safety gate") {
				n++
			}
		}
		return n >= 5
	})
	for _, s := range statuses(evs, 0) {
		if s.Status.Level == "warning" && !strings.HasPrefix(s.Status.ID, "publish:/cmd_vel:") {
			t.Fatalf("gate warning without the publish's id: %+v", s.Status)
		}
	}
	// The gate repeats its HOLD state once a second: when the next repeat
	// arrives, the proxy's motion watcher (every 100 ms) has asked the
	// closed gate many times, and a second zero twist would be upstream.
	for len(gateMsgs) > 0 {
		<-gateMsgs
	}
	testenv.ExpectMsg(t, gateMsgs, "the gate's HOLD repeat", testwait.Timeout(wait), func(m *nats.Msg) bool {
		return strings.Contains(string(m.Data), `"mode":"HOLD"`)
	})
	ops := up.Ops()
	if z := zeroTwists(ops); z != zeroBefore+1 {
		t.Fatalf("%d zero twists in one gated episode, want 1", z-zeroBefore)
	}
	if n := moving(ops, "0.5"); n != 0 {
		t.Fatalf("%d gated /cmd_vel publishes reached the upstream", n)
	}

	// video back: publishes pass again
	startWriter(t, bin, ring)
	waitMetric(t, admin, `caddy_sdr_gate_mode{stream="cam"}`, "0")
	a.send(twist(0.75))
	if err := up.WaitFor(testwait.Timeout(wait), func(ops []rostest.Op) bool { return moving(ops, "0.75") == 1 }); err != nil {
		t.Fatalf("no /cmd_vel publish passed after the video came back: %v", err)
	}
}

// TestROSCmdVelBeforeAnyVideo is the dev profile: no simulator, so there is
// never video, and the old stack never gated ROS publishes. /cmd_vel
// publishes reach the upstream unchanged, long after the gate's HOLD and
// ESTOP thresholds, while the same gate answers motion commands on NATS
// with HOLD (it is not armed) and publishes no stop of its own: the ROS
// publishes did not make it judge them.
func TestROSCmdVelBeforeAnyVideo(t *testing.T) {
	ring := filepath.Join(t.TempDir(), "frames") // no writer
	up, url, natsURL, admin := gatedProxy(t, ring, `		gate {
			hold 100ms
			estop 500ms
		}`)
	nc := testenv.ConnectNATS(t, natsURL)
	gateMsgs := testenv.Collect(t, nc, "telemetry.safety.video_gate")
	cmds := testenv.Collect(t, nc, "command.genesis.>")
	cmd := `{"action":"set_cmd_vel","cmd_seq":1,"data":{"linear_x":1.0,"linear_y":0,"angular_z":0}}`
	// answered waits for the gate's answer to one motion command on NATS
	// (at most one a second), then checks that the gate published nothing
	// else before it.
	answered := func(what string) {
		t.Helper()
		if err := nc.Publish("command.genesis.set_cmd_vel", []byte(cmd)); err != nil {
			t.Fatal(err)
		}
		m := testwait.Recv(t, gateMsgs, what)
		if !strings.Contains(string(m.Data), `"gated":true,"mode":"HOLD"`) {
			t.Fatalf("%s: %s, want gated HOLD", what, m.Data)
		}
		for len(cmds) > 0 {
			if c := <-cmds; string(c.Data) != cmd {
				t.Fatalf("with no video, the gate published %s %s", c.Subject, c.Data)
			}
		}
	}
	a := startAgent(t)
	a.connect(url, 1)
	// Two answers a second apart: the gate is past its ESTOP threshold.
	answered("the gate's answer past its HOLD threshold")
	answered("the gate's answer past its ESTOP threshold")

	for i := 0; i < 3; i++ {
		a.send(twist(0.25))
	}
	if err := up.WaitFor(testwait.Timeout(wait), func(ops []rostest.Op) bool { return moving(ops, "0.25") == 3 }); err != nil {
		t.Fatalf("/cmd_vel publishes before any video did not reach the upstream: %v", err)
	}
	want := twist(0.25)["msg"]
	for _, o := range up.Ops() {
		var got struct {
			Msg any `json:"msg"`
		}
		if o.Op == "publish" && o.Topic == "/cmd_vel" && (json.Unmarshal(o.Raw, &got) != nil || fmt.Sprint(got.Msg) != fmt.Sprint(want)) {
			t.Fatalf("publish changed on its way upstream: %s", o.Raw)
		}
	}
	for _, s := range statuses(a.snapshot(), 0) {
		if s.Status.Level != "" {
			t.Fatalf("status for a publish before any video: %+v", s.Status)
		}
	}
	// A stop the gate published for the ROS publishes would come before
	// its next answer.
	answered("the gate's answer after the ROS publishes")
	if z := zeroTwists(up.Ops()); z != 0 {
		t.Fatalf("%d zero twists upstream with no video", z)
	}
	waitMetric(t, admin, `caddy_sdr_gate_armed{stream="cam"}`, "0")
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

// startWriter runs `caddy sdr-testsrc` writing JPEG frames into ring until
// the test ends.
func startWriter(t *testing.T, bin, ring string) *harness.Process {
	t.Helper()
	return testenv.Start(t, "test source",
		exec.Command(bin, "sdr-testsrc", "--codec", "jpeg", "--path", ring, "--resolution", "320x240", "--fps", "30"), 5*time.Second)
}

// stopWriter stops the test source: video stops.
func stopWriter(t *testing.T, p *harness.Process) {
	t.Helper()
	if err := p.Stop(testwait.Timeout(5 * time.Second)); err != nil {
		t.Log(err)
	}
}
