package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/caddymodule/recorder"
	"github.com/sdr-os/sdr-caddy/caddymodule/stream"
	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/replay"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// The sdr_recorder app is what sdr_stream replays from.
var _ stream.Recordings = (*recorder.App)(nil)

// Through Caddy, without an sdr_recorder app: a replay request is answered
// 501 with a message saying what it needs, a bad value 400 with one naming
// it, each before any upgrade; a live client of the same handler gets its
// video as before.
func TestStreamServeReplayWithoutRecorder(t *testing.T) {
	w := startStream(t, "")
	for _, c := range []struct {
		query string
		code  int
		body  string
	}{
		{"replay=-30s", http.StatusNotImplemented, "sdr_stream default: replay needs the sdr_recorder app"},
		{"replay=-30s&speed=9", http.StatusBadRequest, `sdr_stream default: speed "9": want a number from 0.25 to 4`},
		{"replay=noon", http.StatusBadRequest, `sdr_stream default: replay "noon": not a time`},
	} {
		ws, resp, err := websocket.DefaultDialer.Dial("ws://localhost:9080/stream/ws?"+c.query, nil)
		if err == nil {
			_ = ws.Close()
			t.Fatalf("%s: upgraded, want %d", c.query, c.code)
		}
		if resp == nil {
			t.Fatalf("%s: %v", c.query, err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != c.code || !strings.HasPrefix(string(body), c.body) {
			t.Fatalf("%s: %d %q, want %d %q", c.query, resp.StatusCode, body, c.code, c.body)
		}
	}
	live := streamDial(t, "ws://localhost:9080/stream/ws?speed=2", nil) // speed alone: live
	key := w.Write(t, true, 100)
	if h, _ := shmringtest.ReadVideo(t, live); h.FrameSeq != key || !h.Keyframe() {
		t.Fatalf("live client got frame %d (keyframe %v), want keyframe %d", h.FrameSeq, h.Keyframe(), key)
	}
}

// readVideoMsg returns the next 0x01 message c receives.
func readVideoMsg(t *testing.T, c *websocket.Conn) []byte {
	t.Helper()
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("reading video: %v", err)
		}
		if len(msg) > 0 && msg[0] == wire.TypeVideo {
			return msg
		}
	}
}

// Through Caddy with sdr_nats (embedded, JetStream on) and sdr_recorder:
// the stream's frames are recorded from the ring, and a replay from a
// moment between two frames gets the very 0x01 messages a live client got,
// byte for byte, from the keyframe before that moment on (frames 4 to 7 of
// 8, a keyframe every 4, the moment after frame 5), then close 1000
// "end of recording". A command on the replay is refused with an ack and
// never reaches NATS.
func TestStreamServeReplayOfRecording(t *testing.T) {
	natsPort := testenv.FreePort(t)
	path := filepath.Join(t.TempDir(), "frames")
	w := shmringtest.NewWriter(t, path, 1<<20)
	tester := caddytest.NewTester(t)
	tester.InitServer(recorderGlobals(t, 9080, natsPort, "", "idr_interval off")+fmt.Sprintf(`
	http://localhost:9080 {
		handle /stream/* {
			sdr_stream {
				source shm %s
			}
		}
	}`, path), "caddyfile")
	unloadOnCleanup(t)
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cmds := subscribeChan(t, nc, "command.genesis.estop", 16) // joins publish force_idr
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the recorder to record", func() bool {
		return strings.Contains(adminMetrics(t), "caddy_sdr_recorder_state 1\n")
	})

	live := streamDial(t, "ws://localhost:9080/stream/ws", nil)
	waitHealth(t, "http://localhost:9080/stream/health", func(h map[string]any) bool { return h["clients"] == float64(1) })
	var (
		liveMsgs [][]byte
		from     time.Time
	)
	for i := range 8 {
		w.Write(t, i%4 == 0, 1000+i)
		liveMsgs = append(liveMsgs, readVideoMsg(t, live))
		if i == 5 {
			from = time.Now() // after frame 5 was read from the ring, before frame 6 was written
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(testwait.Default))
	defer cancel()
	testwait.For(t, "the 8 frames in the recording", func() bool {
		st, err := recording.Read(ctx, js, recording.ReadOptions{Kinds: []recording.Kind{recording.KindVideo}}, func(recording.Record) error { return nil })
		return err == nil && st.Frames == 8
	})

	rc := streamDial(t, "ws://localhost:9080/stream/ws?replay="+url.QueryEscape(from.UTC().Format(time.RFC3339Nano))+"&speed=0.25", nil)
	// At once: the server reads it while it reads the recording. A replay
	// this short may end before the server has read it, so the ack is
	// checked when it comes; that every command on a replay is answered
	// is checked where the replay can be held open (stream/replay_test.go, TestReplayRejectsCommands)
	// and in internal/replay. That it never reaches NATS is checked here.
	if err := rc.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, `{"action":"estop","cmd_seq":4}`...)); err != nil {
		t.Fatal(err)
	}
	var video [][]byte
	acked := false
	for {
		_, msg, err := rc.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if ce.Code != websocket.CloseNormalClosure || ce.Text != replay.ReasonEnd {
				t.Fatalf("end of the replay: %v, want close 1000 %q", err, replay.ReasonEnd)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if msg[0] == wire.TypeVideo {
			video = append(video, msg)
			continue
		}
		if subj, payload, err := wire.ParseTelemetry(msg); err == nil && subj == "telemetry.command.ack" {
			var ack struct{ Status, Detail string }
			if err := json.Unmarshal(payload, &ack); err != nil || ack.Status != "rejected" || ack.Detail != replay.RejectDetail {
				t.Fatalf("ack %s (%v), want rejected: %s", payload, err, replay.RejectDetail)
			}
			acked = true
		}
	}
	if !acked {
		t.Log("the replay ended before the server read the command")
	}
	liveMsgs = liveMsgs[4:] // from the keyframe before from: frame 4
	if len(video) != len(liveMsgs) {
		t.Fatalf("%d video messages replayed, want the live client's %d", len(video), len(liveMsgs))
	}
	for i, want := range liveMsgs {
		if got := video[i]; !bytes.Equal(got, want) {
			t.Fatalf("replayed video message %d: % x... (%d bytes), want the live client's % x... (%d bytes)",
				i, got[:min(len(got), 12)], len(got), want[:min(len(want), 12)], len(want))
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-cmds:
		t.Fatalf("a command reached NATS from the replay: %s %s", m.Subject, m.Data)
	default:
	}
}
