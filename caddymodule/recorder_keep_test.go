package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/replay"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestRecorderKeepOverStreamWS keeps a window through /stream/ws, with the
// control lease on: keep is refused without control and with a bad name,
// taken from the holder (acked ok with the kept stream), never published
// on NATS, recorded as a command with outcome kept; the copy holds the
// window's frames, the timeline JSON lists the window, and the admin
// export reads the kept stream. Its sdr_stream is named kept: the
// recorder's metrics outlive the configuration, and other tests count the
// frames of "default".
func TestRecorderKeepOverStreamWS(t *testing.T) {
	natsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	path := filepath.Join(t.TempDir(), "frames")
	w := shmringtest.NewWriter(t, path, 1<<20)
	tester := caddytest.NewTester(t)
	tester.InitServer(recorderGlobals(t, httpPort, natsPort, "control {\n\t\t\t\tlease on\n\t\t\t}",
		"storage memory\n\t\t\tmax_bytes 64MiB\n\t\t\tidr_interval off\n\t\t\tkeep_max 4")+fmt.Sprintf(`
	http://localhost:%d {
		handle /stream/* {
			sdr_stream {
				name kept
				source shm %s
			}
		}
	}`, httpPort, path), "caddyfile")
	unloadOnCleanup(t)

	nc, js := connectJS(t, natsPort)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(testwait.Default))
	defer cancel()
	commands := subscribeChan(t, nc, "command.genesis.>", 64)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the recorder recording", func() bool { return metricValue(t, "caddy_sdr_recorder_state") == 1 })
	rose := metricsSince(t) // the recorder's counters count on across config loads

	health := fmt.Sprintf("http://localhost:%d/stream/health", httpPort)
	write := func(n int) {
		for i := range n {
			seq := w.Write(t, i == 0, 1500+i)
			waitHealth(t, health, func(h map[string]any) bool { return h["shm_seq"] == float64(seq) })
		}
	}
	write(6)
	testwait.For(t, "6 frames recorded", func() bool {
		return rose(`caddy_sdr_recorder_frames_total{stream="kept"}`) == 6
	})

	c := streamDial(t, fmt.Sprintf("ws://localhost:%d/stream/ws", httpPort), nil)
	ack := func(body string) map[string]any {
		t.Helper()
		if err := c.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, body...)); err != nil {
			t.Fatal(err)
		}
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("reading the ack of %s: %v", body, err)
			}
			if subj, payload, err := wire.ParseTelemetry(msg); err == nil && subj == "telemetry.command.ack" {
				var a map[string]any
				if err := json.Unmarshal(payload, &a); err != nil {
					t.Fatal(err)
				}
				return a
			}
		}
	}
	if a := ack(`{"action":"keep","cmd_seq":1}`); a["status"] != "rejected" || !strings.Contains(fmt.Sprint(a["detail"]), "control") {
		t.Errorf("keep without control: %v", a)
	}
	if a := ack(`{"action":"take_control","cmd_seq":2}`); a["status"] != "ok" {
		t.Fatalf("take_control: %v", a)
	}
	if a := ack(`{"action":"keep","cmd_seq":3,"data":{"name":"a.b"}}`); a["status"] != "rejected" || !strings.Contains(fmt.Sprint(a["detail"]), "[A-Za-z0-9_-]") {
		t.Errorf("keep with a bad name: %v", a)
	}
	a := ack(`{"action":"keep","cmd_seq":4,"data":{"name":"wall","before_s":600,"after_s":0}}`)
	if a["status"] != "ok" || a["kept"] != "SDR_REC_KEEP_wall" || a["cmd_seq"] != 4.0 || !strings.Contains(fmt.Sprint(a["detail"]), "SDR_REC_KEEP_wall") {
		t.Fatalf("keep with control: %v", a)
	}
	// Commands of one client reach NATS in order: the published pause
	// comes after any keep that was published, and none is.
	if a := ack(`{"action":"keep","cmd_seq":5,"data":{"name":"wall2"}}`); a["status"] != "rejected" || !strings.Contains(fmt.Sprint(a["detail"]), "still copying") {
		t.Errorf("keep during a copy: %v", a)
	}
	if err := c.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, `{"action":"pause","cmd_seq":6}`...)); err != nil {
		t.Fatal(err)
	}
	for {
		m := testwait.Recv(t, commands, "the pause on NATS")
		if strings.HasSuffix(m.Subject, ".keep") {
			t.Fatalf("keep published on %s: %s", m.Subject, m.Data)
		}
		if m.Subject == "command.genesis.pause" {
			break
		}
	}
	write(2) // after the window

	// The timeline lists the window, copying until the copy is done.
	var tl struct {
		Kept []recording.Kept `json:"kept"`
	}
	var last string
	defer func() {
		if t.Failed() {
			t.Logf("last timeline: %s", last)
		}
	}()
	testwait.For(t, "the kept window copied, in the timeline", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://localhost:%d/stream/ws?recording", httpPort))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		last = string(b)
		tl.Kept = nil
		return json.Unmarshal(b, &tl) == nil && len(tl.Kept) == 1 && !tl.Kept[0].Copying
	})
	if k := tl.Kept[0]; k.Name != "wall" || k.Stream != "SDR_REC_KEEP_wall" || k.Bytes == 0 || k.To.Sub(k.From) < 10*time.Minute {
		t.Errorf("kept window in the timeline: %+v", k)
	}
	var frames int
	if _, err := recording.Read(ctx, js, recording.ReadOptions{Stream: "SDR_REC_KEEP_wall", Kinds: []recording.Kind{recording.KindVideo}},
		func(recording.Record) error { frames++; return nil }); err != nil || frames != 6 {
		t.Errorf("kept stream: %d frames (%v), want the 6 before the keep", frames, err)
	}
	var outcomes []string
	if _, err := recording.Read(ctx, js, recording.ReadOptions{Kinds: []recording.Kind{recording.KindCommand}}, func(r recording.Record) error {
		var cb recording.CommandBody
		if err := json.Unmarshal(r.Data, &cb); err == nil && cb.Action == "keep" {
			outcomes = append(outcomes, cb.Outcome)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(outcomes) != "[rejected rejected kept rejected]" {
		t.Errorf("keep records' outcomes %v", outcomes)
	}
	code, hdr, body := adminGet(t, "/sdr/export?stream=SDR_REC_KEEP_wall")
	if code != 200 || hdr.Get("Sdr-Export-Frames") != "6" {
		t.Errorf("GET /sdr/export?stream=SDR_REC_KEEP_wall: %d %v %.80q", code, hdr, body)
	}

	// The purged recording leaves the kept window: a replay with
	// &kept=wall plays its 6 frames from the window's start, and a keep on
	// that replay connection is refused.
	rs, err := js.Stream(ctx, recording.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	from := tl.Kept[0].From.UTC().Format(time.RFC3339Nano)
	if c, resp, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://localhost:%d/stream/ws?replay=%s&kept=nope", httpPort, from), nil); err == nil {
		c.Close()
		t.Error("replay of a kept window that is not there: upgraded")
	} else if resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("replay of a kept window that is not there: %v, want 404", err)
	}
	rc := streamDial(t, fmt.Sprintf("ws://localhost:%d/stream/ws?replay=%s&kept=wall", httpPort, from), nil)
	if err := rc.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, `{"action":"keep","cmd_seq":9}`...)); err != nil {
		t.Fatal(err)
	}
	replayed, refused := 0, ""
	for {
		_, msg, err := rc.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if ce.Code != websocket.CloseNormalClosure || ce.Text != replay.ReasonEnd {
				t.Fatalf("end of the kept replay: %v", err)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if msg[0] == wire.TypeVideo {
			replayed++
		} else if subj, payload, err := wire.ParseTelemetry(msg); err == nil && subj == "telemetry.command.ack" {
			refused = string(payload)
		}
	}
	if replayed != 6 {
		t.Errorf("replay of the kept window: %d frames, want 6", replayed)
	}
	if refused != "" && !strings.Contains(refused, replay.RejectDetail) {
		t.Errorf("keep on a replay connection: %s", refused)
	}
}
