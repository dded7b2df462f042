package rtc

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// A pion viewer watches the stream over WHEP: decodable H.264 from a
// keyframe on, its DataChannel messages on NATS (malformed ones dropped and
// counted, motion refused while the video is stale), DELETE ends the
// session; bad requests are refused cleanly.
func TestWHEP(t *testing.T) {
	natsURL := testenv.StartNATS(t)
	msgs := testenv.Collect(t, testenv.ConnectNATS(t, natsURL), "control.>", "telemetry.safety.video_gate")
	path, stopVideo := playRing(t)
	s := startServer(t, natsURL, path)

	// Refused cleanly: wrong content type, SDP that is not SDP, unknown
	// session, wrong method.
	if code, body, _ := s.whep(t, "text/plain", "v=0"); code != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain offer: %d %s, want 415", code, body)
	}
	if code, body, _ := s.whep(t, "application/sdp", "v=0\r\nnot an offer\r\n"); code != http.StatusBadRequest {
		t.Errorf("bad sdp: %d %s, want 400", code, body)
	}
	if code := s.delete(t, "/whep/0123456789abcdef"); code != http.StatusNotFound {
		t.Errorf("delete of an unknown session: %d, want 404", code)
	}
	if resp, err := client.Get(s.base + "/whep"); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /whep: %v %v, want 405", resp, err)
	} else {
		resp.Body.Close()
	}

	v, offer := offerViewer(t, true)
	defer v.Close()
	code, answer, location := s.whep(t, "application/sdp", offer)
	if code != http.StatusCreated || !strings.HasPrefix(location, "/whep/") {
		t.Fatalf("whep post: %d, location %q: %s", code, location, answer)
	}
	if err := v.Accept(answer); err != nil {
		t.Fatalf("accepting the answer: %v\n%s", err, answer)
	}
	receiveVideo(t, v, 60)

	// DataChannels: a good gamepad message and a command arrive unchanged;
	// malformed ones are counted and dropped.
	waitOpen(t, v)
	good := gamepad([]float32{0.25, -1, 0, 1}, 0x5)
	for _, m := range [][]byte{{3, 0, 0}, append([]byte{1}, make([]byte, 300)...), good} {
		if err := v.Control.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Commands.SendText(`{"action":"set_cmd_vel","cmd_seq":7,"data":{"linear_x":0.5}}`); err != nil {
		t.Fatal(err)
	}
	if err := v.Commands.SendText(`{"action":`); err != nil {
		t.Fatal(err)
	}
	expectControl(t, msgs, good, `"cmd_seq":7`)
	s.waitMetric(t, "malformed messages counted", func() bool {
		return s.metric(t, "caddy_sdr_webrtc_messages_total", `channel="control"`, `result="malformed"`) >= 2 &&
			s.metric(t, "caddy_sdr_webrtc_messages_total", `channel="commands"`, `result="malformed"`) >= 1
	})

	// The video stops: the gate holds, motion is refused, pause passes.
	stopVideo()
	testenv.ExpectMsg(t, msgs, "gate HOLD", 10*time.Second, func(m *nats.Msg) bool {
		return m.Subject == "telemetry.safety.video_gate" && strings.Contains(string(m.Data), `"gated":true`)
	})
	if err := v.Control.Send(good); err != nil {
		t.Fatal(err)
	}
	if err := v.Commands.SendText(`{"action":"set_cmd_vel","cmd_seq":8,"data":{}}`); err != nil {
		t.Fatal(err)
	}
	if err := v.Commands.SendText(`{"action":"pause","cmd_seq":9}`); err != nil {
		t.Fatal(err)
	}
	m := testenv.ExpectMsg(t, msgs, "control.commands pause", 10*time.Second, func(m *nats.Msg) bool {
		if m.Subject == "control.gamepad" || strings.Contains(string(m.Data), `"cmd_seq":8`) {
			t.Errorf("gated message published: %s %s", m.Subject, m.Data)
		}
		return m.Subject == "control.commands"
	})
	if !strings.Contains(string(m.Data), `"cmd_seq":9`) {
		t.Errorf("after the gate closed, published %s", m.Data)
	}
	s.waitMetric(t, "gated messages counted", func() bool {
		return s.metric(t, "caddy_sdr_webrtc_messages_total", `result="gated"`) >= 2
	})

	// DELETE ends the session; a second DELETE finds nothing.
	if code := s.delete(t, location); code != http.StatusOK {
		t.Fatalf("delete: %d", code)
	}
	s.waitMetric(t, "no open session", func() bool {
		return s.metric(t, "caddy_sdr_webrtc_sessions", `stream="cam"`) == 0
	})
	if code := s.delete(t, location); code != http.StatusNotFound {
		t.Errorf("second delete: %d, want 404", code)
	}
}
