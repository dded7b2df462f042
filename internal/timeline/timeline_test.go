package timeline

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/natstest"
	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

func setup(t *testing.T) (context.Context, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := natstest.Server(t, &server.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := natstest.Connect(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(testwait.Default))
	t.Cleanup(cancel)
	return ctx, nc, js
}

func publish(t *testing.T, ctx context.Context, js jetstream.JetStream, msgs ...*nats.Msg) {
	t.Helper()
	for _, m := range msgs {
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatalf("publishing %s: %v", m.Subject, err)
		}
	}
}

func command(t *testing.T, stream, action, outcome string, at time.Time) *nats.Msg {
	t.Helper()
	m, err := recording.CommandMsg("", stream, recording.CommandBody{Action: action, Payload: json.RawMessage(`{"action":"` + action + `"}`), Outcome: outcome, Reason: "because"}, at)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestReadExtentAndMarkers(t *testing.T) {
	t.Parallel()
	ctx, nc, js := setup(t)
	if _, err := recording.EnsureStream(ctx, js, recording.StreamConfig{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Minute).Truncate(time.Second).UTC()
	at := func(i int) time.Time { return base.Add(time.Duration(i) * 100 * time.Millisecond) }
	for i := range 20 {
		p := []byte{byte(i), 1, 2, 3}
		h := frame.Header{FrameID: uint64(i), FrameSeq: uint64(i + 1), Size: uint32(len(p)), Codec: frame.CodecH264, CRC32: frame.Checksum(p)}
		if i%10 == 0 {
			h.Flags = frame.FlagKeyframe
		}
		msgs, err := recording.VideoMsgs("", "front", frame.Frame{Header: h, Payload: p}, at(i), nc.MaxPayload())
		if err != nil {
			t.Fatal(err)
		}
		publish(t, ctx, js, msgs...)
		switch i {
		case 1: // the gate's first state, ARMED: not a transition
			publish(t, ctx, js, recording.GateMsg("", recording.GateSubject, []byte(`{"gated":false,"mode":"ARMED"}`), at(i)))
		case 3:
			publish(t, ctx, js, command(t, "front", "cmd_vel", recording.OutcomePublished, at(i)))
		case 4:
			publish(t, ctx, js, command(t, "front", "fly", recording.OutcomeRejected, at(i)))
			publish(t, ctx, js, command(t, "rear", "fly", recording.OutcomeRejected, at(i))) // another stream's
		case 5:
			publish(t, ctx, js, recording.GateMsg("", recording.GateSubject, []byte(`{"gated":true,"mode":"HOLD"}`), at(i)))
		case 6: // the same mode again: no marker
			publish(t, ctx, js, recording.GateMsg("", recording.GateSubject, []byte(`{"gated":true,"mode":"HOLD"}`), at(i)))
			publish(t, ctx, js, recording.GateMsg("", recording.GateSubject, []byte(`not json`), at(i)))
		case 7:
			publish(t, ctx, js, command(t, "front", "cmd_vel", recording.OutcomeGated, at(i)))
		case 9: // the video back: the gate says so without a mode
			publish(t, ctx, js, recording.GateMsg("", recording.GateSubject, []byte(`{"gated":false}`), at(i)))
		case 10: // gated without a mode: not a state to mark
			publish(t, ctx, js, recording.GateMsg("", recording.GateSubject, []byte(`{"gated":true}`), at(i)))
		}
	}
	// Video of another stream after the end of front's.
	msgs, err := recording.VideoMsgs("", "rear", frame.Frame{Header: frame.Header{FrameSeq: 1, Size: 1, Codec: frame.CodecH264, Flags: frame.FlagKeyframe, CRC32: frame.Checksum([]byte{9})}, Payload: []byte{9}}, at(30), nc.MaxPayload())
	if err != nil {
		t.Fatal(err)
	}
	publish(t, ctx, js, msgs...)

	tl, err := Read(ctx, js, Options{Stream: "front"})
	if err != nil {
		t.Fatal(err)
	}
	if tl.Start == nil || !tl.Start.Equal(at(0)) || tl.End == nil || !tl.End.Equal(at(19)) {
		t.Errorf("extent %v .. %v, want %v .. %v", tl.Start, tl.End, at(0), at(19))
	}
	want := []Marker{
		{Time: at(4), Kind: KindRejected, Action: "fly", Outcome: recording.OutcomeRejected, Reason: "because"},
		{Time: at(5), Kind: KindGate, Mode: "HOLD"},
		{Time: at(7), Kind: KindRejected, Action: "cmd_vel", Outcome: recording.OutcomeGated, Reason: "because"},
		{Time: at(9), Kind: KindGate, Mode: "ARMED"},
	}
	if len(tl.Markers) != len(want) {
		t.Fatalf("markers %+v, want %+v", tl.Markers, want)
	}
	for i, m := range tl.Markers {
		w := want[i]
		if !m.Time.Equal(w.Time) {
			t.Errorf("marker %d at %v, want %v", i, m.Time, w.Time)
		}
		m.Time = w.Time
		if m != w {
			t.Errorf("marker %d %+v, want %+v", i, m, w)
		}
	}
	b, err := json.Marshal(tl)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil || back["start"] != at(0).Format(time.RFC3339Nano) {
		t.Errorf("JSON %s: start is not %s", b, at(0).Format(time.RFC3339Nano))
	}
}

func TestReadWithoutVideo(t *testing.T) {
	t.Parallel()
	ctx, _, js := setup(t)
	if _, err := recording.EnsureStream(ctx, js, recording.StreamConfig{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	tl, err := Read(ctx, js, Options{Stream: "front"})
	if err != nil {
		t.Fatal(err)
	}
	if tl.Start != nil || tl.End != nil || tl.Markers == nil || len(tl.Markers) != 0 {
		t.Errorf("empty recording: %+v, want no extent and no markers", tl)
	}
	b, _ := json.Marshal(tl)
	if string(b) != `{"start":null,"end":null,"markers":[],"kept":[]}` {
		t.Errorf("JSON %s", b)
	}
	if _, err := Read(ctx, js, Options{Recording: "NOPE", Stream: "front"}); err == nil {
		t.Error("a recording that does not exist: no error")
	}
}
