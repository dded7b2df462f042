package recording

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/natstest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// TestKeepCopiesWindowThatOutlivesRetention keeps a window that starts
// between two keyframes: the kept stream holds the video from the
// keyframe before the window on and the telemetry inside it, nothing
// from before (but that lead-in) or after, and it is all still there once
// the recording itself is purged. The bounds refuse with a reason, and a
// recorder started again lists the kept window.
func TestKeepCopiesWindowThatOutlivesRetention(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 64<<10)
	ctx := testCtx(t)
	cfg := Config{Stream: StreamConfig{Memory: true, MaxAge: time.Hour}, IDRInterval: -1, KeepMax: 1}
	r := startRecorder(t, nc, cfg)
	testwait.For(t, "the kept windows listed", func() bool {
		r.keepMu.Lock()
		defer r.keepMu.Unlock()
		return r.keep.loaded
	})
	src, _ := attachTestSource(t, r, "front", nil)
	pub := natstest.Connect(t, natsServerOf(t, nc))
	frames := map[uint64]frame.Frame{}
	push := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			n := 300 + i
			if i == 13 {
				n = 200_000 // split in parts: max_payload is 64 KiB
			}
			f := testFrame(i, 10, n)
			frames[f.Header.FrameSeq] = f
			src.push(f)
		}
		testwait.For(t, fmt.Sprintf("frames up to %d recorded", to), func() bool { return r.Stats().Frames["front"] >= uint64(to+1) })
	}
	telemetry := func(body string) {
		t.Helper()
		n := r.Stats().Records[KindTelemetry]
		if err := pub.Publish("telemetry.odom", []byte(body)); err != nil {
			t.Fatal(err)
		}
		testwait.For(t, "telemetry "+body+" recorded", func() bool { return r.Stats().Records[KindTelemetry] > n })
	}
	push(0, 11)
	telemetry(`{"n":"before"}`)
	from := time.Now()
	push(12, 15)
	telemetry(`{"n":"inside"}`)
	at := time.Now()

	// A bad window and a bad name are refused before anything starts.
	var ke *KeepError
	if _, err := r.Keep(KeepRequest{Name: "a.b", Before: time.Second}); !errors.As(err, &ke) || !strings.Contains(err.Error(), "[A-Za-z0-9_-]") {
		t.Errorf("Keep with a dotted name: %v", err)
	}
	if _, err := r.Keep(KeepRequest{Name: "x", Before: 11 * time.Minute}); !errors.As(err, &ke) || !strings.Contains(err.Error(), "before must be") {
		t.Errorf("Keep of 11 minutes: %v", err)
	}
	k, err := r.Keep(KeepRequest{Name: "bump", At: at, Before: at.Sub(from), After: time.Nanosecond, Stream: "front"})
	if err != nil {
		t.Fatal(err)
	}
	if k.Stream != "SDR_REC_KEEP_bump" || !k.From.Equal(from) || !k.Copying {
		t.Errorf("Keep = %+v", k)
	}
	// One copy at a time: the copy follows the recording until
	// MaxStoreDelay after the window's end.
	if _, err := r.Keep(KeepRequest{Name: "other", Before: time.Second}); !errors.As(err, &ke) || !strings.Contains(err.Error(), "still copying") {
		t.Errorf("a second Keep during the copy: %v", err)
	}
	push(16, 17)
	telemetry(`{"n":"after"}`)
	testwait.For(t, "the copy done", func() bool {
		w := r.KeptWindows()
		return len(w) == 1 && !w[0].Copying
	})
	if w := r.KeptWindows()[0]; w.Bytes == 0 || w.Name != "bump" {
		t.Errorf("kept window %+v", w)
	}

	// The recording's retention drops its records; the kept window stays.
	s, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	ks, err := js.Stream(ctx, k.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ks.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 0 || info.Config.Discard != jetstream.DiscardNew || info.Config.Metadata[MetaKeepStream] != "front" {
		t.Errorf("kept stream config: max_age %v, discard %v, metadata %v", info.Config.MaxAge, info.Config.Discard, info.Config.Metadata)
	}
	recs, st := readAll(t, ctx, js, ReadOptions{Stream: k.Stream})
	var video []uint64
	var tel []string
	for _, rec := range recs {
		switch rec.Kind {
		case KindVideo:
			f := frames[rec.Frame.Header.FrameSeq]
			if rec.Frame.Header != f.Header || string(rec.Frame.Payload) != string(f.Payload) {
				t.Errorf("kept frame %d differs from the source's", rec.Frame.Header.FrameSeq)
			}
			video = append(video, rec.Frame.Header.FrameSeq-1)
		case KindTelemetry:
			tel = append(tel, string(rec.Data))
		}
	}
	if fmt.Sprint(video) != "[10 11 12 13 14 15]" || fmt.Sprint(tel) != `[{"n":"inside"}]` {
		t.Errorf("kept video frames %v (want 10 to 15: from the keyframe before the window), telemetry %v (want the one inside); stats %+v", video, tel, st)
	}

	// keep_max is 1: a second window is refused, with what to do.
	if _, err := r.Keep(KeepRequest{Name: "second", Before: time.Second}); !errors.As(err, &ke) || !strings.Contains(err.Error(), "keep_max is 1") {
		t.Errorf("Keep beyond keep_max: %v", err)
	}
	// A recorder started again (a reload) lists the kept window from
	// JetStream: its name is taken.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.KeepMax = 5
	r2 := startRecorder(t, nc, cfg)
	testwait.For(t, "the kept windows listed again", func() bool { return len(r2.KeptWindows()) == 1 })
	if _, err := r2.Keep(KeepRequest{Name: "bump", Before: time.Second}); !errors.As(err, &ke) || !strings.Contains(err.Error(), "kept already") {
		t.Errorf("Keep of a name kept before the reload: %v", err)
	}
}

// TestParseKeep reads the command's data member and refuses what is out
// of bounds with a reason.
func TestParseKeep(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		data, err     string
		before, after time.Duration
		name          string
	}{
		{"", "", DefaultKeepBefore, DefaultKeepAfter, ""},
		{"null", "", DefaultKeepBefore, DefaultKeepAfter, ""},
		{`{}`, "", DefaultKeepBefore, DefaultKeepAfter, ""},
		{`{"name":"wall-hit","before_s":30}`, "", 30 * time.Second, DefaultKeepAfter, "wall-hit"},
		{`{"before_s":0,"after_s":60}`, "", 0, time.Minute, ""},
		{`{"before_s":0,"after_s":0}`, "window is empty", 0, 0, ""},
		{`{"before_s":601}`, "before_s must be a number of seconds from 0 to 600", 0, 0, ""},
		{`{"after_s":-1}`, "after_s must be", 0, 0, ""},
		{`{"after_s":"10"}`, "after_s must be", 0, 0, ""},
		{`{"name":"a b"}`, "[A-Za-z0-9_-]", 0, 0, ""},
		{`{"name":"` + strings.Repeat("x", 33) + `"}`, "1 to 32", 0, 0, ""},
		{`{"name":5}`, "name must be a string", 0, 0, ""},
		{`{"nmae":"x"}`, `unknown member "nmae"`, 0, 0, ""},
		{`[1]`, "data must be an object", 0, 0, ""},
	} {
		req, err := ParseKeep([]byte(c.data))
		if c.err != "" {
			var ke *KeepError
			if !errors.As(err, &ke) || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseKeep(%s) = %v, want %q", c.data, err, c.err)
			}
			continue
		}
		if err != nil || req.Before != c.before || req.After != c.after || req.Name != c.name {
			t.Errorf("ParseKeep(%s) = %+v, %v", c.data, req, err)
		}
	}
}
