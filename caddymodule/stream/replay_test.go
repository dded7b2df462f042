package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrstart"
	"github.com/sdr-os/sdr-caddy/frame"
	iframe "github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/hub"
	"github.com/sdr-os/sdr-caddy/internal/natstest"
	"github.com/sdr-os/sdr-caddy/internal/origin"
	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/relay"
	"github.com/sdr-os/sdr-caddy/internal/replay"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// fakeRecordings hands out fixed records, and then, when hold is set,
// waits for the replay to end, as a long recording would. It notes what
// it was asked for.
type fakeRecordings struct {
	recs []recording.Record
	hold bool

	mu     sync.Mutex
	stream string
	from   time.Time
}

func (f *fakeRecordings) ReadRecording(ctx context.Context, stream string, from time.Time, fn func(recording.Record) error) error {
	f.mu.Lock()
	f.stream, f.from = stream, from
	f.mu.Unlock()
	for _, r := range f.recs {
		if err := fn(r); err != nil {
			return err
		}
	}
	if f.hold {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// commandLog is a frame.Recorder that notes the commands recorded.
type commandLog struct {
	mu   sync.Mutex
	cmds []string // stream, client host, body and the ack's payload
}

func (*commandLog) AttachStream(string, iframe.Source, iframe.KeyframeRequester) (func(), error) {
	return func() {}, nil
}

func (l *commandLog) RecordCommand(stream, client string, body, reply []byte) {
	_, payload, _ := wire.ParseTelemetry(reply)
	host, _, _ := strings.Cut(client, ":")
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cmds = append(l.cmds, stream+" "+host+" "+string(body)+" "+string(payload))
}

// replayHandler returns a started sdr_stream handler "front" without a
// source, serving live clients from its hub with commands through rl (when
// not nil), and replays from recs (when not nil), behind an HTTP server.
func replayHandler(t *testing.T, recs Recordings, rl iframe.Relay) (*Stream, string) {
	t.Helper()
	starter := new(sdrstart.App).CaddyModule().New().(*sdrstart.App)
	if err := starter.Start(); err != nil {
		t.Fatal(err)
	}
	origins, err := origin.NewPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &Stream{name: "front", log: zap.NewNop(), starter: starter, recordings: recs, relay: rl,
		origins: origins, source: &sourceHandle{}, hub: hub.New(hub.Config{}),
		metrics: registerStreamMetrics(prometheus.NewRegistry(), zap.NewNop())}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.ServeHTTP(w, r, nil); err != nil {
			t.Logf("ServeHTTP: %v", err)
			var he caddyhttp.HandlerError
			if errors.As(err, &he) {
				w.WriteHeader(he.StatusCode) // as Caddy answers it
			}
		}
	}))
	t.Cleanup(func() {
		srv.Close()
		s.cancel()
		s.wg.Wait()
		s.hub.Close()
	})
	return s, "ws" + strings.TrimPrefix(srv.URL, "http") + "/stream/ws"
}

func dial(t *testing.T, u string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dialing %s: %v (%v)", u, err, resp)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetReadDeadline(testwait.Deadline(testwait.Default))
	return c
}

func recVideo(stream string, at time.Time, seq uint64, key bool) recording.Record {
	p := bytes.Repeat([]byte{byte(seq), 0xAA}, 200+int(seq))
	h := frame.Header{FrameID: uint64(at.UnixNano()), FrameSeq: seq, Size: uint32(len(p)), Codec: frame.CodecH264, CRC32: frame.Checksum(p)}
	if key {
		h.Flags = frame.FlagKeyframe
	}
	return recording.Record{Kind: recording.KindVideo, Time: at, Subject: stream, Seq: seq, Frame: &frame.Frame{Header: h, Payload: p}}
}

// A replay connection gets the stream's recorded frames, each 0x01 message
// byte for byte the recorded frame's, from the keyframe before the
// requested time on, and the recorded telemetry and gate messages; not
// other streams' video or commands; then a normal close.
func TestReplayServesRecordedFrames(t *testing.T) {
	from := time.Now().Add(-time.Minute).Truncate(time.Millisecond).UTC()
	at := func(d time.Duration) time.Time { return from.Add(d) }
	recs := &fakeRecordings{recs: []recording.Record{
		recVideo("front", at(-80*time.Millisecond), 20, true),
		recVideo("front", at(-40*time.Millisecond), 21, false),
		recVideo("back", at(-30*time.Millisecond), 5, true),
		{Kind: recording.KindTelemetry, Time: at(0), Subject: "telemetry.odom", Data: []byte(`{"x":2}`)},
		recVideo("front", at(20*time.Millisecond), 22, false),
		{Kind: recording.KindCommand, Time: at(30 * time.Millisecond), Subject: "front", Data: []byte(`{"action":"set_cmd_vel"}`)},
		{Kind: recording.KindGate, Time: at(35 * time.Millisecond), Subject: "telemetry.safety.video_gate", Data: []byte(`{"gated":true}`)},
		recVideo("front", at(60*time.Millisecond), 23, true),
	}}
	_, u := replayHandler(t, recs, nil)
	c := dial(t, u+"?replay="+url.QueryEscape(from.Format(time.RFC3339Nano))+"&speed=4")

	var want [][]byte
	for _, i := range []int{0, 1, 3, 4, 6, 7} {
		r := recs.recs[i]
		if r.Kind == recording.KindVideo {
			want = append(want, wire.AppendVideo(nil, r.Frame.Header, r.Frame.Payload))
			continue
		}
		m, err := wire.Telemetry(r.Subject, r.Data)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, m)
	}
	for i, w := range want {
		typ, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if typ != websocket.BinaryMessage || !bytes.Equal(msg, w) {
			t.Fatalf("message %d: % x..., want % x...", i, msg[:min(len(msg), 12)], w[:min(len(w), 12)])
		}
		if i == 0 {
			h, _, err := wire.ParseVideo(msg)
			if err != nil || !h.Keyframe() {
				t.Fatalf("first message: %+v (%v), want a keyframe", h, err)
			}
		}
	}
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure || ce.Text != replay.ReasonEnd {
		t.Fatalf("after the recording: %v, want close 1000 %q", err, replay.ReasonEnd)
	}
	recs.mu.Lock()
	defer recs.mu.Unlock()
	if recs.stream != "front" || !recs.from.Equal(from) {
		t.Fatalf("recording read for stream %q from %v, want front from %v", recs.stream, recs.from, from)
	}
}

// A command on a replay connection is answered with a rejected ack and
// never published, estop included; the same command on a live connection
// of the same handler is published. The refused commands are recorded with
// their acks. Cleanup closes the replay with 1012.
func TestReplayRejectsCommands(t *testing.T) {
	ns := natstest.Server(t, nil)
	nc := natstest.Connect(t, ns)
	sub, err := nc.SubscribeSync(relay.CommandPrefix + ">")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(natstest.Connect(t, ns), relay.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	recs := &fakeRecordings{hold: true, recs: []recording.Record{recVideo("front", time.Now().Add(-time.Second), 1, true)}}
	s, u := replayHandler(t, recs, r.Stream(nil, nil, nil))
	cmdLog := &commandLog{}
	s.recorder = cmdLog

	rc := dial(t, u+"?replay=-1s")
	if _, msg, err := rc.ReadMessage(); err != nil || msg[0] != wire.TypeVideo {
		t.Fatalf("first replay message: % x (%v), want 0x01", msg[:min(len(msg), 4)], err)
	}
	for _, body := range []string{`{"action":"estop","cmd_seq":1}`, `{"action":"set_cmd_vel","cmd_seq":2,"data":{"linear":{"x":1}}}`} {
		if err := rc.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, body...)); err != nil {
			t.Fatal(err)
		}
		_, msg, err := rc.ReadMessage()
		if err != nil {
			t.Fatalf("answer to %s: %v", body, err)
		}
		subj, payload, err := wire.ParseTelemetry(msg)
		if err != nil {
			t.Fatal(err)
		}
		var ack struct{ Status, Detail string }
		if err := json.Unmarshal(payload, &ack); err != nil || subj != relay.SubjectAck || ack.Status != relay.StatusRejected || ack.Detail != replay.RejectDetail {
			t.Fatalf("answer to %s: %s %s (%v), want a rejected ack", body, subj, payload, err)
		}
	}

	cmdLog.mu.Lock()
	want := []string{
		`front 127.0.0.1 {"action":"estop","cmd_seq":1} {"action":"estop","cmd_seq":1,"status":"rejected","detail":"replay connection: commands are not accepted"}`,
		`front 127.0.0.1 {"action":"set_cmd_vel","cmd_seq":2,"data":{"linear":{"x":1}}} {"action":"set_cmd_vel","cmd_seq":2,"status":"rejected","detail":"replay connection: commands are not accepted"}`,
	}
	if !slices.Equal(cmdLog.cmds, want) {
		t.Errorf("commands recorded:\n%s\nwant:\n%s", strings.Join(cmdLog.cmds, "\n"), strings.Join(want, "\n"))
	}
	cmdLog.mu.Unlock()

	lc := dial(t, u) // live
	if err := lc.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, `{"action":"estop","cmd_seq":3}`...)); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(testwait.Timeout(testwait.Default))
	if err != nil {
		t.Fatalf("waiting for the live command: %v", err)
	}
	if m.Subject != relay.CommandPrefix+"estop" || !strings.Contains(string(m.Data), `"cmd_seq":3`) {
		t.Fatalf("first command on NATS: %s %s, want the live estop (cmd_seq 3): a replay command was published", m.Subject, m.Data)
	}
	if n, _, _ := sub.Pending(); n != 0 {
		t.Fatalf("%d more commands on NATS", n)
	}

	s.cancel()
	_, _, err = rc.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseServiceRestart {
		t.Fatalf("replay after the handler's end: %v, want close 1012", err)
	}
	done := make(chan struct{}, 1)
	go func() { s.wg.Wait(); done <- struct{}{} }()
	testwait.Recv(t, done, "the replay's goroutine to end")
	testwait.For(t, "every admitted client to leave", func() bool { return s.admitted.Load() == 0 })
}

// Bad replay parameters are answered 400, and a handler without the
// sdr_recorder app 501, each with a message saying why, before any
// upgrade.
func TestReplayRefusals(t *testing.T) {
	_, u := replayHandler(t, &fakeRecordings{}, nil)
	_, none := replayHandler(t, nil, nil)
	for _, c := range []struct {
		url, query string
		code       int
		body       string
	}{
		{u, "replay=yesterday", http.StatusBadRequest, `replay "yesterday": not a time; want an RFC 3339 time`},
		{u, "replay=-30s&speed=8", http.StatusBadRequest, `speed "8": want a number from 0.25 to 4`},
		{u, "replay=-30s&speed=0.1", http.StatusBadRequest, `speed "0.1"`},
		{u, "replay=2999-01-01T00:00:00Z", http.StatusBadRequest, "in the future"},
		{u, "replay=", http.StatusBadRequest, `replay "": empty`},
		{none, "replay=-30s", http.StatusNotImplemented, "replay needs the sdr_recorder app"},
	} {
		ws, resp, err := websocket.DefaultDialer.Dial(c.url+"?"+c.query, nil)
		if err == nil {
			_ = ws.Close()
			t.Fatalf("%s: upgraded, want %d", c.query, c.code)
		}
		if resp == nil {
			t.Fatalf("%s: %v", c.query, err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(string(body), c.body) || !strings.HasPrefix(string(body), "sdr_stream front: ") {
			t.Fatalf("%s: %d %q, want %d with %q", c.query, resp.StatusCode, body, c.code, c.body)
		}
	}
}

// A replay connection takes a place under max_clients like a live one,
// and gives it back when it ends.
func TestReplayCountsAgainstMaxClients(t *testing.T) {
	recs := &fakeRecordings{hold: true, recs: []recording.Record{recVideo("front", time.Now().Add(-time.Second), 1, true)}}
	s, u := replayHandler(t, recs, nil)
	s.MaxClients = 1
	rc := dial(t, u+"?replay=-2s&speed=0.25")
	if _, msg, err := rc.ReadMessage(); err != nil || msg[0] != wire.TypeVideo {
		t.Fatalf("first replay message: %v", err)
	}
	for _, q := range []string{"", "?replay=-2s"} {
		ws, resp, err := websocket.DefaultDialer.Dial(u+q, nil)
		if err == nil {
			_ = ws.Close()
			t.Fatalf("%q: upgraded beside the replay, want 503 (max_clients 1)", q)
		}
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("%q: %v (%v), want 503", q, err, resp)
		}
	}
	_ = rc.Close()
	testwait.For(t, "the replay's place to be given back", func() bool { return s.admitted.Load() == 0 })
	dial(t, u+"?replay=-2s")
}
