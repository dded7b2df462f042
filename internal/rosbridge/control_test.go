package rosbridge

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// TestMotionNeedsTheControlLease: with a control lease in force, a motion
// publish of a client that did not take control is refused with a status
// and never reaches rosbridge; /sdr/take_control and /sdr/release_control
// are answered by sdr_ros (Trigger-style values, never sent upstream);
// the holder's publishes pass; closing the holder's connection releases
// control. Other topics are not the lease's business.
func TestMotionNeedsTheControlLease(t *testing.T) {
	t.Parallel()
	metrics := NewMetrics()
	f := start(t, func(o *Options) { o.Gate = &testGate{}; o.Metrics = metrics })
	states := make(chan string, 16)
	l, err := lease.New(lease.Config{Stream: "default"}, func(_ string, p []byte) error {
		states <- string(p)
		return nil
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	f.mux.SetLease(f, l)
	twist := func(id string, x float64) map[string]any {
		return map[string]any{"op": "publish", "id": id, "topic": "/cmd_vel",
			"msg": map[string]any{"linear": map[string]any{"x": x, "y": 0, "z": 0}, "angular": map[string]any{"x": 0, "y": 0, "z": 0}}}
	}
	call := func(c *tclient, service, id string) map[string]any {
		t.Helper()
		c.send(map[string]any{"op": "call_service", "id": id, "service": service})
		r := c.next("service_response")
		if r["id"] != id || r["service"] != service || r["result"] != true {
			t.Fatalf("%s: %v", service, r)
		}
		return r["values"].(map[string]any)
	}
	a, b := f.dial(), f.dial()

	// Nobody holds control yet: A's motion is refused too.
	a.send(twist("a0", 0.1))
	if s := a.next("status"); s["level"] != "error" || s["id"] != "a0" || !strings.Contains(s["msg"].(string), "not the controller") ||
		!strings.Contains(s["msg"].(string), ServiceTakeControl) {
		t.Fatalf("motion before any take: %v", s)
	}
	v := call(a, ServiceTakeControl, "t1")
	if v["success"] != true || v["holder"] != v["you"] || v["message"] != "you have control" {
		t.Fatalf("A's take: %v", v)
	}
	aID := v["you"].(string)
	if s := testwait.Recv(t, states, "the state after A's take"); !strings.Contains(s, `"held":true,"holder":"`+aID+`"`) {
		t.Fatalf("state after A's take: %s", s)
	}
	v = call(b, ServiceTakeControl, "t2")
	if v["success"] != false || v["holder"] != aID || v["you"] == aID || v["message"] != "control held by "+aID {
		t.Fatalf("B's take while A holds: %v", v)
	}
	if v := call(b, ServiceReleaseControl, "r1"); v["success"] != false || v["message"] != lease.NotController {
		t.Fatalf("B's release of A's control: %v", v)
	}
	b.send(twist("b1", 0.9))
	if s := b.next("status"); s["id"] != "b1" || !strings.Contains(s["msg"].(string), "publish on /cmd_vel refused: not the controller") {
		t.Fatalf("viewer's motion: %v", s)
	}
	// Other topics pass for anyone.
	b.send(map[string]any{"op": "publish", "id": "c", "topic": "/chatter", "msg": map[string]any{"data": "hi"}})
	a.send(twist("a1", 0.5))
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool {
		return countOps(ops, "publish", "/cmd_vel") == 1 && countOps(ops, "publish", "/chatter") == 1
	}); err != nil {
		t.Fatal(err)
	}
	for _, o := range f.up.Ops() {
		if o.Op == "call_service" || (o.Topic == "/cmd_vel" && !strings.Contains(string(o.Raw), "0.5")) {
			t.Fatalf("reached rosbridge: %s", o.Raw)
		}
	}
	var m dto.Metric
	if err := metrics.Denials.WithLabelValues("not_controller").Write(&m); err != nil || m.GetCounter().GetValue() != 2 {
		t.Errorf("not_controller denials: %v, want 2", m.GetCounter().GetValue())
	}

	// A leaves: control is released, B takes it and drives.
	_ = a.conn.Close()
	if s := testwait.Recv(t, states, "the state after A left"); s != `{"stream":"default","held":false}` {
		t.Fatalf("state after A left: %s", s)
	}
	if v := call(b, ServiceTakeControl, "t3"); v["success"] != true {
		t.Fatalf("B's take after A left: %v", v)
	}
	b.send(twist("b2", 0.7))
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/cmd_vel") == 2 }); err != nil {
		t.Fatal(err)
	}
	if v := call(b, ServiceReleaseControl, "r2"); v["success"] != true || v["message"] != "control released" {
		t.Fatalf("B's release: %v", v)
	}

	// The lease off again (a config without one): motion passes as before,
	// and the control services are ordinary names (refused here by the
	// services allowlist).
	f.mux.SetLease(f, nil)
	b.send(twist("b3", 0.3))
	if err := f.up.WaitFor(wait, func(ops []rostest.Op) bool { return countOps(ops, "publish", "/cmd_vel") == 3 }); err != nil {
		t.Fatal(err)
	}
	b.send(map[string]any{"op": "call_service", "id": "t4", "service": ServiceTakeControl})
	if r := b.next("service_response"); r["result"] != false || !strings.Contains(fmt.Sprint(r["values"]), "allowlist") {
		raw, _ := json.Marshal(r)
		t.Fatalf("take_control without a lease: %s", raw)
	}
}
