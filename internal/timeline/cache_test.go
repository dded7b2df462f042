package timeline

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// sameTimeline reports how got differs from want, "" when it does not.
func sameTimeline(got, want Timeline) string {
	eq := func(a, b *time.Time) bool { return (a == nil) == (b == nil) && (a == nil || a.Equal(*b)) }
	if !eq(got.Start, want.Start) || !eq(got.End, want.End) {
		return fmt.Sprintf("extent %v .. %v, want %v .. %v", got.Start, got.End, want.Start, want.End)
	}
	if got.Markers == nil || len(got.Markers) != len(want.Markers) {
		return fmt.Sprintf("%d markers %+v, want %d %+v", len(got.Markers), got.Markers, len(want.Markers), want.Markers)
	}
	for i, m := range got.Markers {
		w := want.Markers[i]
		if !m.Time.Equal(w.Time) {
			return fmt.Sprintf("marker %d at %v, want %v", i, m.Time, w.Time)
		}
		m.Time = w.Time
		if m != w {
			return fmt.Sprintf("marker %d %+v, want %+v", i, m, w)
		}
	}
	return ""
}

// recorder writes records of two streams with times one tick apart.
type recorder struct {
	t    *testing.T
	ctx  context.Context
	nc   *nats.Conn
	js   jetstream.JetStream
	base time.Time
	tick int
	seq  map[string]uint64
}

func (r *recorder) at() time.Time {
	r.tick++
	return r.base.Add(time.Duration(r.tick) * 10 * time.Millisecond)
}

func (r *recorder) video(stream string) {
	r.t.Helper()
	r.seq[stream]++
	p := []byte{1, 2, 3}
	h := frame.Header{FrameSeq: r.seq[stream], Size: uint32(len(p)), Codec: frame.CodecH264, Flags: frame.FlagKeyframe, CRC32: frame.Checksum(p)}
	msgs, err := recording.VideoMsgs("", stream, frame.Frame{Header: h, Payload: p}, r.at(), r.nc.MaxPayload())
	if err != nil {
		r.t.Fatal(err)
	}
	publish(r.t, r.ctx, r.js, msgs...)
}

func (r *recorder) command(stream, action, outcome string) {
	r.t.Helper()
	publish(r.t, r.ctx, r.js, command(r.t, stream, action, outcome, r.at()))
}

func (r *recorder) gate(body string) {
	r.t.Helper()
	publish(r.t, r.ctx, r.js, recording.GateMsg("", recording.GateSubject, []byte(body), r.at()))
}

// TestCacheFollowsTheRecording reads the timelines of two streams through
// one Cache as the recording grows, loses its oldest records and is
// recreated, and checks each read against a fresh Read: new markers
// appear (a few records, read one by one, and many, read through a
// consumer), dropped ones go, the first frame moves on, the streams'
// commands do not mix, and an unchanged recording is answered from the
// cache.
func TestCacheFollowsTheRecording(t *testing.T) {
	t.Parallel()
	ctx, nc, js := setup(t)
	if _, err := recording.EnsureStream(ctx, js, recording.StreamConfig{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	r := &recorder{t: t, ctx: ctx, nc: nc, js: js, base: time.Now().Add(-time.Hour).Truncate(time.Second).UTC(), seq: map[string]uint64{}}
	var c Cache
	check := func(step string, wantFront, wantRear int) (front Timeline) {
		t.Helper()
		for _, stream := range []string{"front", "rear"} {
			got, err := c.Read(ctx, js, Options{Stream: stream})
			if err != nil {
				t.Fatalf("%s: cached %s: %v", step, stream, err)
			}
			want, err := Read(ctx, js, Options{Stream: stream})
			if err != nil {
				t.Fatalf("%s: %s: %v", step, stream, err)
			}
			if d := sameTimeline(got, want); d != "" {
				t.Fatalf("%s: cached timeline of %s: %s", step, stream, d)
			}
			n := wantFront
			if stream == "rear" {
				n = wantRear
			} else {
				front = got
			}
			if len(got.Markers) != n {
				t.Fatalf("%s: %s has %d markers %+v, want %d", step, stream, len(got.Markers), got.Markers, n)
			}
			for _, m := range got.Markers {
				if m.Kind == KindRejected && m.Action != stream+"_cmd" {
					t.Fatalf("%s: %s has a marker of another stream's command: %+v", step, stream, m)
				}
			}
		}
		return front
	}

	check("empty", 0, 0)
	r.video("front")
	r.command("front", "front_cmd", recording.OutcomePublished)
	r.command("front", "front_cmd", recording.OutcomeRejected)
	r.gate(`{"gated":false,"mode":"ARMED"}`)
	r.video("rear")
	check("a few records", 1, 0)

	r.command("rear", "rear_cmd", recording.OutcomeGated)
	r.gate(`{"gated":true,"mode":"HOLD"}`)
	r.video("front")
	first := check("a rear command and a transition", 2, 2)
	again, err := c.Read(ctx, js, Options{Stream: "front"})
	if err != nil {
		t.Fatal(err)
	}
	if &again.Markers[0] != &first.Markers[0] {
		t.Error("an unchanged recording was read again, not answered from the cache")
	}

	// More new records than are read one by one.
	for i := range 3 * maxProbes {
		r.video("front")
		outcome := recording.OutcomePublished
		if i%4 == 0 {
			outcome = recording.OutcomeRejected
		}
		r.command("front", "front_cmd", outcome)
		r.command("rear", "rear_cmd", recording.OutcomePublished)
		if i == maxProbes {
			r.gate(`{"gated":false}`)
		}
	}
	// Players of both streams polling together, through the one cache.
	r.command("front", "front_cmd", recording.OutcomeRejected)
	r.command("rear", "rear_cmd", recording.OutcomeRejected)
	var wg sync.WaitGroup
	counts := make([]int, 8)
	for i := range counts {
		wg.Go(func() {
			tl, err := c.Read(ctx, js, Options{Stream: []string{"front", "rear"}[i%2]})
			if err != nil {
				t.Error(err)
				return
			}
			counts[i] = len(tl.Markers)
		})
	}
	wg.Wait()
	for i, n := range counts {
		if want := []int{2 + 3*maxProbes/4 + 2, 4}[i%2]; n != want {
			t.Errorf("player %d read %d markers, want %d", i, n, want)
		}
	}
	check("many records", 2+3*maxProbes/4+2, 4) // the ARMED transition is both streams'

	// Retention drops the oldest records: the first frame, the first
	// rejected command and the ARMED record go; HOLD is then the first
	// gate state, still marked.
	s, err := js.Stream(ctx, recording.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(5)); err != nil {
		t.Fatal(err)
	}
	front := check("the oldest dropped", 1+3*maxProbes/4+2, 4)
	if front.Start == nil || !front.Start.After(r.base.Add(10*time.Millisecond)) {
		t.Errorf("the first frame is still the dropped one: %v", front.Start)
	}
	if info, err := s.Info(ctx); err != nil || info.State.FirstSeq != 5 {
		t.Fatalf("after the purge: %v, first sequence %d, want 5", err, info.State.FirstSeq)
	}
	// Then up to the first frame of the many: HOLD and the rear command
	// go, and ARMED, now the first gate state, is not a transition; a new
	// rear command comes.
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(10)); err != nil {
		t.Fatal(err)
	}
	r.command("rear", "rear_cmd", recording.OutcomeRejected)
	check("more dropped, one more", 3*maxProbes/4+1, 2)

	// A recording deleted and made again starts over.
	if err := js.DeleteStream(ctx, recording.DefaultStream); err != nil {
		t.Fatal(err)
	}
	// The server removes the deleted store in the background: on a loaded
	// machine the create right after can fail ("error creating store for
	// stream", 10049) and succeed a moment later, as the recorder's own
	// set-up retries.
	var lastErr error
	if !testwait.Until(testwait.Default, func() bool {
		_, lastErr = recording.EnsureStream(ctx, js, recording.StreamConfig{MaxAge: time.Hour})
		return lastErr == nil
	}) {
		t.Fatalf("making the recording stream again: %v", lastErr)
	}
	r.video("front")
	r.command("front", "front_cmd", recording.OutcomeRejected)
	check("recreated", 1, 0)
	if _, err := c.Read(ctx, js, Options{Recording: "NOPE", Stream: "front"}); err == nil {
		t.Error("a recording that does not exist: no error")
	}
}
