package rtc

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/pion/webrtc/v4"

	"github.com/sdr-os/sdr-caddy/internal/rtc/rtctest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// negotiate opens a WebRTC session on p's WebSocket (0x03) and returns the
// viewer once its DataChannels are open.
func negotiate(t *testing.T, p *wsPeer, id string) *rtctest.Viewer {
	t.Helper()
	v, offer := offerViewer(t, true)
	t.Cleanup(func() { _ = v.Close() })
	p.send(t, signalMsg{Type: "offer", SessionID: id, SDP: offer})
	answer := p.next(t, "answer")
	if answer.Type != "answer" || answer.SessionID != id {
		t.Fatalf("got %+v, want an answer for %s", answer, id)
	}
	if err := v.Accept(answer.SDP); err != nil {
		t.Fatal(err)
	}
	for {
		m := p.next(t, "ice candidate")
		if m.Type != "ice" || m.Candidate == nil {
			t.Fatalf("got %+v, want an ice candidate", m)
		}
		if *m.Candidate == "" {
			break
		}
		if err := v.PC.AddICECandidate(webrtc.ICECandidateInit{Candidate: *m.Candidate, SDPMid: m.SDPMid, SDPMLineIndex: m.SDPMLineIndex}); err != nil {
			t.Fatal(err)
		}
	}
	waitOpen(t, v)
	return v
}

// TestDataChannelsControlLease runs the binary with the control lease on:
// the DataChannels of a /stream/ws WebSocket share that WebSocket's place in
// the lease. Before it takes control, its gamepad messages and commands
// are dropped (counted not_controller) and reach no NATS subscriber, its
// estop is published; once the WebSocket takes control with a 0x04
// take_control, its gamepad messages are published. release_control on the
// commands channel gives control back; another WebSocket takes it, and the
// first one's DataChannels are viewers again. A WHEP session is a
// connection of its own: take_control on its commands channel is refused
// while another holds control, and takes it once free.
func TestDataChannelsControlLease(t *testing.T) {
	natsURL := testenv.StartNATS(t)
	sim := testenv.ConnectNATS(t, natsURL)
	msgs := testenv.Collect(t, sim, "control.>")
	states := testenv.Collect(t, sim, "telemetry.control.lease")
	path, _ := playRing(t)
	port := testenv.FreePort(t)
	s := &server{base: fmt.Sprintf("http://127.0.0.1:%d", port), ws: fmt.Sprintf("ws://127.0.0.1:%d", port)}
	s.caddy = testenv.StartCaddy(t, testenv.Caddyfile(port, fmt.Sprintf(`	sdr_nats {
		url %s
		control {
			lease on
		}
	}`, natsURL), fmt.Sprintf(`	handle /stream/* {
		sdr_stream cam {
			source shm %s
			webrtc {
				include_loopback
				command_rate 1000
				control_rate 1000
			}
		}
	}
	sdr_whep /whep* cam {
		source shm %s
		include_loopback
		command_rate 1000
		control_rate 1000
	}`, path, path)), nil, nil)

	notController := func() float64 {
		return s.metric(t, "caddy_sdr_webrtc_messages_total", `stream="cam"`, `result="not_controller"`)
	}
	command := func(c *websocket.Conn, body string) {
		t.Helper()
		if err := c.WriteMessage(websocket.BinaryMessage, append([]byte{0x04}, body...)); err != nil {
			t.Fatal(err)
		}
	}
	held := func(what string, on bool) {
		t.Helper()
		want := fmt.Sprintf(`"held":%t`, on)
		testenv.ExpectMsg(t, states, what, 10*time.Second, func(m *nats.Msg) bool { return strings.Contains(string(m.Data), want) })
	}
	// The commands channel is ordered: once a later estop has reached NATS,
	// an earlier command would have too.
	estop := func(v *rtctest.Viewer, mark string) {
		t.Helper()
		if err := v.Commands.SendText(`{"action":"estop","mark":"` + mark + `"}`); err != nil {
			t.Fatal(err)
		}
		testenv.ExpectMsg(t, msgs, "estop "+mark, 10*time.Second, func(m *nats.Msg) bool {
			if strings.Contains(string(m.Data), `"viewer"`) {
				t.Errorf("a viewer's DataChannel message reached NATS: %s %q", m.Subject, m.Data)
			}
			return m.Subject == "control.commands" && strings.Contains(string(m.Data), mark)
		})
	}

	p := dialPeer(t, s.ws+"/stream/ws")
	v := negotiate(t, p, "browser-1")
	viewerPad := gamepad([]float32{1, 0}, 7)
	if err := v.Control.Send(viewerPad); err != nil {
		t.Fatal(err)
	}
	if err := v.Commands.SendText(`{"action":"pause","who":"viewer"}`); err != nil {
		t.Fatal(err)
	}
	estop(v, "p1")
	s.waitMetric(t, "the viewer's gamepad and pause dropped", func() bool { return notController() == 2 })

	command(p.c, `{"action":"take_control","cmd_seq":1}`)
	held("the WebSocket's take", true)
	pad := gamepad([]float32{0.5, 0}, 1)
	if err := v.Control.Send(pad); err != nil {
		t.Fatal(err)
	}
	testenv.ExpectMsg(t, msgs, "the holder's gamepad", 10*time.Second, func(m *nats.Msg) bool {
		return m.Subject == "control.gamepad" && string(m.Data) == string(pad)
	})

	// Released on the commands channel; another WebSocket takes control.
	if err := v.Commands.SendText(`{"action":"release_control"}`); err != nil {
		t.Fatal(err)
	}
	held("the release on the commands channel", false)
	q := dialPeer(t, s.ws+"/stream/ws")
	command(q.c, `{"action":"take_control","cmd_seq":1}`)
	held("the second WebSocket's take", true)
	if err := v.Commands.SendText(`{"action":"reset","who":"viewer"}`); err != nil {
		t.Fatal(err)
	}
	estop(v, "p2")
	if n := notController(); n != 3 {
		t.Errorf("not_controller %v, want 3 (gamepad, pause, reset)", n)
	}

	// A WHEP session: refused while q holds control, takes it once free.
	w, offer := offerViewer(t, true)
	defer w.Close()
	code, answer, _ := s.whep(t, "application/sdp", offer)
	if code != http.StatusCreated {
		t.Fatalf("whep post: %d %s", code, answer)
	}
	if err := w.Accept(answer); err != nil {
		t.Fatal(err)
	}
	waitOpen(t, w)
	if err := w.Commands.SendText(`{"action":"take_control"}`); err != nil {
		t.Fatal(err)
	}
	estop(w, "w1")
	if n := notController(); n != 4 {
		t.Errorf("not_controller %v, want 4 (the WHEP session's take refused)", n)
	}
	command(q.c, `{"action":"release_control","cmd_seq":2}`)
	held("the second WebSocket's release", false)
	if err := w.Commands.SendText(`{"action":"take_control"}`); err != nil {
		t.Fatal(err)
	}
	held("the WHEP session's take", true)
	if err := w.Control.Send(pad); err != nil {
		t.Fatal(err)
	}
	testenv.ExpectMsg(t, msgs, "the WHEP holder's gamepad", 10*time.Second, func(m *nats.Msg) bool {
		return m.Subject == "control.gamepad" && string(m.Data) == string(pad)
	})
	if n := s.metric(t, "caddy_sdr_webrtc_messages_total", `stream="cam"`, `result="control_taken"`); n != 1 {
		t.Errorf("control_taken %v, want 1 (the WHEP session's)", n)
	}
}
