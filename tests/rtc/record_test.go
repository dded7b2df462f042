package rtc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/rtc/rtctest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestDataChannelCommandsRecorded runs the binary with sdr_recorder on a
// JetStream nats-server and the control lease on, sends commands on the
// commands DataChannel of a /stream/ws session and of a WHEP session, and
// reads the recording back: every command is recorded once, in the format
// of the /stream/ws commands, with the outcome the DataChannel path judged
// (published, rejected by the control lease or as malformed, control for
// take_control, gated once the video stops) and the client that sent it.
func TestDataChannelCommandsRecorded(t *testing.T) {
	natsPort := testenv.FreePort(t)
	natsAddr := fmt.Sprintf("127.0.0.1:%d", natsPort)
	testenv.StartNATSProcess(t, "nats-server with JetStream", natsAddr, testwait.Default,
		"-a", "127.0.0.1", "-p", fmt.Sprint(natsPort), "-js", "-sd", filepath.Join(t.TempDir(), "js"))
	natsURL := "nats://" + natsAddr
	sim := testenv.ConnectNATS(t, natsURL)
	msgs := testenv.Collect(t, sim, "control.>")
	gate := testenv.Collect(t, sim, recording.GateSubject)
	path, stopVideo := playRing(t)
	port := testenv.FreePort(t)
	s := &server{base: fmt.Sprintf("http://127.0.0.1:%d", port), ws: fmt.Sprintf("ws://127.0.0.1:%d", port)}
	s.caddy = testenv.StartCaddy(t, testenv.Caddyfile(port, fmt.Sprintf(`	sdr_nats {
		url %s
		control {
			lease on
		}
	}
	sdr_recorder {
		storage memory
	}`, natsURL), fmt.Sprintf(`	handle /stream/* {
		sdr_stream cam {
			source shm %s
			webrtc {
				include_loopback
				command_rate 1000
			}
		}
	}
	sdr_whep /whep* cam {
		source shm %s
		include_loopback
		command_rate 1000
	}`, path, path)), nil, nil)
	s.waitMetric(t, "the recorder recording", func() bool { return s.metric(t, "caddy_sdr_recorder_state") == 1 })

	// The commands channel is ordered: once a later estop has reached NATS,
	// every earlier command on it was judged.
	published := func(v *rtctest.Viewer, body, what string) {
		t.Helper()
		if err := v.Commands.SendText(body); err != nil {
			t.Fatal(err)
		}
		testenv.ExpectMsg(t, msgs, what, 10*time.Second, func(m *nats.Msg) bool {
			return m.Subject == "control.commands" && string(m.Data) == body
		})
	}
	send := func(v *rtctest.Viewer, body string) {
		t.Helper()
		if err := v.Commands.SendText(body); err != nil {
			t.Fatal(err)
		}
	}

	p := dialPeer(t, s.ws+"/stream/ws")
	v := negotiate(t, p, "browser-1")
	send(v, `{"action":"pause","cmd_seq":1}`) // a viewer's: not the controller
	published(v, `{"action":"estop","cmd_seq":2}`, "the viewer's estop")
	send(v, `{"action":"take_control","cmd_seq":3}`)
	send(v, `{"action":1,"cmd_seq":4}`)
	published(v, `{"action":"set_cmd_vel","cmd_seq":5,"data":{"linear_x":0.5}}`, "the holder's set_cmd_vel")

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
	send(w, `{"action":"take_control","cmd_seq":6}`) // p holds control
	published(w, `{"action":"estop","cmd_seq":7}`, "the WHEP session's estop")

	stopVideo()
	testenv.ExpectMsg(t, gate, "gate HOLD", 10*time.Second, func(m *nats.Msg) bool {
		return strings.Contains(string(m.Data), `"gated":true`)
	})
	send(v, `{"action":"set_cmd_vel","cmd_seq":8,"data":{}}`)
	s.waitMetric(t, "8 commands recorded", func() bool {
		return s.metric(t, "caddy_sdr_recorder_records_total", `kind="command"`) >= 8
	})

	type want struct{ action, outcome, reason string }
	wants := map[float64]want{
		1: {"pause", recording.OutcomeRejected, "not the controller"},
		2: {"estop", recording.OutcomePublished, ""},
		3: {"take_control", recording.OutcomeControl, "you have control"},
		4: {"", recording.OutcomeRejected, "command action 1 is not a string"},
		5: {"set_cmd_vel", recording.OutcomePublished, ""},
		6: {"take_control", recording.OutcomeRejected, "control held by "},
		7: {"estop", recording.OutcomePublished, ""},
		8: {"set_cmd_vel", recording.OutcomeGated, "video stale: safety gate HOLD"},
	}
	nc := testenv.ConnectNATS(t, natsURL)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(testwait.Default))
	defer cancel()
	wsClient := p.c.LocalAddr().String()
	var got map[float64]recording.CommandBody
	var dups []float64
	testwait.For(t, "the 8 commands stored", func() bool {
		got, dups = map[float64]recording.CommandBody{}, nil
		_, err := recording.Read(ctx, js, recording.ReadOptions{}, func(r recording.Record) error {
			if r.Kind != recording.KindCommand {
				return nil
			}
			if r.Subject != "cam" {
				t.Errorf("command recorded for stream %q, want cam", r.Subject)
			}
			var c recording.CommandBody
			if err := json.Unmarshal(r.Data, &c); err != nil {
				return fmt.Errorf("command record %s: %w", r.Data, err)
			}
			var body struct {
				CmdSeq float64 `json:"cmd_seq"`
			}
			if err := json.Unmarshal(c.Payload, &body); err != nil {
				return fmt.Errorf("command payload %s: %w", c.Payload, err)
			}
			if _, ok := got[body.CmdSeq]; ok {
				dups = append(dups, body.CmdSeq)
			}
			got[body.CmdSeq] = c
			return nil
		})
		if err != nil {
			t.Logf("reading the recording: %v", err)
		}
		return len(got) >= len(wants)
	})
	if len(dups) > 0 || len(got) != len(wants) {
		t.Errorf("commands recorded: %d, duplicated %v; want each of %d once", len(got), dups, len(wants))
	}
	for seq, w := range wants {
		c, ok := got[seq]
		if !ok {
			t.Errorf("cmd_seq %v not recorded", seq)
			continue
		}
		if c.Action != w.action || c.Outcome != w.outcome || !strings.HasPrefix(c.Reason, w.reason) || (w.reason == "" && c.Reason != "") {
			t.Errorf("cmd_seq %v recorded as action %q outcome %q reason %q, want %q %q %q", seq, c.Action, c.Outcome, c.Reason, w.action, w.outcome, w.reason)
		}
		client := wsClient
		if seq == 6 || seq == 7 {
			client = "127.0.0.1:" // the WHEP POST's
		}
		if !strings.HasPrefix(c.Client, client) || (seq != 6 && seq != 7 && c.Client != wsClient) {
			t.Errorf("cmd_seq %v recorded from client %q, want %q", seq, c.Client, client)
		}
	}
	if c := got[6]; c.Client == wsClient {
		t.Errorf("the WHEP session's command recorded as the WebSocket's (%s)", c.Client)
	}
}
