package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestRecorderLiveRecordsStream runs Caddy with the embedded nats-server
// (JetStream on), sdr_recorder and an sdr_stream on a ring, writes frames,
// sends a published and a rejected command on /stream/ws and one on the
// sdr_nats handler's /nats/ws, publishes
// telemetry and a gate message on NATS, and reads the recording back with
// recording.Read: the frames' bytes as the ring's writer wrote them, the
// commands with their outcomes, the telemetry and the gate's message; then
// it waits for the recorder's periodic keyframe requests.
func TestRecorderLiveRecordsStream(t *testing.T) {
	natsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	path := filepath.Join(t.TempDir(), "frames")
	w := shmringtest.NewWriter(t, path, 1<<20)
	tester := caddytest.NewTester(t)
	tester.InitServer(recorderGlobals(t, httpPort, natsPort, "", "storage memory\n\t\t\tmax_bytes 64MiB\n\t\t\tidr_interval 300ms")+fmt.Sprintf(`
	http://localhost:%d {
		handle /stream/* {
			sdr_stream {
				source shm %s
			}
		}
		handle /nats/* {
			sdr_nats
		}
	}`, httpPort, path), "caddyfile")
	unloadOnCleanup(t)

	nc, js := connectJS(t, natsPort)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(testwait.Default))
	defer cancel()
	testwait.For(t, "the recorder recording", func() bool {
		return metricValue(t, "caddy_sdr_recorder_state") == 1
	})
	// The recorder's counters count on across the package's config loads.
	rose := metricsSince(t)

	health := fmt.Sprintf("http://localhost:%d/stream/health", httpPort)
	frames := map[uint64]int{} // frame_seq -> the writer's index
	write := func(key bool, size int) {
		i := len(frames)
		seq := w.Write(t, key, size)
		frames[seq] = i
		waitHealth(t, health, func(h map[string]any) bool { return h["shm_seq"] == float64(seq) })
	}
	for i := range 6 {
		write(i == 0, 2000+i)
	}
	c := streamDial(t, fmt.Sprintf("ws://localhost:%d/stream/ws", httpPort), nil)
	send := func(body string) {
		if err := c.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, body...)); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"action":"estop","cmd_seq":1}`)
	send(`{"action":"not an action","cmd_seq":2}`)
	testwait.For(t, "the 2 commands recorded", func() bool {
		return rose(`caddy_sdr_recorder_records_total{kind="command"}`) >= 2
	})
	// The sdr_nats handler's commands are recorded too.
	cn := streamDial(t, fmt.Sprintf("ws://localhost:%d/nats/ws", httpPort), nil)
	if err := cn.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, `{"action":"pause","cmd_seq":3}`...)); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the third command recorded", func() bool {
		return rose(`caddy_sdr_recorder_records_total{kind="command"}`) >= 3
	})
	if err := nc.Publish("telemetry.odom", []byte(`{"x":1.5}`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(recording.GateSubject, []byte(`{"gated":true,"mode":"HOLD","stale_ms":1500}`)); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		write(i == 0, 300_000) // larger than one message at most: a split frame
	}
	testwait.For(t, "12 frames, 3 commands, telemetry and the gate recorded", func() bool {
		return rose(`caddy_sdr_recorder_frames_total{stream="default"}`) == 12 &&
			rose(`caddy_sdr_recorder_records_total{kind="command"}`) >= 3 &&
			rose(`caddy_sdr_recorder_records_total{kind="telemetry"}`) >= 1 &&
			rose(`caddy_sdr_recorder_records_total{kind="gate"}`) >= 1
	})
	wantCommands := []string{
		`command estop published {"action":"estop","cmd_seq":1}`,
		`command not an action rejected {"action":"not an action","cmd_seq":2}`,
		`command pause published {"action":"pause","cmd_seq":3}`,
	}
	// Records of different subjects may be stored in any order: only a
	// subject's own keep the order sdr-caddy saw them in.
	wantOthers := []string{
		`gate telemetry.safety.video_gate {"gated":true,"mode":"HOLD","stale_ms":1500}`,
		`telemetry telemetry.odom {"x":1.5}`,
	}
	var commands, others []string
	var video int
	testwait.For(t, "the records stored", func() bool {
		commands, others, video = nil, nil, 0
		_, err := recording.Read(ctx, js, recording.ReadOptions{}, func(r recording.Record) error {
			switch r.Kind {
			case recording.KindVideo:
				i, ok := frames[r.Frame.Header.FrameSeq]
				size := 2000 + i
				if i >= 6 {
					size = 300_000
				}
				if !ok || !bytes.Equal(r.Frame.Payload, bytes.Repeat([]byte{byte(i)}, size)) || r.Subject != "default" {
					t.Errorf("frame %d: %d bytes differ from what the writer wrote", r.Frame.Header.FrameSeq, len(r.Frame.Payload))
				}
				video++
			case recording.KindCommand:
				var cb recording.CommandBody
				if err := json.Unmarshal(r.Data, &cb); err != nil {
					t.Fatal(err)
				}
				commands = append(commands, fmt.Sprintf("command %s %s %s", cb.Action, cb.Outcome, cb.Payload))
			case recording.KindGate:
				// The gate's own transitions are recorded too: on a slow
				// machine the video may stall for its 1 s between writes.
				if g := "gate " + r.Subject + " " + string(r.Data); g == wantOthers[0] {
					others = append(others, g)
				}
			default:
				if !strings.HasPrefix(r.Subject, "telemetry.frame") { // the stream's own telemetry, if any
					others = append(others, r.Kind.String()+" "+r.Subject+" "+string(r.Data))
				}
			}
			return nil
		})
		return err == nil && video == 12 && len(commands) >= 3 && len(others) >= 2
	})
	slices.Sort(others)
	if got, want := strings.Join(append(commands, others...), "\n"), strings.Join(append(wantCommands, wantOthers...), "\n"); got != want {
		t.Errorf("records:\n%s\nwant\n%s", got, want)
	}

	// No keyframe comes from the writer now: the recorder asks the
	// producer for one (command.genesis.force_idr, through the stream's
	// coalesced requests), and again while none comes.
	idr := subscribeChan(t, nc, "command.genesis.force_idr", 16)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		testwait.Recv(t, idr, "a keyframe request from the recorder")
	}
	if rose("caddy_sdr_recorder_keyframe_requests_total") < 2 {
		t.Error("caddy_sdr_recorder_keyframe_requests_total rose by less than 2")
	}

	// The admin API exports the recording: an MCAP file with the stream's
	// video channel and the 12 frames (the files themselves are read back
	// by @mcap/core in tests/recorder); no MP4 of frames that are not
	// H.264; bad parameters are refused.
	code, hdr, body := adminGet(t, "/sdr/export?from=-10m&to=now")
	if code != 200 || !bytes.HasPrefix(body, []byte("\x89MCAP0\r\n")) || !bytes.Contains(body, []byte("video.default")) ||
		!strings.HasPrefix(hdr.Get("Content-Disposition"), "attachment;") || hdr.Get("Sdr-Export-Frames") != "12" {
		t.Errorf("GET /sdr/export: %d %v, %d bytes %.40q", code, hdr, len(body), body)
	}
	if code, _, body := adminGet(t, "/sdr/export?format=mp4"); code != 404 || !bytes.Contains(body, []byte("no video")) {
		t.Errorf("GET /sdr/export?format=mp4 of frames that are not H.264: %d %s", code, body)
	}
	for _, q := range []string{"format=avi", "from=yesterday", "from=-1m&to=-2m", "video=default", "stream=a.b"} {
		if code, _, body := adminGet(t, "/sdr/export?"+q); code != 400 {
			t.Errorf("GET /sdr/export?%s: %d %s, want 400", q, code, body)
		}
	}
	if code, _, _ := adminGet(t, "/sdr/export?stream=NOPE"); code != 404 {
		t.Errorf("GET /sdr/export?stream=NOPE: %d, want 404", code)
	}
}

// adminGet gets path from caddytest's admin listener.
func adminGet(t *testing.T, path string) (int, http.Header, []byte) {
	t.Helper()
	return adminDo(t, http.MethodGet, path)
}

// TestRecorderNeedsJetStream: sdr_recorder with the embedded nats-server
// running without JetStream is refused with the fix in the error.
func TestRecorderNeedsJetStream(t *testing.T) {
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(`{
	admin localhost:2999
	sdr_nats
	sdr_recorder
}
http://localhost:9080 {
	respond ok
}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	unloadOnCleanup(t)
	err = caddy.Load(cfg, true)
	if err == nil || !strings.Contains(err.Error(), "jetstream on") {
		t.Errorf("loading: %v, want an error saying to turn jetstream on", err)
	}
}

// TestExportWithoutRecorder: the admin API's export says that no recorder
// runs.
func TestExportWithoutRecorder(t *testing.T) {
	tester := caddytest.NewTester(t)
	tester.InitServer(fmt.Sprintf(`
	{
		admin localhost:2999
		skip_install_trust
		http_port %d
	}
	http://localhost:%d {
		respond ok
	}`, testenv.FreePort(t), testenv.FreePort(t)), "caddyfile")
	unloadOnCleanup(t)
	if code, _, body := adminGet(t, "/sdr/export"); code != 503 || !bytes.Contains(body, []byte("no sdr_recorder is running")) {
		t.Errorf("GET /sdr/export without sdr_recorder: %d %s, want 503", code, body)
	}
}

// adminDo sends method path to caddytest's admin listener.
func adminDo(t *testing.T, method, path string) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(testwait.Default))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost:2999"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

// recorderGlobals is a recorder test's global options: caddytest's admin,
// the HTTP port, the embedded nats-server on natsPort with JetStream (its
// store in a new directory) and natsExtra, and sdr_recorder with
// recorderOpts.
func recorderGlobals(t *testing.T, httpPort, natsPort int, natsExtra, recorderOpts string) string {
	return fmt.Sprintf(`
	{
		admin localhost:2999
		skip_install_trust
		http_port %d
		sdr_nats {
			embedded {
				listen 127.0.0.1:%d
				jetstream on
				store_dir %s
			}
			%s
		}
		sdr_recorder {
			%s
		}
	}
`, httpPort, natsPort, t.TempDir(), natsExtra, recorderOpts)
}

// connectJS connects to the embedded nats-server on natsPort, for the
// test's length, and returns the connection and its JetStream.
func connectJS(t *testing.T, natsPort int) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// TestRecorderAdminPause pauses and resumes the recorder on the admin API
// while a ring writer writes: the frames written while it is paused are
// not recorded and not counted as dropped, the state shows on GET
// /sdr/recorder and in caddy_sdr_recorder_state, and a config load keeps
// the pause.
func TestRecorderAdminPause(t *testing.T) {
	natsPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	path := filepath.Join(t.TempDir(), "frames")
	w := shmringtest.NewWriter(t, path, 1<<20)
	config := recorderGlobals(t, httpPort, natsPort, "", "storage memory\n\t\t\tmax_bytes 64MiB\n\t\t\tidr_interval off") + fmt.Sprintf(`
	http://localhost:%d {
		handle /stream/* {
			sdr_stream {
				source shm %s
			}
		}
	}`, httpPort, path)
	tester := caddytest.NewTester(t)
	tester.InitServer(config, "caddyfile")
	unloadOnCleanup(t)
	// Runs before the unload: the pause is the process's, and must not
	// outlive the test.
	t.Cleanup(func() { adminDo(t, http.MethodPost, "/sdr/recorder/resume") })
	testwait.For(t, "the recorder recording", func() bool {
		return metricValue(t, "caddy_sdr_recorder_state") == 1
	})
	rose := metricsSince(t)
	status := func(method, path string) map[string]any {
		t.Helper()
		code, _, body := adminDo(t, method, path)
		var st map[string]any
		if err := json.Unmarshal(body, &st); code != 200 || err != nil {
			t.Fatalf("%s %s: %d %s", method, path, code, body)
		}
		return st
	}
	if st := status(http.MethodGet, "/sdr/recorder"); st["state"] != "recording" || st["stream"] != "SDR_REC" || st["prefix"] != "rec." {
		t.Errorf("GET /sdr/recorder: %v", st)
	}
	for _, bad := range [][2]string{{http.MethodGet, "/sdr/recorder/pause"}, {http.MethodPost, "/sdr/recorder"}} {
		if code, _, body := adminDo(t, bad[0], bad[1]); code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d %s, want 405", bad[0], bad[1], code, body)
		}
	}

	// The fanout hands a frame to every subscriber, the recorder and the
	// hub, before the next one: once the client has a frame, the recorder
	// has taken or skipped every frame before it.
	c := streamDial(t, fmt.Sprintf("ws://localhost:%d/stream/ws", httpPort), nil)
	recorded := map[uint64]bool{}
	write := func(n int, rec bool) uint64 {
		var seq uint64
		for i := range n {
			seq = w.Write(t, i == 0, 1000)
			recorded[seq] = rec
			if h, _ := shmringtest.ReadVideo(t, c); h.FrameSeq != seq {
				t.Fatalf("client got frame %d, want %d", h.FrameSeq, seq)
			}
		}
		return seq
	}
	write(3, true)
	if st := status(http.MethodPost, "/sdr/recorder/pause"); st["state"] != "paused" {
		t.Errorf("POST /sdr/recorder/pause: %v", st)
	}
	if v := metricValue(t, "caddy_sdr_recorder_state"); v != 4 {
		t.Errorf("caddy_sdr_recorder_state %v while paused, want 4", v)
	}
	write(3, false)
	// The last frame written while paused may be taken after the resume:
	// the client has it, the recorder maybe not yet.
	delete(recorded, write(1, false))

	// A config load keeps the pause: the new recorder starts paused.
	tester.InitServer(config, "caddyfile")
	testwait.For(t, "the new recorder, paused", func() bool {
		return metricValue(t, "caddy_sdr_recorder_state") == 4
	})
	if st := status(http.MethodPost, "/sdr/recorder/resume"); st["state"] != "recording" {
		t.Errorf("POST /sdr/recorder/resume: %v", st)
	}
	c = streamDial(t, fmt.Sprintf("ws://localhost:%d/stream/ws", httpPort), nil)
	for i := range 3 {
		seq := w.Write(t, i == 0, 1000)
		recorded[seq] = true
		for {
			if h, _ := shmringtest.ReadVideo(t, c); h.FrameSeq == seq {
				break
			}
		}
	}
	testwait.For(t, "6 frames recorded", func() bool {
		return rose(`caddy_sdr_recorder_frames_total{stream="default"}`) >= 6
	})
	_, js := connectJS(t, natsPort)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(testwait.Default))
	defer cancel()
	// Published is not yet stored: read until every frame that must be
	// there is, then look for those that must not.
	var got []uint64
	testwait.For(t, "the recorded frames stored", func() bool {
		got = nil
		if _, err := recording.Read(ctx, js, recording.ReadOptions{Kinds: []recording.Kind{recording.KindVideo}}, func(r recording.Record) error {
			got = append(got, r.Frame.Header.FrameSeq)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for seq, want := range recorded {
			if want && !slices.Contains(got, seq) {
				return false
			}
		}
		return true
	})
	for seq, want := range recorded {
		if !want && slices.Contains(got, seq) {
			t.Errorf("frame %d, written while paused, was recorded (recorded: %v)", seq, got)
		}
	}
	if v := rose(`caddy_sdr_recorder_dropped_total{kind="video"}`); v != 0 {
		t.Errorf("video dropped rose by %v, want 0: a pause drops nothing", v)
	}
}
