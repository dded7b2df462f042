package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/caddymodule/natsapp"
	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// natsTestSource is a frame source the test drives, standing in for the
// ring reader that sdr_stream would attach.
type natsTestSource struct {
	mu   sync.Mutex
	last time.Time
	fns  map[int]func(frame.Frame)
	n    int
}

func (s *natsTestSource) Subscribe(fn func(frame.Frame)) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fns == nil {
		s.fns = map[int]func(frame.Frame){}
	}
	id := s.n
	s.n++
	s.fns[id] = fn
	return func() { s.mu.Lock(); delete(s.fns, id); s.mu.Unlock() }
}

func (s *natsTestSource) LastArrival() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *natsTestSource) emit() {
	s.mu.Lock()
	s.last = time.Now()
	fns := make([]func(frame.Frame), 0, len(s.fns))
	for _, f := range s.fns {
		fns = append(fns, f)
	}
	s.mu.Unlock()
	for _, f := range fns {
		f(frame.Frame{Header: shmring.Header{Codec: shmring.CodecH264}, Arrived: time.Now()})
	}
}

// natsWSRead reads binary messages until one satisfies want or the timeout
// passes.
func natsWSRead(t *testing.T, c *websocket.Conn, timeout time.Duration, want func(subject string, payload []byte) bool) (string, []byte) {
	t.Helper()
	deadline := testwait.Deadline(timeout)
	for {
		_ = c.SetReadDeadline(deadline)
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("reading from the sdr_nats WebSocket: %v", err)
		}
		subj, payload, err := wire.ParseTelemetry(msg)
		if err != nil {
			t.Fatalf("server sent a non-telemetry message: %v", err)
		}
		if want(subj, payload) {
			return subj, payload
		}
	}
}

func TestNATSLiveEmbeddedHandler(t *testing.T) {
	natsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	tester := caddytest.NewTester(t)
	tester.InitServer(fmt.Sprintf(`
	{
		admin localhost:2999
		skip_install_trust
		http_port %d
		sdr_nats {
			embedded {
				listen 127.0.0.1:%d
			}
			command_rate 1000 burst 1000
		}
	}
	http://127.0.0.1:%d {
		route /nats/ws {
			sdr_nats {
				stream cam
			}
		}
		respond "not a websocket" 200
	}`, httpPort, natsPort, httpPort), "caddyfile")
	unloadOnCleanup(t)

	// An ordinary NATS client reaches the embedded server.
	sim, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("ordinary client to the embedded server: %v", err)
	}
	defer sim.Close()
	cmds := subscribeChan(t, sim, "command.genesis.>", 64)
	gateMsgs := subscribeChan(t, sim, "telemetry.safety.video_gate", 64)
	if err := sim.Flush(); err != nil {
		t.Fatal(err)
	}

	// A plain request passes to the next handler.
	tester.AssertGetResponse(fmt.Sprintf("http://127.0.0.1:%d/nats/ws", httpPort), 200, "not a websocket")

	ws, resp, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/nats/ws", httpPort), nil)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("dialing the sdr_nats WebSocket: %v: %s %s", err, resp.Status, b)
		}
		t.Fatal(err)
	}
	defer ws.Close()

	appIface, err := caddy.ActiveContext().AppIfConfigured("sdr_nats")
	if err != nil {
		t.Fatal(err)
	}
	app := appIface.(*natsapp.NATSApp)
	if st := app.ConnState(); st != "connected" {
		t.Fatalf("ConnState = %s, want connected", st)
	}

	t.Run("telemetry relayed", func(t *testing.T) {
		// The relay's subscriptions are on the server after a round trip
		// of its connection, and the client's own subscription to the
		// relay is in place once its read loop answers a command.
		if err := app.Conn().Flush(); err != nil {
			t.Fatal(err)
		}
		if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, `{"cmd_seq":-1}`...)); err != nil {
			t.Fatal(err)
		}
		natsWSRead(t, ws, 10*time.Second, func(s string, _ []byte) bool { return s == "telemetry.command.ack" })
		_ = sim.Publish("private.thing", []byte(`{}`))
		_ = sim.Publish("telemetry.frame.stats", []byte(`{"frame_id":1,"encode_ms":2,"codec":"h264","frame_bytes":3}`))
		subj, payload := natsWSRead(t, ws, 10*time.Second, func(s string, _ []byte) bool {
			if s == "private.thing" {
				t.Errorf("relayed %s, outside the allowlist", s)
			}
			return s == "telemetry.frame.stats"
		})
		if !strings.Contains(string(payload), `"frame_bytes":3`) {
			t.Errorf("relayed %s %s", subj, payload)
		}
	})

	send := func(body string) {
		t.Helper()
		if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, body...)); err != nil {
			t.Fatal(err)
		}
	}
	ack := func(seq float64) map[string]any {
		t.Helper()
		_, p := natsWSRead(t, ws, 10*time.Second, func(s string, p []byte) bool {
			if s != "telemetry.command.ack" {
				return false
			}
			var m map[string]any
			return json.Unmarshal(p, &m) == nil && m["cmd_seq"] == seq
		})
		var m map[string]any
		_ = json.Unmarshal(p, &m)
		return m
	}

	t.Run("commands", func(t *testing.T) {
		body := `{"action":"load_robot","cmd_seq":5,"data":{"name":"go2"}}`
		send(body)
		select {
		case m := <-cmds:
			if m.Subject != "command.genesis.load_robot" || string(m.Data) != body {
				t.Fatalf("published %s %s", m.Subject, m.Data)
			}
		case <-testwait.After(10 * time.Second):
			t.Fatal("command not published within 10s")
		}
		send(`{"action":"set_cmd_vel.>","cmd_seq":6}`)
		if a := ack(6); a["status"] != "rejected" {
			t.Fatalf("injection attempt: %v", a)
		}
		// Stream cam has no video yet: as with the old server, motion
		// passes until the HOLD threshold since the gate's creation, then
		// is gated, and the first refusal publishes the zero velocity and
		// the HOLD state; estop passes.
		g, err := app.Gate("cam")
		if err != nil {
			t.Fatal(err)
		}
		testwait.For(t, "the HOLD threshold since the gate's creation", func() bool {
			ok, _ := g.Allow("set_cmd_vel")
			return !ok
		})
		send(`{"action":"set_cmd_vel","cmd_seq":7,"data":{"linear_x":1}}`)
		if a := ack(7); a["status"] != "gated" || !strings.Contains(a["detail"].(string), "HOLD") {
			t.Fatalf("motion with no video past the HOLD threshold: %v", a)
		}
		testenv.ExpectMsg(t, cmds, "the zero velocity of HOLD", testwait.Timeout(10*time.Second), func(m *nats.Msg) bool {
			return m.Subject == "command.genesis.set_cmd_vel" && strings.Contains(string(m.Data), `"_safety":"hold"`)
		})
		testenv.ExpectMsg(t, gateMsgs, "video_gate HOLD", testwait.Timeout(10*time.Second), func(m *nats.Msg) bool {
			return strings.Contains(string(m.Data), `"gated":true,"mode":"HOLD"`)
		})
		send(`{"action":"estop","cmd_seq":8}`)
		m := testenv.ExpectMsg(t, cmds, "estop", testwait.Timeout(10*time.Second), func(m *nats.Msg) bool {
			return !strings.Contains(string(m.Data), `"_safety"`)
		})
		if m.Subject != "command.genesis.estop" {
			t.Fatalf("published %s, want estop", m.Subject)
		}
	})

	t.Run("gate driven by frames", func(t *testing.T) {
		src := &natsTestSource{}
		rel, err := app.Attach("cam", src)
		if err != nil {
			t.Fatal(err)
		}
		defer rel.Release()
		// drain discards what the gate and the relay published so far: the
		// app's connection publishes a marker after it, one on each
		// subscription, and everything before the markers is dropped.
		drain := func() {
			nc := app.Conn()
			if err := nc.Publish("telemetry.safety.video_gate", []byte("marker")); err != nil {
				t.Fatal(err)
			}
			if err := nc.Publish("command.genesis.marker", []byte("marker")); err != nil {
				t.Fatal(err)
			}
			for seen := 0; seen < 2; {
				select {
				case m := <-gateMsgs:
					if string(m.Data) == "marker" {
						seen++
					}
				case m := <-cmds:
					if string(m.Data) == "marker" {
						seen++
					}
				case <-testwait.After(10 * time.Second):
					t.Fatal("markers not back within 10s")
				}
			}
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := time.NewTicker(20 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
					src.emit()
				}
			}
		}()
		// Video flows: the first frame arms the gate and clears the HOLD
		// of the time before it.
		g, err := app.Gate("cam")
		if err != nil {
			t.Fatal(err)
		}
		testwait.For(t, "the gate to open with video", func() bool {
			allowed, _ := g.Allow("set_cmd_vel")
			return allowed
		})
		send(`{"action":"set_cmd_vel","cmd_seq":9,"data":{"linear_x":0.5}}`)
		select {
		case m := <-cmds:
			if m.Subject != "command.genesis.set_cmd_vel" {
				t.Fatalf("published %s", m.Subject)
			}
		case <-testwait.After(10 * time.Second):
			t.Fatal("motion command with fresh video not published")
		}
		drain()

		close(stop)
		wg.Wait()
		stopped := time.Now()
		var hold, estop time.Duration
		var holdCmd bool
		for estop == 0 {
			select {
			case m := <-gateMsgs:
				var g struct {
					Gated bool   `json:"gated"`
					Mode  string `json:"mode"`
				}
				_ = json.Unmarshal(m.Data, &g)
				switch {
				case g.Mode == "HOLD" && hold == 0:
					hold = time.Since(stopped)
				case g.Mode == "ESTOP":
					estop = time.Since(stopped)
				}
			case m := <-cmds:
				if m.Subject == "command.genesis.set_cmd_vel" && strings.Contains(string(m.Data), `"_safety":"hold"`) {
					holdCmd = true
				}
			case <-testwait.After(testwait.Default):
				t.Fatalf("no ESTOP within %v of video stopping (HOLD after %s)", testwait.Timeout(testwait.Default), hold)
			}
		}
		// How soon is the gate timer's business, judged on a fake clock in
		// internal/gate; here: not before the thresholds, and logged.
		t.Logf("HOLD %s and ESTOP %s after video stopped", hold, estop)
		if hold < 900*time.Millisecond {
			t.Errorf("HOLD on telemetry.safety.video_gate %s after video stopped, before the 1s threshold", hold)
		}
		if !holdCmd {
			t.Errorf("no zero set_cmd_vel with _safety hold published")
		}
		if estop < 4900*time.Millisecond {
			t.Errorf("ESTOP %s after video stopped, before the 5s threshold", estop)
		}
		send(`{"action":"set_cmd_vel","cmd_seq":10}`)
		if a := ack(10); a["status"] != "gated" || !strings.Contains(a["detail"].(string), "ESTOP") {
			t.Fatalf("motion in ESTOP: %v", a)
		}
		// Video back: {"gated":false} after the ESTOP state's repeats.
		src.emit()
		testenv.ExpectMsg(t, gateMsgs, "the recovery message", testwait.Timeout(5*time.Second), func(m *nats.Msg) bool {
			if !strings.Contains(string(m.Data), `"gated":true,"mode":"ESTOP"`) && string(m.Data) != `{"gated":false}` {
				t.Fatalf("on recovery published %s", m.Data)
			}
			return string(m.Data) == `{"gated":false}`
		})
	})
}

// TestNATSLiveReloadKeepsConnectionAndGate reloads the config with the same
// connection parameters: the embedded server, its clients and the gate's
// state survive (no second HOLD for the same episode), and the new routes
// work. The embedded server also enforces the configured token.
func TestNATSLiveReloadKeepsConnectionAndGate(t *testing.T) {
	natsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	config := func(path string) string {
		return fmt.Sprintf(`
	{
		admin localhost:2999
		skip_install_trust
		http_port %d
		sdr_nats {
			token s3cret
			embedded {
				listen 127.0.0.1:%d
			}
			gate {
				hold 300ms
				estop 30s
			}
		}
	}
	http://127.0.0.1:%d {
		route %s {
			sdr_nats {
				stream cam
			}
		}
	}`, httpPort, natsPort, httpPort, path)
	}
	tester := caddytest.NewTester(t)
	tester.InitServer(config("/one"), "caddyfile")
	unloadOnCleanup(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	if nc, err := nats.Connect(url, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("the embedded server accepted a client without the token")
	}
	var disconnects sync.Map
	sim, err := nats.Connect(url, nats.Token("s3cret"), nats.DisconnectErrHandler(func(*nats.Conn, error) {
		disconnects.Store("lost", true)
	}))
	if err != nil {
		t.Fatalf("client with the token: %v", err)
	}
	defer sim.Close()
	gateMsgs := subscribeChan(t, sim, "telemetry.safety.video_gate", 16)
	if err := sim.Flush(); err != nil {
		t.Fatal(err)
	}
	// No video on stream cam: a motion command 300ms after the gate was
	// created finds it in HOLD, and the gate publishes HOLD once.
	appIface, err := caddy.ActiveContext().AppIfConfigured("sdr_nats")
	if err != nil {
		t.Fatal(err)
	}
	g, err := appIface.(*natsapp.NATSApp).Gate("cam")
	if err != nil {
		t.Fatal(err)
	}
	// The gate counts each transition after publishing its messages; the
	// counter is process-wide: take it before this gate's first HOLD.
	holds := `caddy_sdr_gate_transitions_total{mode="HOLD",stream="cam"}`
	holdsBefore := metricValue(t, holds)
	testwait.For(t, "the gate of stream cam in HOLD", func() bool {
		_, mode := g.Allow("set_skill")
		return mode == "HOLD"
	})
	testenv.ExpectMsg(t, gateMsgs, "video_gate HOLD", testwait.Timeout(10*time.Second), func(m *nats.Msg) bool {
		return strings.Contains(string(m.Data), `"mode":"HOLD"`)
	})
	testwait.For(t, "the HOLD transition counted", func() bool { return metricValue(t, holds) == holdsBefore+1 })

	tester.InitServer(config("/two"), "caddyfile")
	appIface2, err := caddy.ActiveContext().AppIfConfigured("sdr_nats")
	if err != nil {
		t.Fatal(err)
	}
	if appIface2 == appIface {
		t.Fatal("reload did not create a new app")
	}
	g2, _ := appIface2.(*natsapp.NATSApp).Gate("cam")
	if g2 != g {
		t.Error("reload created a new gate for the same stream")
	}
	// A fresh connection can be reset right after a reload: Caddy listens
	// with SO_REUSEPORT, and one that waited in the old config's socket when
	// its shutdown closed it is reset (tests/rtc's reload test says more). A
	// client dials again.
	var ws *websocket.Conn
	testwait.For(t, "the new route after the reload", func() bool {
		ws, _, err = websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/two", httpPort), nil)
		if errors.Is(err, syscall.ECONNRESET) {
			t.Logf("dialing the new route: %v; again", err)
			return false
		}
		if err != nil {
			t.Fatalf("new route after reload: %v", err)
		}
		return true
	})
	defer ws.Close()
	send := append([]byte{wire.TypeCommand}, `{"action":"set_skill","cmd_seq":3}`...)
	if err := ws.WriteMessage(websocket.BinaryMessage, send); err != nil {
		t.Fatal(err)
	}
	_, p := natsWSRead(t, ws, 10*time.Second, func(s string, _ []byte) bool { return s == "telemetry.command.ack" })
	if !strings.Contains(string(p), `"status":"gated"`) {
		t.Errorf("motion after reload with the gate in HOLD: %s", p)
	}
	// The same gate kept its episode: no second HOLD transition, and nothing
	// on video_gate since the first HOLD. A gate that no frame has armed
	// publishes only what Allow and Observe call for, once per threshold
	// (it has no repeats: those are an armed gate's), so any message here
	// would be a new episode. Whatever the gate published went out on the
	// app's connection before a marker sent there now.
	if err := appIface2.(*natsapp.NATSApp).Conn().Publish("telemetry.safety.video_gate", []byte("marker")); err != nil {
		t.Fatal(err)
	}
	for m := testwait.Recv(t, gateMsgs, "the marker"); string(m.Data) != "marker"; m = testwait.Recv(t, gateMsgs, "the marker") {
		t.Errorf("the reload made the gate publish again: %s", m.Data)
	}
	if n := metricValue(t, holds) - holdsBefore; n != 1 {
		t.Errorf("%s rose by %v over the reload, want 1 (the first HOLD only)", holds, n)
	}
	if _, lost := disconnects.Load("lost"); lost || sim.Status() != nats.CONNECTED {
		t.Error("the reload disconnected a client of the embedded server")
	}
}

// Every origin may open /nats/ws and read telemetry, as any could open the
// old transport-server's socket; commands are judged on the connection's
// Origin: trusted when it is the page's own host on any port, a loopback
// origin, or listed in origins; otherwise each is answered rejected,
// naming SDR_ALLOWED_ORIGINS, and nothing reaches NATS.
func TestNATSHandlerOriginJudgedOnCommands(t *testing.T) {
	natsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	tester := caddytest.NewTester(t)
	tester.InitServer(fmt.Sprintf(`
	{
		admin localhost:2999
		skip_install_trust
		http_port %d
		sdr_nats {
			embedded {
				listen 127.0.0.1:%d
			}
		}
	}
	http://:%d {
		route /nats/ws {
			sdr_nats
		}
		route /listed/ws {
			sdr_nats {
				origins https://app.example.com
			}
		}
		route /empty/ws {
			sdr_nats {
				origins
			}
		}
	}`, httpPort, natsPort, httpPort), "caddyfile")
	unloadOnCleanup(t)
	sim, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	cmds := subscribeChan(t, sim, "command.genesis.pause", 16)
	if err := sim.Flush(); err != nil {
		t.Fatal(err)
	}
	appIface, err := caddy.ActiveContext().AppIfConfigured("sdr_nats")
	if err != nil {
		t.Fatal(err)
	}
	if err := appIface.(*natsapp.NATSApp).Conn().Flush(); err != nil { // the relay's subscriptions are on the server
		t.Fatal(err)
	}
	for i, tc := range []struct {
		path, origin, host string
		trusted            bool
	}{
		{"/nats/ws", "http://evil.example", "robot", false},
		{"/nats/ws", "http://robot:3000", "robot", true},
		{"/nats/ws", "http://localhost:5173", "robot", true},
		{"/listed/ws", "https://app.example.com", "robot", true},
		{"/listed/ws", "http://evil.example", "robot", false},
		{"/empty/ws", "http://evil.example", "robot", false},
	} {
		what := fmt.Sprintf("%s Origin %s Host %s", tc.path, tc.origin, tc.host)
		ws, resp, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d%s", httpPort, tc.path),
			http.Header{"Origin": {tc.origin}, "Host": {tc.host}})
		if err != nil {
			t.Fatalf("%s: upgrade refused: %v (%v)", what, err, resp)
		}
		body := fmt.Sprintf(`{"action":"pause","cmd_seq":%d}`, i+1)
		if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, body...)); err != nil {
			t.Fatal(err)
		}
		if tc.trusted {
			if m := testwait.Recv(t, cmds, what+": the command on NATS"); string(m.Data) != body {
				t.Fatalf("%s: published %s, want %s", what, m.Data, body)
			}
		} else {
			_, p := natsWSRead(t, ws, 10*time.Second, func(s string, _ []byte) bool { return s == "telemetry.command.ack" })
			var a map[string]any
			_ = json.Unmarshal(p, &a)
			want := "origin " + tc.origin + " not allowed; add it to SDR_ALLOWED_ORIGINS"
			if a["status"] != "rejected" || a["cmd_seq"] != float64(i+1) || a["detail"] != want {
				t.Fatalf("%s: ack %s, want rejected: %s", what, p, want)
			}
		}
		// Its command has been read: the client's telemetry subscription,
		// made before its read loop starts, is in place.
		payload := fmt.Sprintf(`{"i":%d}`, i)
		if err := sim.Publish("telemetry.test", []byte(payload)); err != nil {
			t.Fatal(err)
		}
		if _, p := natsWSRead(t, ws, 10*time.Second, func(s string, _ []byte) bool { return s == "telemetry.test" }); string(p) != payload {
			t.Fatalf("%s: telemetry %s, want %s", what, p, payload)
		}
		ws.Close()
	}
	if err := appIface.(*natsapp.NATSApp).Conn().Publish("command.genesis.pause", []byte("marker")); err != nil {
		t.Fatal(err)
	}
	if m := testwait.Recv(t, cmds, "the marker"); string(m.Data) != "marker" {
		t.Fatalf("an untrusted command reached NATS: %s", m.Data)
	}
}
