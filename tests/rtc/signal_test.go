package rtc

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// signalMsg is the JSON of a 0x03 message.
type signalMsg struct {
	Type          string  `json:"type"`
	SessionID     string  `json:"session_id,omitempty"`
	SDP           string  `json:"sdp,omitempty"`
	Candidate     *string `json:"candidate,omitempty"`
	SDPMid        *string `json:"sdpMid,omitempty"`
	SDPMLineIndex *uint16 `json:"sdpMLineIndex,omitempty"`
	Reason        string  `json:"reason,omitempty"`
}

// wsPeer is a /stream/ws client that keeps the 0x03 messages it receives.
type wsPeer struct {
	c       *websocket.Conn
	signals chan signalMsg
	video   chan struct{} // one per 0x01 message, dropped when full
	done    chan struct{}
}

func dialPeer(t *testing.T, url string) *wsPeer {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dialing %s: %v (%v)", url, err, resp)
	}
	p := &wsPeer{c: c, signals: make(chan signalMsg, 64), video: make(chan struct{}, 1), done: make(chan struct{})}
	t.Cleanup(func() { c.Close(); <-p.done })
	go func() {
		defer close(p.done)
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			switch {
			case len(msg) > 0 && msg[0] == 0x03:
				var m signalMsg
				if err := json.Unmarshal(msg[1:], &m); err != nil {
					t.Errorf("0x03 message is not JSON: %q", msg[1:])
					continue
				}
				p.signals <- m
			case len(msg) > 0 && msg[0] == 0x01:
				select {
				case p.video <- struct{}{}:
				default:
				}
			}
		}
	}()
	return p
}

func (p *wsPeer) send(t *testing.T, m signalMsg) {
	t.Helper()
	b, _ := json.Marshal(m)
	if err := p.c.WriteMessage(websocket.BinaryMessage, append([]byte{0x03}, b...)); err != nil {
		t.Fatal(err)
	}
}

func (p *wsPeer) next(t *testing.T, what string) signalMsg {
	t.Helper()
	select {
	case m := <-p.signals:
		return m
	case <-testwait.After(20 * time.Second):
		t.Fatalf("no 0x03 %s within 20s", what)
		return signalMsg{}
	}
}

// The browser's WebRTC upgrade over /stream/ws: an offer gets a 0x03
// answer and trickled candidates for that client alone; video and
// DataChannels work as over WHEP; a wrong session id, a second offer and
// bad SDP are refused with a 0x03 close while the WebSocket stays up;
// closing the WebSocket ends the session.
func TestSignalingOverWebSocket(t *testing.T) {
	natsURL := testenv.StartNATS(t)
	msgs := testenv.Collect(t, testenv.ConnectNATS(t, natsURL), "control.>")
	path, _ := playRing(t)
	s := startServer(t, natsURL, path)

	// Bad SDP on one connection: refused, and the WebSocket still streams.
	bad := dialPeer(t, s.ws+"/stream/ws")
	bad.send(t, signalMsg{Type: "offer", SessionID: "bad", SDP: "v=0\r\ngarbage\r\n"})
	if m := bad.next(t, "refusal of bad sdp"); m.Type != "close" || m.SessionID != "bad" || !strings.Contains(m.Reason, "bad sdp offer") {
		t.Errorf("bad sdp: got %+v, want close with a reason", m)
	}
	if err := bad.c.WriteMessage(websocket.BinaryMessage, []byte("\x03{not json")); err != nil {
		t.Fatal(err)
	}
	if m := bad.next(t, "refusal of malformed JSON"); m.Type != "close" || !strings.Contains(m.Reason, "malformed") {
		t.Errorf("malformed json: got %+v", m)
	}
	select {
	case <-bad.video:
	case <-testwait.After(10 * time.Second):
		t.Error("no video on the WebSocket after refused offers")
	}

	p := dialPeer(t, s.ws+"/stream/ws")
	v, offer := offerViewer(t, true)
	defer v.Close()
	const id = "browser-1"
	p.send(t, signalMsg{Type: "offer", SessionID: id, SDP: offer})
	answer := p.next(t, "answer")
	if answer.Type != "answer" || answer.SessionID != id || answer.SDP == "" {
		t.Fatalf("got %+v, want an answer for %s", answer, id)
	}
	if err := v.Accept(answer.SDP); err != nil {
		t.Fatal(err)
	}
	// Trickled candidates follow the answer; the last has an empty candidate.
	for n := 0; ; n++ {
		m := p.next(t, "ice candidate")
		if m.Type != "ice" || m.SessionID != id || m.Candidate == nil {
			t.Fatalf("got %+v, want an ice candidate for %s", m, id)
		}
		if *m.Candidate == "" {
			if n == 0 {
				t.Fatal("no candidate before the end of candidates")
			}
			break
		}
		if err := v.PC.AddICECandidate(webrtc.ICECandidateInit{Candidate: *m.Candidate, SDPMid: m.SDPMid, SDPMLineIndex: m.SDPMLineIndex}); err != nil {
			t.Fatalf("adding candidate %q: %v", *m.Candidate, err)
		}
	}
	receiveVideo(t, v, 45)

	waitOpen(t, v)
	good := gamepad([]float32{1, 0}, 1)
	if err := v.Control.Send(good); err != nil {
		t.Fatal(err)
	}
	if err := v.Commands.SendText(`{"action":"reset","cmd_seq":3}`); err != nil {
		t.Fatal(err)
	}
	expectControl(t, msgs, good, `"cmd_seq":3`)

	// A candidate for another session is refused; a second offer on the
	// same WebSocket too; the session goes on.
	cand := "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"
	p.send(t, signalMsg{Type: "ice", SessionID: "someone-else", Candidate: &cand})
	if m := p.next(t, "refusal of a foreign candidate"); m.Type != "close" || m.SessionID != "someone-else" {
		t.Errorf("foreign candidate: got %+v, want close for someone-else", m)
	}
	p.send(t, signalMsg{Type: "offer", SessionID: "browser-2", SDP: offer})
	if m := p.next(t, "refusal of a second offer"); m.Type != "close" || m.SessionID != "browser-2" || !strings.Contains(m.Reason, id) {
		t.Errorf("second offer: got %+v, want close naming the open session", m)
	}
	if s.metric(t, "caddy_sdr_webrtc_sessions", `stream="cam"`) != 1 {
		t.Errorf("sessions open: %v, want 1", s.metric(t, "caddy_sdr_webrtc_sessions", `stream="cam"`))
	}

	// Closing the WebSocket ends the session: the viewer sees the peer go.
	closed := make(chan struct{})
	v.PC.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateClosed || st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateDisconnected {
			select {
			case <-closed:
			default:
				close(closed)
			}
		}
	})
	p.c.Close()
	s.waitMetric(t, "the session to end with its WebSocket", func() bool {
		return s.metric(t, "caddy_sdr_webrtc_sessions", `stream="cam"`) == 0
	})
	select {
	case <-closed:
	case <-testwait.After(20 * time.Second):
		t.Error("viewer still connected 20s after the WebSocket closed")
	}
}
