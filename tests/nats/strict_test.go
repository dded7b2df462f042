package nats

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestCommandsStrictJSONLive runs the binary between a real nats-server and
// a ring writer, with the safety gate in ESTOP (the writer paused). On
// /stream/ws and /nats/ws, a 0x04 body that Go and the simulator's Python
// would read differently ({"action":"set_cmd_vel","ACTION":"pause"}: Go
// judged it pause and published it during ESTOP, Python reads set_cmd_vel),
// a duplicate key, invalid UTF-8 or nesting 33 deep is refused with an ack
// saying why and reaches no NATS subscriber; a valid body, spelled
// however, is published byte for byte. A close frame with code 999 or a
// reason that is not UTF-8 is answered 1002 on /stream/ws.
func TestCommandsStrictJSONLive(t *testing.T) {
	natsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	ns := startNATSServer(t, natsPort)
	rw := shmringtest.NewWriter(t, "", 1<<20)
	pause := rw.Start(t, simulator)
	caddy := testenv.StartCaddy(t, fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	sdr_nats {
		url %s
		command_rate off
		gate {
			hold 100ms
			estop 300ms
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
`, ns.URL(), httpPort, rw.Path), nil, nil)
	admin := caddy.AdminAddr
	waitMetric(t, admin, "caddy_sdr_nats_connected", "1", 10*time.Second)
	sim := testenv.ConnectNATS(t, ns.URL())
	cmds := testenv.Collect(t, sim, "command.genesis.>")
	waitMetric(t, admin, `caddy_sdr_gate_armed{stream="default"}`, "1", 10*time.Second)
	pause()
	waitMetric(t, admin, `caddy_sdr_gate_mode{stream="default"}`, "2", 10*time.Second) // ESTOP

	deep := func(n, seq int) string {
		return fmt.Sprintf(`{"action":"pause","cmd_seq":%d,"data":%s%s}`, seq, strings.Repeat("[", n-1), strings.Repeat("]", n-1))
	}
	for i, path := range []string{"/stream/ws", "/nats/ws"} {
		c := dialWS(t, fmt.Sprintf("ws://127.0.0.1:%d%s", httpPort, path))
		base := 100 * (i + 1)
		for _, tc := range []struct {
			seq          int
			body, detail string
		}{
			{base + 1, fmt.Sprintf(`{"action":"set_cmd_vel","ACTION":"pause","cmd_seq":%d}`, base+1),
				`command refused: duplicate key "ACTION" (same as "action" but for case) at byte 24`},
			{base + 2, fmt.Sprintf(`{"action":"pause","action":"set_cmd_vel","cmd_seq":%d}`, base+2), `command refused: duplicate key "action" at byte 18`},
			{base + 3, fmt.Sprintf("{\"action\":\"pause\",\"cmd_seq\":%d,\"data\":\"\xff\"}", base+3), "command refused: invalid UTF-8 at byte 40"},
			{base + 4, deep(33, base+4), "command refused: nesting deeper than 32"},
		} {
			c.send(t, tc.body)
			p := c.await(t, "telemetry.command.ack", ackWith(tc.seq, "rejected"), 10*time.Second)
			var a struct {
				Action *string `json:"action"`
				Detail string  `json:"detail"`
			}
			if err := json.Unmarshal([]byte(p), &a); err != nil || a.Action != nil || !strings.Contains(a.Detail, tc.detail) {
				t.Errorf("%s: %.60q answered %s, want no action and a detail saying %q", path, tc.body, p, tc.detail)
			}
		}
		valid := fmt.Sprintf(" {\"cmd_seq\" : %d ,\n\"action\":\"pause\", \"data\":{\"x\":1.50e0,\"s\":\"\\u00e9\u00e9\",\"n\":%s}}\t",
			base+5, strings.Repeat("[", 30)+strings.Repeat("]", 30))
		c.send(t, valid)
		// One connection to NATS, in order: whatever the refused commands
		// had published would come before the valid one. The server's own
		// may come too: the gate's ESTOP and zero velocity (marked
		// _safety), the keyframe request of a new /stream/ws client.
		testenv.ExpectMsg(t, cmds, path+": the valid command", testwait.Timeout(10*time.Second), func(m *nats.Msg) bool {
			if string(m.Data) == valid {
				if m.Subject != "command.genesis.pause" {
					t.Errorf("%s: the valid command went to %s", path, m.Subject)
				}
				return true
			}
			if !strings.Contains(string(m.Data), `"_safety"`) && m.Subject != "command.genesis.force_idr" {
				t.Errorf("%s: published %s %q, want only the valid command, byte for byte", path, m.Subject, m.Data)
			}
			return false
		})
	}

	// Close frames no peer may send are answered 1002 on /stream/ws.
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"close code 999", websocket.FormatCloseMessage(999, "")},
		{"close reason not UTF-8", append(websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), 0xc3)},
	} {
		conn, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/stream/ws", httpPort), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.WriteControl(websocket.CloseMessage, tc.payload, testwait.Deadline(10*time.Second)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(testwait.Deadline(10 * time.Second))
		var ce *websocket.CloseError
		for {
			if _, _, err = conn.ReadMessage(); err != nil {
				break
			}
		}
		if !errors.As(err, &ce) || ce.Code != websocket.CloseProtocolError {
			t.Errorf("%s on /stream/ws: %v, want close 1002", tc.name, err)
		}
		conn.Close()
	}
}
