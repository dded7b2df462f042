package ros

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/rosbridge/rostest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestROSControlLease: with the control lease on, roslibjs /cmd_vel
// publishes reach rosbridge only from the client that called
// /sdr/take_control (a std_srvs/Trigger-style answer from sdr_ros, never
// sent upstream); the others get an error status naming the service. The
// lease is the stream's: its state goes out on NATS. When the holder's
// connection closes, control is released and another client takes it. The
// upstream is rostest, a protocol-faithful rosbridge v2 test server
// (rosbridge_server cannot run here).
func TestROSControlLease(t *testing.T) {
	ring := filepath.Join(t.TempDir(), "frames")
	startWriter(t, testenv.CaddyBin(t), ring)
	up, url, natsURL, admin := gatedProxy(t, ring, `		control {
			lease on
		}`)
	states := testenv.Collect(t, testenv.ConnectNATS(t, natsURL), "telemetry.control.lease")
	waitMetric(t, admin, `caddy_sdr_gate_armed{stream="cam"}`, "1") // the gate lets motion pass
	a := startAgent(t)
	a.connect(url, 2)
	drive := func(client int, x float64) {
		t.Helper()
		cmd := twist(x)
		cmd["client"] = client
		a.send(cmd)
	}
	refused := func(client int, what string) {
		t.Helper()
		a.waitFor(what, func(evs []event) bool {
			for _, s := range statuses(evs, client) {
				if s.Status.Level == "error" && strings.Contains(s.Status.Msg, "publish on /cmd_vel refused: not the controller; call /sdr/take_control first") {
					return true
				}
			}
			return false
		})
	}
	type trigger struct {
		Success bool   `json:"success"`
		Message string `json:"message"`
		Holder  string `json:"holder"`
		You     string `json:"you"`
	}
	call := func(client int, service, tag string) trigger {
		t.Helper()
		a.send(map[string]any{"cmd": "call", "client": client, "service": service, "type": "std_srvs/Trigger", "tag": tag})
		var v trigger
		a.waitFor("the answer to "+tag, func(evs []event) bool {
			for _, e := range evs {
				if e.Ev == "response" && e.Tag == tag {
					if !e.OK || json.Unmarshal(e.Values, &v) != nil {
						t.Fatalf("%s: ok %v, values %s", tag, e.OK, e.Values)
					}
					return true
				}
			}
			return false
		})
		return v
	}

	drive(0, 0.25)
	refused(0, "client 0's publish before anyone took control refused")
	take0 := call(0, "/sdr/take_control", "take0")
	if !take0.Success || take0.Holder != take0.You || take0.Message != "you have control" {
		t.Fatalf("client 0's take: %+v", take0)
	}
	testenv.ExpectMsg(t, states, "client 0's hold on NATS", testwait.Timeout(wait), func(m *nats.Msg) bool {
		return strings.Contains(string(m.Data), `"stream":"cam","held":true,"holder":"`+take0.You+`"`)
	})
	drive(1, 0.5)
	refused(1, "client 1's publish refused")
	if take1 := call(1, "/sdr/take_control", "take1"); take1.Success || take1.Holder != take0.You || take1.You == take0.You {
		t.Fatalf("client 1's take while client 0 holds control: %+v", take1)
	}
	drive(0, 0.75)
	if err := up.WaitFor(testwait.Timeout(wait), func(ops []rostest.Op) bool { return moving(ops, "0.75") == 1 }); err != nil {
		t.Fatalf("the holder's /cmd_vel did not reach rosbridge: %v", err)
	}

	// client 0 leaves: control is released, client 1 takes it and drives
	a.send(map[string]any{"cmd": "close", "clients": []int{0}})
	testenv.ExpectMsg(t, states, "the release when client 0 left", testwait.Timeout(wait), func(m *nats.Msg) bool {
		return string(m.Data) == `{"stream":"cam","held":false}`
	})
	if take := call(1, "/sdr/take_control", "take2"); !take.Success {
		t.Fatalf("client 1's take after client 0 left: %+v", take)
	}
	drive(1, 0.5)
	if err := up.WaitFor(testwait.Timeout(wait), func(ops []rostest.Op) bool { return moving(ops, "0.5") == 1 }); err != nil {
		t.Fatalf("client 1's /cmd_vel after it took control did not reach rosbridge: %v", err)
	}
	if rel := call(1, "/sdr/release_control", "release"); !rel.Success || rel.Message != "control released" {
		t.Fatalf("client 1's release: %+v", rel)
	}
	ops := up.Ops()
	for _, o := range ops {
		if o.Op == "call_service" {
			t.Errorf("a control service reached rosbridge: %s", o.Raw)
		}
	}
	if n := moving(ops, "0.25"); n != 0 {
		t.Errorf("%d publishes of a client without control reached rosbridge", n)
	}
	waitMetric(t, admin, `caddy_sdr_ros_denials_total{kind="not_controller"}`, "2")
}
