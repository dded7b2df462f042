package stream

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/natsvideo"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// With sdr_nats configured, the stream's safety gate runs from startup with
// no browser attached, keyframe requests go to command.genesis.force_idr,
// telemetry reaches the clients and each client's commands reach NATS.
// videoCadence is 100 frames/s, a keyframe every tenth.
var videoCadence = shmringtest.Cadence{Period: 10 * time.Millisecond, GOP: 10, Size: 1000}

func TestStreamWithNATS(t *testing.T) {
	natsURL := testenv.StartNATS(t)
	nc := testenv.ConnectNATS(t, natsURL)
	msgs := testenv.Collect(t, nc, "command.genesis.>", "telemetry.safety.video_gate")

	w := shmringtest.NewWriter(t, "", 1<<20)
	s := startServer(t, testenv.NATSOptions(natsURL), fmt.Sprintf(`	handle /stream/* {
		sdr_stream cam {
			source shm %s
		}
	}`, w.Path))

	// Video for a moment, then none: the gate holds within about a second,
	// with no client connected.
	stop := w.Start(t, videoCadence)
	s.waitHealth(t, "/stream/health", "frames", func(h map[string]any) bool { return h["shm_seq"].(float64) > 10 })
	stop()
	stopped := time.Now()
	// How soon is the gate timer's business, judged on a fake clock in
	// internal/gate; here it must come (hang detector).
	m := testenv.ExpectMsg(t, msgs, "telemetry.safety.video_gate gated:true", testwait.Default, func(m *nats.Msg) bool {
		return m.Subject == "telemetry.safety.video_gate" && strings.Contains(string(m.Data), `"gated":true`)
	})
	t.Logf("gate with no browser: %s after %v", m.Data, time.Since(stopped).Round(time.Millisecond))

	// The health JSON keeps the old service's fields in their order and
	// adds the NATS connection state after them.
	checkHealthOrder(t, s, "/stream/health", "connected", true)

	// A client connects: a keyframe request goes to NATS.
	defer w.Start(t, videoCadence)()
	c := dial(t, s.ws+"/stream/ws")
	testenv.ExpectMsg(t, msgs, "command.genesis.force_idr", 5*time.Second, func(m *nats.Msg) bool {
		return m.Subject == "command.genesis.force_idr"
	})

	// Telemetry from NATS reaches the client as 0x02.
	got := make(chan string, 16)
	go func() {
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				close(got)
				return
			}
			if msg[0] == wire.TypeTelemetry {
				subj, payload, err := wire.ParseTelemetry(msg)
				if err == nil {
					got <- subj + " " + string(payload)
				}
			}
		}
	}()
	// Published until one reaches the client: the relay's subscription
	// may not be in place at the first.
	deadline := testwait.After(10 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for found := false; !found; {
		if err := nc.Publish("telemetry.frame.stats", []byte(`{"frame_id":1}`)); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			found = m == `telemetry.frame.stats {"frame_id":1}`
		case <-tick.C:
		case <-deadline:
			t.Fatal("telemetry never reached the client")
		}
	}

	// A command goes out on command.genesis.<action>.
	cmd := `{"action":"pause","cmd_seq":7,"ttl_ms":500,"data":{}}`
	if err := c.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, cmd...)); err != nil {
		t.Fatal(err)
	}
	pm := testenv.ExpectMsg(t, msgs, "command.genesis.pause", 5*time.Second, func(m *nats.Msg) bool {
		return m.Subject == "command.genesis.pause"
	})
	var body map[string]any
	if err := json.Unmarshal(pm.Data, &body); err != nil || body["cmd_seq"] != float64(7) {
		t.Errorf("published command %s: %v", pm.Data, err)
	}
}

// checkHealthOrder reads the health JSON at path raw and checks its keys:
// the old service's fields (docs/protocol.md, "Health"), in that order, then
// "nats" with state nats ("" for none), then, for a ring source, "ring" and
// "reader_heartbeat_age_ms".
func checkHealthOrder(t *testing.T, s *server, path, nats string, ring bool) {
	t.Helper()
	resp, err := plainClient.Get(s.base + path)
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	want := []string{"status", "clients", "shm_seq", "last_frame_age_ms", "uptime_s",
		"frames_broadcast", "client_lag_total", "avg_frame_size_bytes"}
	if nats != "" {
		want = append(want, "nats")
	}
	if ring {
		want = append(want, "ring", "reader_heartbeat_age_ms")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	var keys []string
	if _, err := dec.Token(); err != nil {
		t.Fatalf("health %s: %v", body, err)
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatalf("health %s: %v", body, err)
		}
		keys = append(keys, k.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("health %s: %v", body, err)
		}
	}
	if !slices.Equal(keys, want) {
		t.Errorf("health keys %v, want %v (%s)", keys, want, body)
	}
	var h map[string]any
	_ = json.Unmarshal(body, &h)
	if nats != "" && h["nats"] != nats {
		t.Errorf("health nats = %v, want %q (%s)", h["nats"], nats, body)
	}
}

// An edge (source nats) reports in shm_seq the frame_seq it last received
// from the origin, and both report the NATS connection state.
func TestStreamEdgeHealthFromNATS(t *testing.T) {
	natsURL := testenv.StartNATS(t)
	// What the origin published, seen as the edge sees it. The origin may
	// publish less than its ring holds: on a loaded machine its reader can
	// miss a frame, and it then holds the deltas after it back until a
	// keyframe, which a stopped writer never sends.
	var published atomic.Uint64
	nc := testenv.ConnectNATS(t, natsURL)
	if _, err := nc.Subscribe("video.cam", func(m *nats.Msg) {
		if h, err := shmring.ParseHeader(m.Data); err == nil && m.Header.Get(natsvideo.HeaderPart) == "" {
			published.Store(h.FrameSeq)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	w := shmringtest.NewWriter(t, "", 1<<20)
	s := startServer(t, testenv.NATSOptions(natsURL), fmt.Sprintf(`	handle /stream/* {
		sdr_stream cam {
			source shm %s
			publish video.cam
		}
	}
	handle /edge/* {
		sdr_stream edge {
			source nats video.cam
		}
	}`, w.Path))
	checkHealthOrder(t, s, "/edge/health", "connected", false)

	stop := w.Start(t, videoCadence)
	s.waitHealth(t, "/edge/health", "frames at the edge", func(h map[string]any) bool {
		return h["shm_seq"].(float64) > 20
	})
	stop()
	// With the writer stopped, the edge catches up with the last frame the
	// origin published, which is the ring's last unless the origin's reader
	// missed one.
	s.waitHealth(t, "/edge/health", "the edge's shm_seq at the last frame_seq the origin published", func(h map[string]any) bool {
		return h["shm_seq"].(float64) == float64(published.Load())
	})
	if origin, edge := s.health(t, "/stream/health")["shm_seq"].(float64), s.health(t, "/edge/health")["shm_seq"].(float64); edge > origin {
		t.Errorf("edge shm_seq %v beyond the origin's %v", edge, origin)
	}
	checkHealthOrder(t, s, "/stream/health", "connected", true)
	checkHealthOrder(t, s, "/edge/health", "connected", false)
}
