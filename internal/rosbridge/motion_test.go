package rosbridge

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
)

// Armed: the switched test gate stands for a gate that has seen video.
func (g *testGate) Armed() bool { return true }

// unarmedGate is a testGate whose video has not delivered a frame until the
// test arms it; it counts how often it was asked whether it is armed.
type unarmedGate struct {
	testGate
	armed      atomic.Bool
	armedAsked atomic.Int64
}

func (g *unarmedGate) Armed() bool {
	g.armedAsked.Add(1)
	return g.armed.Load()
}

// Before the gate's video has delivered a frame, motion publishes pass
// unchanged and the gate is never asked to judge them (Allow has side
// effects before arming: it would publish HOLD or ESTOP on NATS). The topic
// counts as driven, so that once the gate is armed and finds the video
// stale, the watcher stops the robot without waiting for a publish.
func TestMotionBeforeArmingPasses(t *testing.T) {
	t.Parallel()
	gate := &unarmedGate{}
	gate.stale.Store(true) // asked, the gate would refuse
	f := start(t, func(o *Options) { o.Gate = gate })
	c := f.dial()
	c.send(map[string]any{"op": "advertise", "id": "a", "topic": "/cmd_vel", "type": "geometry_msgs/Twist"})
	for _, x := range []float64{0.5, 0.6} {
		c.send(map[string]any{"op": "publish", "id": fmt.Sprintf("p%g", x), "topic": "/cmd_vel",
			"msg": map[string]any{"linear": map[string]any{"x": x, "y": 0, "z": 0}, "angular": map[string]any{"x": 0, "y": 0, "z": 0}}})
	}
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/cmd_vel") == 2 }); err != nil {
		t.Fatalf("motion publishes before arming did not pass: %v", err)
	}
	for _, o := range f.up.Ops() {
		if o.Op == "publish" && o.Topic == "/cmd_vel" && !strings.Contains(string(o.Raw), `"x":0.5`) && !strings.Contains(string(o.Raw), `"x":0.6`) {
			t.Fatalf("publish changed on its way upstream: %s", o.Raw)
		}
	}
	// The watcher runs while the topic is driven: two publishes and at
	// least two of its rounds have asked whether the gate is armed.
	f.eventually("the motion watcher asking the unarmed gate", func() bool { return gate.armedAsked.Load() >= 4 })
	if n := gate.asked.Load(); n != 0 {
		t.Fatalf("the gate was asked to judge %d motion publishes before it was armed", n)
	}
	if z := zeroTwists(f.up.Ops()); z != 0 {
		t.Fatalf("%d zero twists before arming", z)
	}

	// Armed with stale video: the watcher stops the driven topic at once.
	gate.armed.Store(true)
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return zeroTwists(ops) == 1 }); err != nil {
		t.Fatalf("no zero twist once the gate was armed with stale video: %v", err)
	}
	c.send(map[string]any{"op": "publish", "id": "p0.7", "topic": "/cmd_vel",
		"msg": map[string]any{"linear": map[string]any{"x": 0.7, "y": 0, "z": 0}, "angular": map[string]any{"x": 0, "y": 0, "z": 0}}})
	if s := c.next("status"); s["level"] != "warning" || s["id"] != "p0.7" {
		t.Fatalf("publish on an armed, closed gate: status %v, want a warning", s)
	}
}
