package nats

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// inbox reads a wsClient's telemetry without losing what a wait skips:
// messages that do not match wait in pending for a later wait.
type inbox struct {
	w       *wsClient
	pending [][2]string
}

// await returns the first message on subject that ok accepts, from those
// set aside before or those still to come; the others are set aside.
func (in *inbox) await(t *testing.T, subject string, ok func(string) bool, timeout time.Duration) string {
	t.Helper()
	return in.find(t, subject, ok, timeout, false)
}

// find is await; with states, the messages on subject are states in order:
// the one found is newer than every state found before, so the older ones
// still set aside are dropped once it is found. Else a later wait could
// take an old state for a new one (B's own idle release for C's).
func (in *inbox) find(t *testing.T, subject string, ok func(string) bool, timeout time.Duration, states bool) string {
	t.Helper()
	// take removes what is set aside on subject up to index end, or only
	// the entry at end when the messages are not states.
	take := func(end int) {
		kept := in.pending[:0]
		for i, m := range in.pending {
			if i == end || (states && i < end && m[0] == subject) {
				continue
			}
			kept = append(kept, m)
		}
		in.pending = kept
	}
	for i, m := range in.pending {
		if m[0] == subject && ok(m[1]) {
			take(i)
			return m[1]
		}
	}
	deadline := testwait.After(timeout)
	for {
		select {
		case m := <-in.w.telemetry:
			if m[0] == subject && ok(m[1]) {
				in.pending = append(in.pending, m)
				take(len(in.pending) - 1)
				return m[1]
			}
			in.pending = append(in.pending, m)
		case <-deadline:
			t.Fatalf("no telemetry on %s within %s; got meanwhile %q", subject, testwait.Timeout(timeout), in.pending)
			return ""
		}
	}
}

// leaseState is a message on telemetry.control.lease.
type leaseState struct {
	Stream  string `json:"stream"`
	Held    bool   `json:"held"`
	Holder  string `json:"holder"`
	SinceMS int64  `json:"since_ms"`
	You     string `json:"you"`
}

func (in *inbox) lease(t *testing.T, what string, ok func(leaseState) bool) leaseState {
	t.Helper()
	var s leaseState
	in.find(t, "telemetry.control.lease", func(p string) bool {
		s = leaseState{}
		return json.Unmarshal([]byte(p), &s) == nil && ok(s)
	}, 10*time.Second, true)
	return s
}

// ack is a message on telemetry.command.ack.
type ack struct {
	Action string `json:"action"`
	CmdSeq int    `json:"cmd_seq"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Holder string `json:"holder"`
}

func (in *inbox) ack(t *testing.T, seq int) ack {
	t.Helper()
	var a ack
	in.await(t, "telemetry.command.ack", func(p string) bool {
		a = ack{}
		return json.Unmarshal([]byte(p), &a) == nil && a.CmdSeq == seq
	}, 10*time.Second)
	return a
}

// TestControlLeaseLive runs the binary between a real nats-server and a
// ring writer (fresh video: the gate lets motion pass), with the control
// lease on. A on /stream/ws and B on /nats/ws share the default stream's
// lease. Each learns its id and the lease's state when it joins; A takes
// control; B's set_cmd_vel and estop_clear are answered "not the
// controller" and reach no NATS subscriber, B's take_control is refused
// naming A, B's estop is published; A's set_cmd_vel is published. A
// closes: everyone sees the lease released, and B takes it. B then sends
// nothing: the lease is released after the idle timeout, not before. C on
// /nats/ws takes it and closes: released again.
func TestControlLeaseLive(t *testing.T) {
	natsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	ns := startNATSServer(t, natsPort)
	rw := shmringtest.NewWriter(t, "", 1<<20)
	rw.Start(t, simulator)
	const idle = 4 * time.Second
	caddy := testenv.StartCaddy(t, fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	sdr_nats {
		url %s
		command_rate off
		control {
			lease on
			idle %s
		}
	}
}

http://127.0.0.1:%d {
	route /stream/ws {
		sdr_stream {
			source shm %s 1MiB
		}
	}
	route /nats/ws {
		sdr_nats
	}
}
`, ns.URL(), idle, httpPort, rw.Path), nil, nil)
	admin := caddy.AdminAddr
	waitMetric(t, admin, "caddy_sdr_nats_connected", "1", 10*time.Second)
	waitMetric(t, admin, `caddy_sdr_gate_armed{stream="default"}`, "1", 10*time.Second)
	sim := testenv.ConnectNATS(t, ns.URL())
	cmds := testenv.Collect(t, sim, "command.genesis.>")
	states := testenv.Collect(t, sim, "telemetry.control.lease")

	a := &inbox{w: dialWS(t, fmt.Sprintf("ws://127.0.0.1:%d/stream/ws", httpPort))}
	b := &inbox{w: dialWS(t, fmt.Sprintf("ws://127.0.0.1:%d/nats/ws", httpPort))}
	aID := a.lease(t, "A's welcome", func(s leaseState) bool { return s.You != "" }).You
	welcomeB := b.lease(t, "B's welcome", func(s leaseState) bool { return s.You != "" })
	if welcomeB.Held || welcomeB.Stream != "default" || welcomeB.You == aID {
		t.Fatalf("B's welcome %+v (A is %s)", welcomeB, aID)
	}
	bID := welcomeB.You

	a.w.send(t, `{"action":"take_control","cmd_seq":1}`)
	if got := a.ack(t, 1); got.Status != "ok" || got.Holder != aID || got.Detail != "you have control" {
		t.Fatalf("A's take_control: %+v", got)
	}
	// Everyone, on every site, learns it through NATS.
	b.lease(t, "A's hold seen by B", func(s leaseState) bool { return s.Held && s.Holder == aID && s.You == "" && s.SinceMS > 0 })
	testenv.ExpectMsg(t, states, "A's hold on NATS", 10*time.Second, func(m *nats.Msg) bool {
		return strings.Contains(string(m.Data), `"held":true,"holder":"`+aID+`"`)
	})
	waitMetric(t, admin, `caddy_sdr_control_lease_held{stream="default"}`, "1", 10*time.Second)

	b.w.send(t, `{"action":"set_cmd_vel","cmd_seq":2,"data":{"linear_x":9,"who":"B"}}`)
	b.w.send(t, `{"action":"estop_clear","cmd_seq":3,"data":{"who":"B"}}`)
	b.w.send(t, `{"action":"take_control","cmd_seq":4}`)
	for seq, want := range map[int]ack{
		2: {Action: "set_cmd_vel", Status: "rejected", Detail: "not the controller"},
		3: {Action: "estop_clear", Status: "rejected", Detail: "not the controller"},
		4: {Action: "take_control", Status: "rejected", Detail: "control held by " + aID, Holder: aID},
	} {
		want.CmdSeq = seq
		if got := b.ack(t, seq); got != want {
			t.Errorf("B's command %d: %+v, want %+v", seq, got, want)
		}
	}
	estopB := `{"action":"estop","cmd_seq":5,"data":{"reason":"viewer","who":"B"}}`
	b.w.send(t, estopB)
	driveA := `{"action":"set_cmd_vel","cmd_seq":6,"data":{"linear_x":0.5,"who":"A"}}`
	// B's commands went out on the process's one NATS connection, in
	// order: once its estop has arrived, its refused ones would have too.
	notB := func(m *nats.Msg) {
		if strings.Contains(string(m.Data), `"who":"B"`) && !strings.HasSuffix(m.Subject, ".estop") {
			t.Errorf("a viewer's command reached NATS: %s %s", m.Subject, m.Data)
		}
	}
	testenv.ExpectMsg(t, cmds, "B's estop", 10*time.Second, func(m *nats.Msg) bool {
		notB(m)
		return m.Subject == "command.genesis.estop" && string(m.Data) == estopB
	})
	a.w.send(t, driveA)
	testenv.ExpectMsg(t, cmds, "A's set_cmd_vel", 10*time.Second, func(m *nats.Msg) bool {
		notB(m)
		return m.Subject == "command.genesis.set_cmd_vel" && string(m.Data) == driveA
	})

	// A leaves: the lease is released for everyone; B takes it and drives.
	_ = a.w.c.Close()
	b.lease(t, "the release when A left", func(s leaseState) bool { return !s.Held })
	b.w.send(t, `{"action":"take_control","cmd_seq":7}`)
	if got := b.ack(t, 7); got.Status != "ok" || got.Holder != bID {
		t.Fatalf("B's take_control after A left: %+v", got)
	}
	driveB := `{"action":"set_cmd_vel","cmd_seq":8,"data":{"linear_x":0.2}}`
	// Taken before the send: the server reads the command later, so its
	// idle time starts at or after lastB, never before.
	lastB := time.Now()
	b.w.send(t, driveB)
	testenv.ExpectMsg(t, cmds, "B's set_cmd_vel once it holds control", 10*time.Second, func(m *nats.Msg) bool {
		return string(m.Data) == driveB
	})

	// B goes quiet: after idle, the lease is released (a deadline far
	// beyond idle detects a hang; the release must not come before idle).
	c := &inbox{w: dialWS(t, fmt.Sprintf("ws://127.0.0.1:%d/nats/ws", httpPort))}
	welcomeC := c.lease(t, "C's welcome", func(s leaseState) bool { return s.You != "" })
	if !welcomeC.Held || welcomeC.Holder != bID {
		t.Fatalf("C's welcome while B holds control: %+v", welcomeC)
	}
	c.find(t, "telemetry.control.lease", func(p string) bool { return strings.Contains(p, `"held":false`) }, idle+20*time.Second, true)
	if since := time.Since(lastB); since < idle {
		t.Errorf("released %v after B's last command, before the idle timeout of %v", since, idle)
	}
	c.w.send(t, `{"action":"set_cmd_vel","cmd_seq":9}`)
	if got := c.ack(t, 9); got.Detail != "not the controller" {
		t.Errorf("C's set_cmd_vel with nobody in control: %+v", got)
	}
	// A holder on /nats/ws releases by closing too.
	c.w.send(t, `{"action":"take_control","cmd_seq":10}`)
	if got := c.ack(t, 10); got.Status != "ok" {
		t.Fatalf("C's take_control: %+v", got)
	}
	b.lease(t, "C's hold seen by B", func(s leaseState) bool { return s.Held && s.Holder == welcomeC.You })
	_ = c.w.c.Close()
	b.lease(t, "the release when C left", func(s leaseState) bool { return !s.Held })
	for name, want := range map[string]string{
		`caddy_sdr_control_lease_held{stream="default"}`:                           "0",
		`caddy_sdr_control_lease_takes_total{result="taken",stream="default"}`:     "3",
		`caddy_sdr_control_lease_takes_total{result="refused",stream="default"}`:   "1",
		`caddy_sdr_control_lease_releases_total{reason="closed",stream="default"}`: "2",
		`caddy_sdr_control_lease_releases_total{reason="idle",stream="default"}`:   "1",
		`caddy_sdr_control_lease_refused_total{stream="default"}`:                  "3",
		`caddy_sdr_nats_commands_total{status="rejected_not_controller"}`:          "4",
	} {
		if v, _ := metric(admin, name); v != want {
			t.Errorf("%s = %q, want %s", name, v, want)
		}
	}
}

// TestControlLeaseOffUnchanged: without a control block, nothing of the
// lease shows: a client's first message is the answer to its own command,
// not a lease state; take_control is an action like any other, published
// on command.genesis.take_control; and any client drives.
func TestControlLeaseOffUnchanged(t *testing.T) {
	natsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	ns := startNATSServer(t, natsPort)
	rw := shmringtest.NewWriter(t, "", 1<<20)
	rw.Start(t, simulator)
	caddy := testenv.StartCaddy(t, fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	sdr_nats {
		url %s
	}
}

http://127.0.0.1:%d {
	route /stream/ws {
		sdr_stream {
			source shm %s 1MiB
		}
	}
	route /nats/ws {
		sdr_nats
	}
}
`, ns.URL(), httpPort, rw.Path), nil, nil)
	waitMetric(t, caddy.AdminAddr, `caddy_sdr_gate_armed{stream="default"}`, "1", 10*time.Second)
	sim := testenv.ConnectNATS(t, ns.URL())
	cmds := testenv.Collect(t, sim, "command.genesis.>")
	for _, path := range []string{"/stream/ws", "/nats/ws"} {
		c := dialWS(t, fmt.Sprintf("ws://127.0.0.1:%d%s", httpPort, path))
		c.send(t, `{"action":"a.b","cmd_seq":1}`)
		select {
		case m := <-c.telemetry:
			if m[0] != "telemetry.command.ack" || !strings.Contains(m[1], `"cmd_seq":1`) {
				t.Fatalf("%s: first message %s %s, want the ack of the client's own command", path, m[0], m[1])
			}
		case <-testwait.After(10 * time.Second):
			t.Fatalf("%s: no ack", path)
		}
		for _, body := range []string{
			`{"action":"take_control","cmd_seq":2}`,
			`{"action":"set_cmd_vel","cmd_seq":3,"data":{"linear_x":0.1}}`,
			`{"action":"estop_clear","cmd_seq":4}`,
		} {
			c.send(t, body)
			testenv.ExpectMsg(t, cmds, path+": "+body, 10*time.Second, func(m *nats.Msg) bool { return string(m.Data) == body })
		}
	}
}
