package rtc

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/rtc/rtctest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// startAnyHost runs the binary with one site that answers every Host name
// (the rebinding page's too) on 127.0.0.1:port, global options global and
// site directives site.
func startAnyHost(t *testing.T, global, site string) (s *server, port int) {
	t.Helper()
	port = testenv.FreePort(t)
	cf := fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	grace_period 1ns
%s
}
http://:%d {
	bind 127.0.0.1
%s
}
`, global, port, site)
	s = &server{base: fmt.Sprintf("http://127.0.0.1:%d", port), ws: fmt.Sprintf("ws://127.0.0.1:%d", port)}
	s.caddy = testenv.StartCaddy(t, cf, nil, nil)
	return s, port
}

// whepAs posts a new viewer's offer to path as a browser would: with Host
// host and, when origin is not empty, that Origin. It returns the viewer
// once its DataChannels are open, and the session's Location.
func (s *server) whepAs(t *testing.T, path, host, origin string) (*rtctest.Viewer, string) {
	t.Helper()
	v, offer := offerViewer(t, true)
	t.Cleanup(func() { _ = v.Close() })
	req, err := http.NewRequest(http.MethodPost, s.base+path, strings.NewReader(offer))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("Content-Type", "application/sdp")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("whep post as %s from %s: %v", host, origin, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("whep post as %s from %s: %d %s", host, origin, resp.StatusCode, answer)
	}
	if err := v.Accept(string(answer)); err != nil {
		t.Fatal(err)
	}
	waitOpen(t, v)
	return v, resp.Header.Get("Location")
}

// sendMotion sends a gamepad message, set_cmd_vel and estop marked with
// mark on v's DataChannels.
func sendMotion(t *testing.T, v *rtctest.Viewer, pad []byte, mark string) {
	t.Helper()
	if err := v.Control.Send(pad); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{
		`{"action":"set_cmd_vel","mark":"` + mark + `","data":{"linear_x":0.5}}`,
		`{"action":"estop","mark":"` + mark + `"}`,
	} {
		if err := v.Commands.SendText(cmd); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWHEPJudgesBrowsers: a WHEP session is judged as a /stream/ws
// WebSocket is (the Origin rule and the Host rule against DNS rebinding),
// on the POST that creates it. A page that rebound its name to this
// machine (Host and Origin evil.example) and a page of another origin
// reaching it by its IP both watch the video, but their gamepad messages,
// set_cmd_vel and estop reach no NATS subscriber and are counted "origin".
// A browser that reached it by an IP address or localhost from its own
// origin, a player without an Origin, and a rebound name listed in
// allowed_hosts of another sdr_whep publish.
func TestWHEPJudgesBrowsers(t *testing.T) {
	natsURL := testenv.StartNATS(t)
	msgs := testenv.Collect(t, testenv.ConnectNATS(t, natsURL), "control.>")
	path, _ := playRing(t)
	s, port := startAnyHost(t, testenv.NATSOptions(natsURL), fmt.Sprintf(`	sdr_whep /whep* cam {
		source shm %s
		include_loopback
	}
	sdr_whep /listed* cam {
		source shm %s
		include_loopback
		allowed_hosts evil.example
	}`, path, path))
	refused := func() float64 {
		return s.metric(t, "caddy_sdr_webrtc_messages_total", `stream="cam"`, `result="origin"`)
	}
	// expect waits for the marked estop and the session's gamepad message
	// on NATS; a message of a refused session arriving at any time fails
	// the test. One NATS connection publishes everything in order: once a
	// later session's estop is here, a refused one's message would be too.
	expect := func(what string, pad []byte, mark string) {
		t.Helper()
		var gotPad, gotCmd, gotEstop bool
		testenv.ExpectMsg(t, msgs, what, 10*time.Second, func(m *nats.Msg) bool {
			data := string(m.Data)
			if strings.Contains(data, `"refused-`) || (m.Subject == "control.gamepad" && m.Data[len(m.Data)-1] == 0xEE) {
				t.Errorf("a refused session's message reached NATS: %s %q", m.Subject, m.Data)
			}
			switch {
			case m.Subject == "control.gamepad" && string(m.Data) == string(pad):
				gotPad = true
			case m.Subject == "control.commands" && strings.Contains(data, `"set_cmd_vel","mark":"`+mark+`"`):
				gotCmd = true
			case m.Subject == "control.commands" && strings.Contains(data, `"estop","mark":"`+mark+`"`):
				gotEstop = true
			}
			return gotPad && gotCmd && gotEstop
		})
	}

	// The refused: video flows, the DataChannels carry nothing. Their
	// gamepad messages end with button byte 0xEE, their commands carry
	// marks "refused-...".
	for i, tc := range []struct{ name, host, origin string }{
		{"rebound name", fmt.Sprintf("evil.example:%d", port), fmt.Sprintf("http://evil.example:%d", port)},
		{"other origin by IP", fmt.Sprintf("127.0.0.1:%d", port), "http://evil.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := refused()
			v, _ := s.whepAs(t, "/whep", tc.host, tc.origin)
			receiveVideo(t, v, 10)
			sendMotion(t, v, gamepad([]float32{float32(i)}, 0xEE000000), "refused-"+tc.name)
			s.waitMetric(t, "three messages counted origin", func() bool { return refused() == before+3 })
		})
	}

	// The trusted publish; each after the refused, on the same NATS
	// connection of the server.
	for i, tc := range []struct{ name, path, host, origin string }{
		{"IP literal", "/whep", fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("http://127.0.0.1:%d", port)},
		{"localhost", "/whep", fmt.Sprintf("localhost:%d", port), fmt.Sprintf("http://localhost:%d", port)},
		{"player without Origin", "/whep", fmt.Sprintf("evil.example:%d", port), ""},
		{"rebound name listed in allowed_hosts", "/listed", fmt.Sprintf("evil.example:%d", port), fmt.Sprintf("http://evil.example:%d", port)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := refused()
			v, _ := s.whepAs(t, tc.path, tc.host, tc.origin)
			receiveVideo(t, v, 10)
			pad := gamepad([]float32{0.5, float32(i)}, 1)
			sendMotion(t, v, pad, fmt.Sprintf("trusted-%d", i))
			expect(tc.name+"'s gamepad, set_cmd_vel and estop", pad, fmt.Sprintf("trusted-%d", i))
			if n := refused(); n != before {
				t.Errorf("%v messages counted origin, want none", n-before)
			}
		})
	}
}

// TestWHEPVerdictBeforeControlLease: with the control lease on, a WHEP
// session of a refused browser cannot take control (its take_control is
// counted "origin", the lease stays free), and a trusted browser's session
// is still held to the lease: its gamepad message is dropped as
// not_controller until it takes control, then published.
func TestWHEPVerdictBeforeControlLease(t *testing.T) {
	natsURL := testenv.StartNATS(t)
	sim := testenv.ConnectNATS(t, natsURL)
	msgs := testenv.Collect(t, sim, "control.>")
	states := testenv.Collect(t, sim, "telemetry.control.lease")
	path, _ := playRing(t)
	s, port := startAnyHost(t, fmt.Sprintf(`	sdr_nats {
		url %s
		control {
			lease on
		}
	}`, natsURL), fmt.Sprintf(`	sdr_whep /whep* cam {
		source shm %s
		include_loopback
		command_rate 1000
		control_rate 1000
	}`, path))
	result := func(r string) float64 {
		return s.metric(t, "caddy_sdr_webrtc_messages_total", `stream="cam"`, `result="`+r+`"`)
	}

	evil, _ := s.whepAs(t, "/whep", fmt.Sprintf("evil.example:%d", port), fmt.Sprintf("http://evil.example:%d", port))
	if err := evil.Commands.SendText(`{"action":"take_control"}`); err != nil {
		t.Fatal(err)
	}
	s.waitMetric(t, "the rebound page's take_control counted origin", func() bool { return result("origin") == 1 })

	v, _ := s.whepAs(t, "/whep", fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("http://127.0.0.1:%d", port))
	receiveVideo(t, v, 10)
	viewerPad := gamepad([]float32{1, 0}, 7)
	if err := v.Control.Send(viewerPad); err != nil {
		t.Fatal(err)
	}
	s.waitMetric(t, "the trusted viewer's gamepad dropped as not_controller", func() bool { return result("not_controller") == 1 })
	if err := v.Commands.SendText(`{"action":"take_control"}`); err != nil {
		t.Fatal(err)
	}
	// The first state with a holder is the trusted session's: the rebound
	// page's take came first and took nothing.
	testenv.ExpectMsg(t, states, "the trusted session's take", 10*time.Second, func(m *nats.Msg) bool {
		return strings.Contains(string(m.Data), `"held":true`)
	})
	if n := result("control_taken"); n != 1 {
		t.Errorf("control_taken %v, want 1 (the trusted session's)", n)
	}
	pad := gamepad([]float32{0.5, 0}, 1)
	if err := v.Control.Send(pad); err != nil {
		t.Fatal(err)
	}
	testenv.ExpectMsg(t, msgs, "the holder's gamepad", 10*time.Second, func(m *nats.Msg) bool {
		if m.Subject == "control.gamepad" && string(m.Data) == string(viewerPad) {
			t.Errorf("the gamepad message sent before take_control reached NATS")
		}
		return m.Subject == "control.gamepad" && string(m.Data) == string(pad)
	})
}
