package ros

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestROSCmdVelGatedByVideo runs the whole safety path in one binary: a test
// source writes JPEG frames into a ring, sdr_stream reads it as stream
// "cam", the sdr_nats app (embedded nats-server) keeps that stream's safety
// gate, and sdr_ros lets roslibjs /cmd_vel publishes through only while the
// video is fresh. When the writer stops, the proxy publishes one zero Twist
// upstream as soon as the gate holds (the robot was being driven), later
// publishes are dropped with a status warning, and no second zero Twist
// follows in the same episode; when the video returns, publishes pass.
func TestROSCmdVelGatedByVideo(t *testing.T) {
	up, err := rostest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	dir := t.TempDir()
	ring := filepath.Join(dir, "frames")
	bin := testenv.CaddyBin(t)

	writer := startWriter(t, bin, ring)
	port := testenv.FreePort(t)
	caddyfile := fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	sdr_nats {
		embedded {
			listen 127.0.0.1:%d
		}
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
`, testenv.FreePort(t), port, ring, up.URL())
	testenv.StartCaddy(t, caddyfile, nil, func() error {
		if up.Connections() < 1 {
			return fmt.Errorf("sdr_ros has not connected upstream yet")
		}
		return nil
	})
	a := startAgent(t)
	a.connect(fmt.Sprintf("ws://127.0.0.1:%d/ros/", port), 1)
	twist := func(x float64) map[string]any {
		return map[string]any{"cmd": "publish", "client": 0, "topic": "/cmd_vel", "type": "geometry_msgs/Twist",
			"msg": map[string]any{"linear": map[string]any{"x": x, "y": 0, "z": 0}, "angular": map[string]any{"x": 0, "y": 0, "z": 0}}}
	}
	moving := func(ops []rostest.Op) int {
		n := 0
		for _, o := range ops {
			if o.Op == "publish" && o.Topic == "/cmd_vel" && strings.Contains(string(o.Raw), `"x":0.25`) {
				n++
			}
		}
		return n
	}

	// video flows: publishes pass (the ring reader needs a moment to see
	// the first frames, so publish until one goes through)
	deadline := time.Now().Add(wait)
	for moving(up.Ops()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no /cmd_vel publish passed while video flowed")
		}
		a.send(twist(0.25))
		time.Sleep(100 * time.Millisecond)
	}
	zeroBefore := zeroTwists(up.Ops())

	// video stops: the robot was driven a moment ago, so the proxy stops
	// it as soon as the gate holds, without waiting for another publish
	stopWriter(t, writer)
	stopped := time.Now()
	if err := up.WaitFor(wait, func(ops []rostest.Op) bool { return zeroTwists(ops) == zeroBefore+1 }); err != nil {
		t.Fatalf("no zero twist upstream when the gate closed: %v", err)
	}
	t.Logf("zero twist %v after the writer stopped (HOLD threshold 1 s)", time.Since(stopped).Round(time.Millisecond))
	passedBefore := moving(up.Ops())
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
	time.Sleep(300 * time.Millisecond)
	ops := up.Ops()
	if z := zeroTwists(ops); z != zeroBefore+1 {
		t.Fatalf("%d zero twists in one gated episode, want 1", z-zeroBefore)
	}
	if moving(ops) != passedBefore {
		t.Fatal("a /cmd_vel publish passed while the video was stale")
	}
	for _, o := range ops {
		if o.Op == "publish" && strings.Contains(string(o.Raw), `"x":0.5`) {
			t.Fatalf("gated publish reached the upstream: %s", o.Raw)
		}
	}

	// video back: publishes pass again
	startWriter(t, bin, ring)
	resumed := func(ops []rostest.Op) bool {
		for _, o := range ops {
			if o.Op == "publish" && strings.Contains(string(o.Raw), `"x":0.75`) {
				return true
			}
		}
		return false
	}
	deadline = time.Now().Add(wait)
	for !resumed(up.Ops()) {
		if time.Now().After(deadline) {
			t.Fatalf("no /cmd_vel publish passed after the video came back")
		}
		a.send(twist(0.75))
		time.Sleep(100 * time.Millisecond)
	}
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

func startWriter(t *testing.T, bin, ring string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "sdr-testsrc", "--codec", "jpeg", "--path", ring, "--resolution", "320x240", "--fps", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("test source output:\n%s", out.String())
		}
	})
	return cmd
}

func stopWriter(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}
