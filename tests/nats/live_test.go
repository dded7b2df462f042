// Package nats holds the live tests of sdr_nats: the built binary between a
// real nats-server (embedded, or .tools/bin/nats-server as a process that
// the test kills and restarts), a shmring.Writer standing in for the
// simulator, and WebSocket clients.
package nats

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// simulator is the stream the simulator writes: 30 frames/s, a keyframe
// every 30th.
var simulator = shmringtest.Cadence{Period: 33 * time.Millisecond, GOP: 30, Size: 4000}

// natsServer is .tools/bin/nats-server as a process on a fixed port.
type natsServer struct {
	t    *testing.T
	port int
	proc *harness.Process
}

func startNATSServer(t *testing.T, port int) *natsServer {
	t.Helper()
	s := &natsServer{t: t, port: port}
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

func (s *natsServer) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

func (s *natsServer) Start() {
	s.t.Helper()
	s.proc = testenv.StartNATSProcess(s.t, "nats-server", fmt.Sprintf("127.0.0.1:%d", s.port), 10*time.Second,
		"-a", "127.0.0.1", "-p", fmt.Sprint(s.port))
}

// Kill stops the server at once, as a crash would.
func (s *natsServer) Kill() {
	if s.proc == nil {
		return
	}
	s.proc.Kill()
	s.proc = nil
}

// metric reads one sample from the admin endpoint's Prometheus metrics.
func metric(adminAddr, name string) (string, bool) {
	samples, err := testenv.Metrics(adminAddr)
	v, ok := samples[name]
	return v, ok && err == nil
}

func waitMetric(t *testing.T, adminAddr, name, want string, timeout time.Duration) {
	t.Helper()
	if !testwait.Until(timeout, func() bool { v, ok := metric(adminAddr, name); return ok && v == want }) {
		v, _ := metric(adminAddr, name)
		t.Fatalf("metric %s = %q after %s, want %s", name, v, testwait.Timeout(timeout), want)
	}
}

// wsClient is a /stream/ws or /nats/ws client recording what it receives.
type wsClient struct {
	c         *websocket.Conn
	mu        sync.Mutex
	videos    []time.Time
	telemetry chan [2]string // subject, payload
	closed    chan struct{}
}

func dialWS(t *testing.T, url string) *wsClient {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("dialing %s: %v: %s %s", url, err, resp.Status, b)
		}
		t.Fatalf("dialing %s: %v", url, err)
	}
	w := &wsClient{c: c, telemetry: make(chan [2]string, 4096), closed: make(chan struct{})}
	t.Cleanup(func() { c.Close(); <-w.closed })
	go func() {
		defer close(w.closed)
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			switch {
			case len(msg) > 0 && msg[0] == wire.TypeVideo:
				w.mu.Lock()
				w.videos = append(w.videos, time.Now())
				w.mu.Unlock()
			case len(msg) > 0 && msg[0] == wire.TypeTelemetry:
				s, p, err := wire.ParseTelemetry(msg)
				if err == nil {
					select {
					case w.telemetry <- [2]string{s, string(p)}:
					default:
					}
				}
			}
		}
	}()
	return w
}

func (w *wsClient) send(t *testing.T, body string) {
	t.Helper()
	if err := w.c.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, body...)); err != nil {
		t.Fatal(err)
	}
}

// await returns the first telemetry message on subject whose payload
// satisfies ok.
func (w *wsClient) await(t *testing.T, subject string, ok func(string) bool, timeout time.Duration) string {
	t.Helper()
	deadline := testwait.After(timeout)
	for {
		select {
		case m := <-w.telemetry:
			if m[0] == subject && ok(m[1]) {
				return m[1]
			}
		case <-deadline:
			t.Fatalf("no telemetry on %s within %s", subject, timeout)
		}
	}
}

// videoGap is the longest time between two received video frames since
// from, and how many arrived.
func (w *wsClient) videoGap(from time.Time) (time.Duration, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var gap time.Duration
	n := 0
	prev := from
	for _, at := range w.videos {
		if at.Before(from) {
			continue
		}
		n++
		gap = max(gap, at.Sub(prev))
		prev = at
	}
	return max(gap, time.Since(prev)), n
}

func ackWith(seq int, status string) func(string) bool {
	return func(p string) bool {
		var a struct {
			CmdSeq int    `json:"cmd_seq"`
			Status string `json:"status"`
		}
		return json.Unmarshal([]byte(p), &a) == nil && a.CmdSeq == seq && a.Status == status
	}
}

// TestNATSOutageVideoNeverStops kills the NATS server in the middle of a
// stream and restarts it: video keeps flowing, commands during the outage
// are answered unavailable, telemetry and commands resume afterwards.
func TestNATSOutageVideoNeverStops(t *testing.T) {
	natsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	ns := startNATSServer(t, natsPort)
	rw := shmringtest.NewWriter(t, "", 1<<20)
	rw.Start(t, simulator)

	caddy := testenv.StartCaddy(t, fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	sdr_nats {
		url %s
		reconnect_wait_max 200ms
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
	admin := caddy.AdminAddr
	waitMetric(t, admin, "caddy_sdr_nats_connected", "1", 10*time.Second)

	sim := testenv.ConnectNATS(t, ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	cmds := testenv.Collect(t, sim, "command.genesis.>")

	video := dialWS(t, fmt.Sprintf("ws://127.0.0.1:%d/stream/ws", httpPort))
	dash := dialWS(t, fmt.Sprintf("ws://127.0.0.1:%d/nats/ws", httpPort))
	start := time.Now()

	// telemetryFlows publishes until both clients got a message.
	telemetryFlows := func(tag string) {
		t.Helper()
		stop := make(chan struct{})
		go func() {
			for {
				_ = sim.Publish("telemetry.training.metrics", []byte(`{"tag":"`+tag+`"}`))
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
		defer close(stop)
		for _, c := range []*wsClient{video, dash} {
			c.await(t, "telemetry.training.metrics", func(p string) bool { return strings.Contains(p, tag) }, 15*time.Second)
		}
	}
	telemetryFlows("before")
	testwait.ForWithin(t, 10*time.Second, "video", func() bool { _, n := video.videoGap(start); return n > 0 })
	start = time.Now()

	ns.Kill()
	outage := time.Now()
	waitMetric(t, admin, "caddy_sdr_nats_connected", "0", 10*time.Second)
	video.send(t, `{"action":"estop","cmd_seq":101}`)
	video.await(t, "telemetry.command.ack", ackWith(101, "unavailable"), 5*time.Second)
	dash.send(t, `{"action":"pause","cmd_seq":102}`)
	dash.await(t, "telemetry.command.ack", ackWith(102, "unavailable"), 5*time.Second)
	// Two seconds of video at 30 fps during the outage.
	testwait.For(t, "60 frames during the outage", func() bool { _, n := video.videoGap(outage); return n >= 60 })
	if gap, n := video.videoGap(outage); gap > time.Second || n < 20 {
		t.Fatalf("during the outage: %d frames, longest gap %s; want video to go on", n, gap)
	}

	ns.Start()
	waitMetric(t, admin, "caddy_sdr_nats_connected", "1", 15*time.Second)
	telemetryFlows("after")
	// Drain what was published before, then check commands go out again.
	for len(cmds) > 0 {
		<-cmds
	}
	video.send(t, `{"action":"reset","cmd_seq":103}`)
	deadline := testwait.After(10 * time.Second)
	for got := false; !got; {
		select {
		case m := <-cmds:
			got = m.Subject == "command.genesis.reset" && strings.Contains(string(m.Data), `"cmd_seq":103`)
		case <-deadline:
			t.Fatal("command after the outage not published within 10s")
		}
	}
	if gap, n := video.videoGap(start); gap > time.Second {
		t.Fatalf("over the whole test: %d frames, longest gap %s; video must never stop", n, gap)
	}
	if v, _ := metric(admin, "caddy_sdr_nats_reconnects_total"); v == "" || v == "0" {
		t.Errorf("caddy_sdr_nats_reconnects_total = %q after a reconnection", v)
	}
}

// TestGateWithoutBrowser runs the binary with the embedded server and a
// ring, no WebSocket client at all: the gate alone must publish HOLD within
// 2s of video stopping (the old service's smoke test), ESTOP near 5s, and
// {"gated":false} when video is back. An ordinary NATS client listens.
func TestGateWithoutBrowser(t *testing.T) {
	natsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	rw := shmringtest.NewWriter(t, "", 1<<20)
	pause := rw.Start(t, simulator)
	caddy := testenv.StartCaddy(t, fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	sdr_nats {
		embedded {
			listen 127.0.0.1:%d
		}
	}
}

http://127.0.0.1:%d {
	sdr_stream {
		source shm %s 1MiB
	}
}
`, natsPort, httpPort, rw.Path), nil, nil)

	sim, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort))
	if err != nil {
		t.Fatalf("an ordinary client cannot reach the embedded server: %v", err)
	}
	defer sim.Close()
	gate := make(chan *nats.Msg, 64)
	if _, err := sim.ChanSubscribe("telemetry.safety.video_gate", gate); err != nil {
		t.Fatal(err)
	}
	cmds := make(chan *nats.Msg, 64)
	if _, err := sim.ChanSubscribe("command.genesis.*", cmds); err != nil {
		t.Fatal(err)
	}
	if err := sim.Flush(); err != nil {
		t.Fatal(err)
	}
	// The first frame arms the gate; before it, it publishes nothing.
	waitMetric(t, caddy.AdminAddr, `caddy_sdr_gate_armed{stream="default"}`, "1", 10*time.Second)
	drain := func() {
		for len(gate) > 0 {
			<-gate
		}
		for len(cmds) > 0 {
			<-cmds
		}
	}
	drain()

	pause()
	stopped := time.Now()
	type seen struct {
		at      time.Duration
		subject string
		payload string
	}
	var got []seen
	deadline := testwait.After(testwait.Default)
collect:
	for {
		select {
		case m := <-gate:
			got = append(got, seen{time.Since(stopped), m.Subject, string(m.Data)})
			if strings.Contains(string(m.Data), `"ESTOP"`) {
				break collect
			}
		case m := <-cmds:
			got = append(got, seen{time.Since(stopped), m.Subject, string(m.Data)})
		case <-deadline:
			t.Fatalf("no ESTOP within %v of video stopping; saw %v", testwait.Timeout(testwait.Default), got)
		}
	}
	var hold, estop time.Duration
	var zeroVel, estopCmd bool
	for _, s := range got {
		switch {
		case s.subject == "telemetry.safety.video_gate" && strings.Contains(s.payload, `"mode":"HOLD"`) && hold == 0:
			hold = s.at
		case s.subject == "telemetry.safety.video_gate" && strings.Contains(s.payload, `"mode":"ESTOP"`):
			estop = s.at
		case s.subject == "command.genesis.set_cmd_vel" && s.payload == `{"action":"set_cmd_vel","data":{"linear_x":0,"linear_y":0,"angular_z":0},"_safety":"hold"}`:
			zeroVel = true
		case s.subject == "command.genesis.estop" && s.payload == `{"reason":"video_timeout","_safety":"estop"}`:
			estopCmd = true
		}
	}
	t.Logf("HOLD after %s, ESTOP after %s", hold, estop)
	// How soon is the gate timer's business, judged on a fake clock in
	// internal/gate; here: both come, not before their thresholds.
	if hold == 0 || hold < 800*time.Millisecond {
		t.Errorf("video_gate HOLD %s after video stopped, want it after the 1s threshold", hold)
	}
	if estop < 4800*time.Millisecond {
		t.Errorf("video_gate ESTOP %s after video stopped, before the 5s threshold", estop)
	}
	if !zeroVel || !estopCmd {
		t.Errorf("zero set_cmd_vel published: %v, estop published: %v; want both", zeroVel, estopCmd)
	}

	rw.Start(t, simulator)
	// ESTOP repeats itself every second until the video is back.
	testenv.ExpectMsg(t, gate, `{"gated":false}`, testwait.Timeout(5*time.Second), func(m *nats.Msg) bool {
		if string(m.Data) != `{"gated":false}` && !strings.Contains(string(m.Data), `"gated":true,"mode":"ESTOP"`) {
			t.Fatalf("on recovery published %s", m.Data)
		}
		return string(m.Data) == `{"gated":false}`
	})
	select {
	case m := <-gate:
		t.Fatalf("after recovery also published %s; want one message per transition", m.Data)
	case <-time.After(1500 * time.Millisecond): // longer than the repeat period
	}
}

// TestSafetyVideoGateSmoke does what SDR_OS's smoke test
// (tests/integration/test_safety_video_gate.py) does against a running
// stack: a plain NATS client publishes one command.genesis.set_cmd_vel
// while there is no video and waits up to 3 s for telemetry.safety.video_gate
// with gated:true. Here there never was video (the dev profile, or a
// simulator still starting): the gate is not armed, publishes nothing on its
// own (no zero velocity, no ESTOP, which the simulator would latch), and
// answers the command with HOLD. A second command gets its own answer, a
// second later. When a writer appears, the first frame arms the gate and
// clears it with {"gated":false}.
func TestSafetyVideoGateSmoke(t *testing.T) {
	natsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	ns := startNATSServer(t, natsPort)
	ring := filepath.Join(t.TempDir(), "frames") // no writer yet
	caddy := testenv.StartCaddy(t, fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	sdr_nats {
		url %s
	}
}

http://127.0.0.1:%d {
	sdr_stream {
		source shm %s 1MiB
	}
}
`, ns.URL(), httpPort, ring), nil, nil)
	testwait.For(t, "the sdr_nats app started (its gates listen from then on)", func() bool {
		return strings.Contains(caddy.Output(), "sdr_nats started")
	})

	nc := testenv.ConnectNATS(t, ns.URL())
	gate := testenv.Collect(t, nc, "telemetry.safety.video_gate")
	cmds := testenv.Collect(t, nc, "command.genesis.>")
	cmd := `{"action":"set_cmd_vel","cmd_seq":999,"data":{"linear_x":1.0,"linear_y":0,"angular_z":0}}`
	answer := func(what string) {
		t.Helper()
		if err := nc.Publish("command.genesis.set_cmd_vel", []byte(cmd)); err != nil {
			t.Fatal(err)
		}
		m := testwait.RecvWithin(t, gate, 3*time.Second, what)
		var g struct {
			Gated   bool   `json:"gated"`
			Mode    string `json:"mode"`
			StaleMS *int   `json:"stale_ms"`
		}
		if err := json.Unmarshal(m.Data, &g); err != nil || !g.Gated || g.Mode != "HOLD" || g.StaleMS == nil {
			t.Fatalf("%s: %s, want gated:true, mode HOLD, stale_ms", what, m.Data)
		}
		// Whatever the gate published before its answer is already here
		// (one connection, in order): only the test's own commands.
		for len(cmds) > 0 {
			if c := <-cmds; string(c.Data) != cmd {
				t.Fatalf("before any video the gate published %s %s", c.Subject, c.Data)
			}
		}
	}
	answer("an answer to a motion command with no video")
	answer("an answer to a second command")

	shmringtest.NewWriter(t, ring, 1<<20).Start(t, simulator)
	m := testwait.Recv(t, gate, `{"gated":false} once the first frame armed the gate`)
	if string(m.Data) != `{"gated":false}` {
		t.Fatalf("when the video appeared published %s", m.Data)
	}
	waitMetric(t, caddy.AdminAddr, `caddy_sdr_gate_armed{stream="default"}`, "1", 10*time.Second)
}
