package replay

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/natstest"
	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// A replay of a recording on a real JetStream server (embedded
// nats-server, max_payload 64 KiB): frames recorded by internal/recording's
// format, one of them split in three parts, two streams, telemetry,
// commands and gate records. The client gets stream front's frames from
// the keyframe before the requested time, each 0x01 message the recorded
// frame byte for byte, with the telemetry and the gate's messages from the
// requested time in recorded order, and a normal close at the end.
func TestServeFromJetStream(t *testing.T) {
	t.Parallel()
	s := natstest.Server(t, &server.Options{JetStream: true, StoreDir: t.TempDir(), MaxPayload: 64 << 10})
	nc := natstest.Connect(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(testwait.Default))
	defer cancel()
	if _, err := recording.EnsureStream(ctx, js, recording.StreamConfig{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	publish := func(msgs ...*nats.Msg) {
		t.Helper()
		for _, m := range msgs {
			if _, err := js.PublishMsg(ctx, m); err != nil {
				t.Fatalf("publishing %s: %v", m.Subject, err)
			}
		}
	}
	base := time.Now().Add(-time.Minute).Truncate(time.Second)
	from := base.Add(1250 * time.Millisecond) // frame 10, a keyframe, is at 1 s
	var want [][]byte
	for i := range 30 {
		f := sessionFrame(i, base)
		h, p, at := f.Header, f.Payload, f.Arrived
		msgs, err := recording.VideoMsgs("", "front", f, at, nc.MaxPayload())
		if err != nil {
			t.Fatal(err)
		}
		if i == 17 && len(msgs) < 3 {
			t.Fatalf("frame 17 in %d messages, want it split", len(msgs))
		}
		publish(msgs...)
		if i >= 10 {
			want = append(want, wire.AppendVideo(nil, h, p))
		}
		hb := h // stream back's frame: another payload
		hb.Size, hb.CRC32 = 10, frame.Checksum(p[:10])
		other, err := recording.VideoMsgs("", "back", frame.Frame{Header: hb, Payload: p[:10]}, at.Add(time.Millisecond), nc.MaxPayload())
		if err != nil {
			t.Fatal(err)
		}
		publish(other...)
		if i%5 == 0 {
			body := fmt.Appendf(nil, `{"i":%d}`, i)
			publish(recording.TelemetryMsg("", "telemetry.odom", body, at.Add(2*time.Millisecond)))
			if !at.Add(2 * time.Millisecond).Before(from) {
				m, err := wire.Telemetry("telemetry.odom", body)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, m)
			}
		}
		if i == 16 {
			m, err := recording.CommandMsg("", "front", recording.CommandBody{Action: "estop", Payload: []byte(`{"action":"estop"}`), Outcome: recording.OutcomePublished}, at.Add(3*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			publish(m, recording.GateMsg("", "telemetry.safety.video_gate", []byte(`{"gated":true}`), at.Add(4*time.Millisecond)))
			g, err := wire.Telemetry("telemetry.safety.video_gate", []byte(`{"gated":true}`))
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, g)
		}
	}

	// ReadRecording itself hands over front's video only, and no commands.
	var kinds [4]int
	if err := (JetStream{JS: js}).ReadRecording(ctx, "front", from, func(r recording.Record) error {
		if r.Kind == recording.KindVideo && r.Subject != "front" {
			t.Errorf("record of stream %q", r.Subject)
		}
		kinds[r.Kind]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if kinds != [4]int{20, 3, 0, 1} {
		t.Fatalf("records read by kind (video, telemetry, command, gate): %v, want [20 3 0 1]", kinds)
	}

	srv, cli := net.Pipe()
	c := newClient(cli)
	done := make(chan error, 1)
	go func() {
		src := JetStream{JS: js}
		_, err := Serve(ctx, srv, Config{Stream: "front", Params: Params{From: from, Speed: 4}},
			func(ctx context.Context, fn func(recording.Record) error) error {
				return src.ReadRecording(ctx, "front", from, fn)
			})
		done <- err
	}()
	for i, w := range want {
		f := testwait.Recv(t, c.frames, fmt.Sprintf("message %d", i))
		if f.err != nil {
			t.Fatalf("message %d: %v", i, f.err)
		}
		if f.op != wire.OpBinary || !bytes.Equal(f.data, w) {
			t.Fatalf("message %d: opcode %#x % x... (%d bytes), want % x... (%d bytes)", i, f.op, head(f.data), len(f.data), head(w), len(w))
		}
		if i == 0 {
			if h, _, err := wire.ParseVideo(f.data); err != nil || !h.Keyframe() {
				t.Fatalf("first message %+v (%v), want a keyframe", h, err)
			}
		}
	}
	f := testwait.Recv(t, c.frames, "the close frame")
	if f.op != wire.OpClose || len(f.data) < 2 || binary.BigEndian.Uint16(f.data) != wire.CloseNormal || string(f.data[2:]) != ReasonEnd {
		t.Fatalf("after the recording: opcode %#x % x, want close 1000 %q", f.op, f.data, ReasonEnd)
	}
	if err := testwait.Recv(t, done, "Serve to return"); err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// source is a frame source the test pushes frames into.
type source struct {
	mu sync.Mutex
	fn func(frame.Frame)
}

func (s *source) Subscribe(fn func(frame.Frame)) (cancel func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fn = fn
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.fn = nil
	}
}

func (s *source) LastArrival() time.Time { return time.Time{} }

func (s *source) push(f frame.Frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fn(f)
}

// A replay of what internal/recording's Recorder recorded on a real
// JetStream server: a stream's frames from its source (one split in three
// parts), telemetry and the gate's state from NATS. The client gets the
// frames from the keyframe before the requested time byte for byte, in
// order, then the telemetry and the gate's message as 0x02, and a normal
// close.
func TestServeRecorderRecording(t *testing.T) {
	t.Parallel()
	s := natstest.Server(t, &server.Options{JetStream: true, StoreDir: t.TempDir(), MaxPayload: 64 << 10})
	nc := natstest.Connect(t, s)
	rec, err := recording.New(nc, recording.Config{Stream: recording.StreamConfig{MaxAge: time.Hour}, IDRInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	rec.Start()
	t.Cleanup(func() { _ = rec.Close() })
	testwait.For(t, "the recorder to record", func() bool { return rec.Stats().State == recording.StateRecording })
	src := &source{}
	detach, err := rec.AttachStream("front", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer detach()

	base := time.Now().Add(-5 * time.Second)
	from := base.Add(1250 * time.Millisecond)
	var video [][]byte
	msgs := 0
	for i := range 30 {
		f := sessionFrame(i, base)
		h, p, at := f.Header, f.Payload, f.Arrived
		parts, err := recording.VideoMsgs("", "front", f, at, nc.MaxPayload())
		if err != nil {
			t.Fatal(err)
		}
		msgs += len(parts)
		src.push(f)
		if i >= 10 {
			video = append(video, wire.AppendVideo(nil, h, p))
		}
	}
	others := map[string]bool{}
	for subj, body := range map[string]string{
		"telemetry.odom":              `{"x":1}`,
		"telemetry.battery":           `{"v":12.1}`,
		"telemetry.safety.video_gate": `{"gated":false}`,
	} {
		if err := nc.Publish(subj, []byte(body)); err != nil {
			t.Fatal(err)
		}
		m, err := wire.Telemetry(subj, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		others[string(m)] = true
		msgs++
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(testwait.Default))
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "every record stored", func() bool {
		st, err := js.Stream(ctx, recording.DefaultStream)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == uint64(msgs)
	})

	srv, cli := net.Pipe()
	c := newClient(cli)
	done := make(chan error, 1)
	go func() {
		src := JetStream{JS: js}
		_, err := Serve(ctx, srv, Config{Stream: "front", Params: Params{From: from, Speed: 4}},
			func(ctx context.Context, fn func(recording.Record) error) error {
				return src.ReadRecording(ctx, "front", from, fn)
			})
		done <- err
	}()
	var got [][]byte
	for len(got) < len(video)+len(others) {
		f := testwait.Recv(t, c.frames, fmt.Sprintf("message %d", len(got)))
		if f.err != nil || f.op != wire.OpBinary {
			t.Fatalf("message %d: opcode %#x %q (%v)", len(got), f.op, f.data, f.err)
		}
		got = append(got, f.data)
	}
	var gotVideo [][]byte
	for _, m := range got {
		if m[0] == wire.TypeVideo {
			gotVideo = append(gotVideo, m)
		} else if !others[string(m)] {
			t.Fatalf("unexpected message % x", head(m))
		} else {
			delete(others, string(m))
		}
	}
	if len(gotVideo) != len(video) {
		t.Fatalf("%d video messages, want %d", len(gotVideo), len(video))
	}
	for i := range video {
		if !bytes.Equal(gotVideo[i], video[i]) {
			t.Fatalf("video message %d: % x... (%d bytes), want % x... (%d bytes)", i, head(gotVideo[i]), len(gotVideo[i]), head(video[i]), len(video[i]))
		}
	}
	f := testwait.Recv(t, c.frames, "the close frame")
	if f.op != wire.OpClose || len(f.data) < 2 || binary.BigEndian.Uint16(f.data) != wire.CloseNormal {
		t.Fatalf("after the recording: opcode %#x % x, want close 1000", f.op, f.data)
	}
	if err := testwait.Recv(t, done, "Serve to return"); err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// sessionFrame is frame i of the recorded sessions of these tests: the
// frames come 100 ms apart from base, a keyframe every 10, and frame 17
// (150 kB) is larger than the server's max_payload, so it is split.
func sessionFrame(i int, base time.Time) frame.Frame {
	n := 500 + i
	if i == 17 {
		n = 150_000
	}
	p := make([]byte, n)
	for j := range p {
		p[j] = byte(i*7 + j*13)
	}
	at := base.Add(time.Duration(i) * 100 * time.Millisecond)
	h := frame.Header{FrameID: uint64(at.UnixNano()), FrameSeq: uint64(i + 1), Size: uint32(n), Codec: frame.CodecH264, CRC32: frame.Checksum(p)}
	if i%10 == 0 {
		h.Flags = frame.FlagKeyframe
	}
	return frame.Frame{Header: h, Payload: p, Arrived: at}
}
