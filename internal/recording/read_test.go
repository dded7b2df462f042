package recording

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/natstest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// servers are the servers jetStream started, by connection.
var servers sync.Map

// jetStream starts an embedded nats-server with JetStream on (max_payload
// maxPayload when not 0) and returns a JetStream client on it.
func jetStream(t *testing.T, maxPayload int32) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := natstest.Server(t, &server.Options{JetStream: true, StoreDir: t.TempDir(), MaxPayload: maxPayload})
	nc := natstest.Connect(t, s)
	servers.Store(nc, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(testwait.Default))
	t.Cleanup(cancel)
	return ctx
}

// testFrame is frame i of a test stream: a keyframe every gop frames, the
// payload n bytes derived from i.
func testFrame(i, gop, n int) frame.Frame {
	p := make([]byte, n)
	for j := range p {
		p[j] = byte(i*7 + j*13)
	}
	h := frame.Header{FrameID: uint64(1000 + i), FrameSeq: uint64(i + 1), Size: uint32(n), Codec: frame.CodecH264, CRC32: frame.Checksum(p)}
	if i%gop == 0 {
		h.Flags = frame.FlagKeyframe
	}
	return frame.Frame{Header: h, Payload: p}
}

func publish(t *testing.T, ctx context.Context, js jetstream.JetStream, msgs ...*nats.Msg) {
	t.Helper()
	for _, m := range msgs {
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatalf("publishing %s: %v", m.Subject, err)
		}
	}
}

func readAll(t *testing.T, ctx context.Context, js jetstream.JetStream, opts ReadOptions) ([]Record, ReadStats) {
	t.Helper()
	var recs []Record
	st, err := Read(ctx, js, opts, func(r Record) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatalf("Read %+v: %v", opts, err)
	}
	return recs, st
}

// recordTestSession writes 30 frames of stream "front" 100 ms apart in
// record time (a keyframe every 10, frame 17 too large for one message),
// telemetry every 5 frames, a published and a rejected command and a gate
// transition, and returns the frames and the time of frame 0.
func recordTestSession(t *testing.T, ctx context.Context, nc *nats.Conn, js jetstream.JetStream) ([]frame.Frame, time.Time) {
	t.Helper()
	if _, err := EnsureStream(ctx, js, StreamConfig{MaxAge: time.Hour, MaxBytes: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Minute).Truncate(time.Second)
	var frames []frame.Frame
	for i := range 30 {
		n := 1000 + i
		if i == 17 {
			n = 150_000 // three parts under max_payload 64 KiB
		}
		f := testFrame(i, 10, n)
		frames = append(frames, f)
		at := base.Add(time.Duration(i) * 100 * time.Millisecond)
		msgs, err := VideoMsgs("", "front", f, at, nc.MaxPayload())
		if err != nil {
			t.Fatal(err)
		}
		if i == 17 && len(msgs) < 3 {
			t.Fatalf("frame 17 in %d messages, want it split", len(msgs))
		}
		publish(t, ctx, js, msgs...)
		if i%5 == 0 {
			publish(t, ctx, js, TelemetryMsg("", "telemetry.odom", fmt.Appendf(nil, `{"i":%d}`, i), at.Add(time.Millisecond)))
		}
		switch i {
		case 16:
			m, err := CommandMsg("", "front", CommandBody{Action: "cmd_vel", Payload: json.RawMessage(`{"action":"cmd_vel","linear":{"x":1}}`), Outcome: OutcomePublished, Client: "127.0.0.1:5000"}, at.Add(2*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			publish(t, ctx, js, m)
		case 18:
			m, err := CommandMsg("", "front", CommandBody{Action: "fly", Payload: json.RawMessage(`{"action":"fly"}`), Outcome: OutcomeRejected, Reason: "unknown action", Client: "127.0.0.1:5000"}, at.Add(2*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			publish(t, ctx, js, m)
		case 20:
			publish(t, ctx, js, GateMsg("", "front", []byte(`{"mode":"HOLD"}`), at.Add(3*time.Millisecond)))
		}
	}
	return frames, base
}

func TestReadWindowStartsAtKeyframe(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 64<<10)
	ctx := testCtx(t)
	frames, base := recordTestSession(t, ctx, nc, js)
	at := func(i int) time.Time { return base.Add(time.Duration(i) * 100 * time.Millisecond) }

	from, to := at(15), at(25)
	recs, st := readAll(t, ctx, js, ReadOptions{From: from, To: to})
	var video []int
	var other []string
	var lastSeq uint64
	for _, r := range recs {
		if r.Seq <= lastSeq {
			t.Errorf("record %s seq %d after %d: not in recorded order", r.Kind, r.Seq, lastSeq)
		}
		lastSeq = r.Seq
		if r.Kind != KindVideo {
			if r.Time.Before(from) || r.Time.After(to) {
				t.Errorf("%s record at %v outside [%v, %v]", r.Kind, r.Time, from, to)
			}
			other = append(other, r.Kind.String()+" "+r.Subject+" "+string(r.Data))
			continue
		}
		i := int(r.Frame.Header.FrameSeq) - 1
		video = append(video, i)
		want := frames[i]
		if r.Frame.Header != want.Header || !bytes.Equal(r.Frame.Payload, want.Payload) {
			t.Errorf("frame %d: header %+v, %d bytes; want %+v, %d bytes", i, r.Frame.Header, len(r.Frame.Payload), want.Header, len(want.Payload))
		}
		if !r.Time.Equal(at(i)) || r.Subject != "front" {
			t.Errorf("frame %d: time %v subject %q, want %v front", i, r.Time, r.Subject, at(i))
		}
	}
	if len(video) == 0 || video[0] != 10 || !frames[video[0]].Header.Keyframe() {
		t.Fatalf("video frames %v: want the keyframe 10 before From (frame 15) first", video)
	}
	for k, i := range video {
		if i != 10+k {
			t.Fatalf("video frames %v, want 10..25 in order", video)
		}
	}
	if video[len(video)-1] != 25 {
		t.Fatalf("video frames %v, want them to end at 25 (To)", video)
	}
	wantOther := []string{
		`telemetry telemetry.odom {"i":15}`,
		`command front {"action":"cmd_vel","payload":{"action":"cmd_vel","linear":{"x":1}},"outcome":"published","client":"127.0.0.1:5000"}`,
		`command front {"action":"fly","payload":{"action":"fly"},"outcome":"rejected","reason":"unknown action","client":"127.0.0.1:5000"}`,
		`telemetry telemetry.odom {"i":20}`,
		`gate front {"mode":"HOLD"}`,
	}
	if fmt.Sprint(other) != fmt.Sprint(wantOther) {
		t.Errorf("other records:\n%q\nwant\n%q", other, wantOther)
	}
	if st.LeadIn != 5 || st.Frames != 16 || st.Incomplete != 0 || st.Records != uint64(len(recs)) {
		t.Errorf("stats %+v: want 16 frames, 5 of them lead-in, none incomplete", st)
	}
}

func TestReadKindsAndWholeRecording(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 64<<10)
	ctx := testCtx(t)
	frames, _ := recordTestSession(t, ctx, nc, js)

	recs, _ := readAll(t, ctx, js, ReadOptions{Kinds: []Kind{KindCommand, KindGate}})
	var got []string
	for _, r := range recs {
		got = append(got, r.Kind.String())
	}
	if fmt.Sprint(got) != "[command command gate]" {
		t.Errorf("commands and gate: %v", got)
	}
	recs, st := readAll(t, ctx, js, ReadOptions{})
	if st.Frames != uint64(len(frames)) || len(recs) != len(frames)+6+3 {
		t.Errorf("whole recording: %d records, stats %+v; want %d frames, 6 telemetry, 3 others", len(recs), st, len(frames))
	}
	// A window (with its keyframe scan) too; no consumer is left behind.
	readAll(t, ctx, js, ReadOptions{From: time.Now().Add(-time.Minute).Add(time.Second)})
	s, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Errorf("%d consumers left after the reads, want 0", info.State.Consumers)
	}
}

func TestReadSkipsFrameWithMissingPart(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 64<<10)
	ctx := testCtx(t)
	if _, err := EnsureStream(ctx, js, StreamConfig{Memory: true}); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Minute)
	for i := range 4 {
		f := testFrame(i, 1, 100_000)
		msgs, err := VideoMsgs("", "front", f, base.Add(time.Duration(i)*time.Millisecond), nc.MaxPayload())
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			msgs = append(msgs[:1], msgs[2:]...) // lose the middle part
		}
		publish(t, ctx, js, msgs...)
	}
	recs, st := readAll(t, ctx, js, ReadOptions{})
	var got []uint64
	for _, r := range recs {
		got = append(got, r.Frame.Header.FrameSeq)
	}
	if fmt.Sprint(got) != "[1 3 4]" || st.Incomplete != 1 {
		t.Errorf("frames %v, stats %+v: want 1 3 4 and one incomplete", got, st)
	}
}

// TestReadSkipsDuplicateFrames: a frame recorded twice in a row (the
// recorders of two configurations overlapping in a reload) is read once.
func TestReadSkipsDuplicateFrames(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 0)
	ctx := testCtx(t)
	if _, err := EnsureStream(ctx, js, StreamConfig{Memory: true}); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Minute)
	for _, i := range []int{0, 1, 1, 2} {
		msgs, err := VideoMsgs("", "front", testFrame(i, 10, 100), base.Add(time.Duration(i)*time.Millisecond), nc.MaxPayload())
		if err != nil {
			t.Fatal(err)
		}
		publish(t, ctx, js, msgs...)
	}
	recs, st := readAll(t, ctx, js, ReadOptions{})
	var got []uint64
	for _, r := range recs {
		got = append(got, r.Frame.Header.FrameSeq)
	}
	if fmt.Sprint(got) != "[1 2 3]" || st.Duplicates != 1 {
		t.Errorf("frames %v, stats %+v: want 1 2 3, one duplicate", got, st)
	}
}

// TestReadSkipsFramesRecordedTwiceInBursts: two recorders overlapping in a
// reload store their bursts one after the other, so a frame's two copies
// lie apart (frames 3..5 come again after 6); each frame is read once, in
// order, and a frame that only looks alike (the same frame_seq from a
// restarted writer, another frame_id) is not taken for a copy.
func TestReadSkipsFramesRecordedTwiceInBursts(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 0)
	ctx := testCtx(t)
	if _, err := EnsureStream(ctx, js, StreamConfig{Memory: true}); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Minute)
	restarted := testFrame(3, 10, 100)
	restarted.Header.FrameID += 1_000_000
	frames := []frame.Frame{}
	for _, i := range []int{0, 1, 2, 3, 4, 5, 6, 3, 4, 5, 6, 7} {
		frames = append(frames, testFrame(i, 10, 100))
	}
	frames = append(frames, restarted)
	for i, f := range frames {
		msgs, err := VideoMsgs("", "front", f, base.Add(time.Duration(i)*time.Millisecond), nc.MaxPayload())
		if err != nil {
			t.Fatal(err)
		}
		publish(t, ctx, js, msgs...)
	}
	recs, st := readAll(t, ctx, js, ReadOptions{})
	var got []uint64
	for _, r := range recs {
		got = append(got, r.Frame.Header.FrameSeq)
	}
	if fmt.Sprint(got) != "[1 2 3 4 5 6 7 8 4]" || st.Duplicates != 4 {
		t.Errorf("frames %v, stats %+v: want 1..8 then the restarted writer's 4, four duplicates", got, st)
	}
}

// TestRecentFramesForgetsBeyondTheWindow: a header is a duplicate while it
// is among the last DuplicateWindow ones, and new again after.
func TestRecentFramesForgetsBeyondTheWindow(t *testing.T) {
	t.Parallel()
	rf := &recentFrames{seen: map[frame.Header]struct{}{}}
	h := func(i int) frame.Header { return frame.Header{FrameSeq: uint64(i)} }
	if !rf.add(h(0)) || rf.add(h(0)) {
		t.Fatal("the first header is not new, or its repeat is")
	}
	for i := 1; i < DuplicateWindow; i++ {
		rf.add(h(i))
	}
	if rf.add(h(0)) {
		t.Errorf("header 0 forgotten within the window")
	}
	rf.add(h(DuplicateWindow))
	if !rf.add(h(0)) {
		t.Errorf("header 0 still remembered after %d newer ones", DuplicateWindow)
	}
	if len(rf.seen) != DuplicateWindow {
		t.Errorf("%d headers remembered, want %d", len(rf.seen), DuplicateWindow)
	}
}

func TestReadStartsAtFirstKeyframeWithoutEarlierOne(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 0)
	ctx := testCtx(t)
	if _, err := EnsureStream(ctx, js, StreamConfig{Memory: true}); err != nil {
		t.Fatal(err)
	}
	// Real record times, so that the start by time is the one taken:
	// frames 0..4 deltas (the recording began mid-GOP), 5 a keyframe.
	var times []time.Time
	for i := range 8 {
		f := testFrame(i, 5, 100)
		if i == 0 {
			f.Header.Flags = 0
		}
		now := time.Now()
		times = append(times, now)
		msgs, err := VideoMsgs("", "front", f, now, nc.MaxPayload())
		if err != nil {
			t.Fatal(err)
		}
		publish(t, ctx, js, msgs...)
	}
	recs, st := readAll(t, ctx, js, ReadOptions{From: times[2]})
	var got []uint64
	for _, r := range recs {
		got = append(got, r.Frame.Header.FrameSeq)
	}
	if fmt.Sprint(got) != "[6 7 8]" || st.Undecodable != 3 {
		t.Errorf("frames %v, stats %+v: want 6 7 8 (from the keyframe), 3 undecodable", got, st)
	}
	// From just after the keyframe: it comes first, found by the keyframe
	// scan before the start by time.
	recs, st = readAll(t, ctx, js, ReadOptions{From: times[6]})
	got = got[:0]
	for _, r := range recs {
		got = append(got, r.Frame.Header.FrameSeq)
	}
	if fmt.Sprint(got) != "[6 7 8]" || st.LeadIn != 1 {
		t.Errorf("frames %v, stats %+v: want 6 7 8, the keyframe 6 before From", got, st)
	}
	// From after everything: nothing, at once.
	recs, _ = readAll(t, ctx, js, ReadOptions{From: time.Now().Add(time.Hour)})
	if len(recs) != 0 {
		t.Errorf("%d records after the end", len(recs))
	}
	// A kind with no records after From ends too.
	recs, _ = readAll(t, ctx, js, ReadOptions{From: times[2], Kinds: []Kind{KindTelemetry}})
	if len(recs) != 0 {
		t.Errorf("%d telemetry records, want none", len(recs))
	}
}

func TestReadReturnsCallbackError(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 64<<10)
	ctx := testCtx(t)
	recordTestSession(t, ctx, nc, js)
	stop := fmt.Errorf("enough")
	n := 0
	_, err := Read(ctx, js, ReadOptions{}, func(Record) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if err != stop || n != 3 {
		t.Errorf("Read returned %v after %d records, want fn's error after 3", err, n)
	}
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		prefix, subject string
		kind            Kind
		name            string
	}{
		{"", "rec.telemetry.telemetry.odom", KindTelemetry, "telemetry.odom"},
		{"dashcam", "dashcam.video.front", KindVideo, "front"},
		{"a.b.", "a.b.gate.front", KindGate, "front"},
	} {
		k, n, err := ParseSubject(c.prefix, c.subject)
		if err != nil || k != c.kind || n != c.name {
			t.Errorf("ParseSubject(%q, %q) = %v %q %v", c.prefix, c.subject, k, n, err)
		}
		if s := Subject(c.prefix, c.kind, c.name); s != c.subject {
			t.Errorf("Subject = %q, want %q", s, c.subject)
		}
	}
	for _, bad := range []string{"other.video.x", "rec.video", "rec.audio.x"} {
		if _, _, err := ParseSubject("", bad); err == nil {
			t.Errorf("ParseSubject(%q): no error", bad)
		}
	}
}

// TestReadTakesRecordsStoredBeforeTheKeyframe: a record seen after From
// can be stored before the keyframe at or before From (telemetry and
// frames reach JetStream from different goroutines, and frames wait in
// their own queue). Read must not start at the keyframe's sequence and
// miss it. Under load a replay lost its telemetry this way.
func TestReadTakesRecordsStoredBeforeTheKeyframe(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 0)
	ctx := testCtx(t)
	if _, err := EnsureStream(ctx, js, StreamConfig{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	from := time.Now().Add(-time.Second)
	key, delta := testFrame(0, 10, 100), testFrame(1, 10, 100)
	keyMsgs, err := VideoMsgs("", "front", key, from.Add(-100*time.Millisecond), nc.MaxPayload())
	if err != nil {
		t.Fatal(err)
	}
	deltaMsgs, err := VideoMsgs("", "front", delta, from.Add(50*time.Millisecond), nc.MaxPayload())
	if err != nil {
		t.Fatal(err)
	}
	// Stored in this order: the telemetry first, then the frames.
	publish(t, ctx, js, TelemetryMsg("", "telemetry.odom", []byte(`{"x":1}`), from.Add(time.Millisecond)))
	publish(t, ctx, js, keyMsgs...)
	publish(t, ctx, js, deltaMsgs...)

	recs, _ := readAll(t, ctx, js, ReadOptions{From: from})
	var got []string
	for _, r := range recs {
		if r.Kind == KindVideo {
			got = append(got, fmt.Sprintf("video %d", r.Frame.Header.FrameSeq))
		} else {
			got = append(got, r.Kind.String()+" "+string(r.Data))
		}
	}
	want := `telemetry {"x":1}, video 1, video 2`
	if s := strings.Join(got, ", "); s != want {
		t.Errorf("read %s, want %s", s, want)
	}
}
