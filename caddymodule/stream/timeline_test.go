package stream

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/timeline"
)

// fakeTimelines is Recordings and Timelines, with a fixed timeline.
type fakeTimelines struct {
	fakeRecordings
	tl timeline.Timeline
}

func (f *fakeTimelines) RecordingTimeline(_ context.Context, stream string) (timeline.Timeline, error) {
	f.mu.Lock()
	f.stream = stream
	f.mu.Unlock()
	return f.tl, nil
}

func get(t *testing.T, u string) (int, string, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

// A plain GET with ?recording answers the recording's timeline as JSON;
// without the sdr_recorder app it is answered 501 with a message.
func TestTimelineEndpoint(t *testing.T) {
	start := time.Date(2026, 12, 4, 2, 30, 0, 0, time.UTC)
	end := start.Add(time.Minute)
	recs := &fakeTimelines{tl: timeline.Timeline{Start: &start, End: &end, Markers: []timeline.Marker{{Time: start.Add(time.Second), Kind: timeline.KindGate, Mode: "HOLD"}}}}
	s, u := replayHandler(t, recs, nil)
	s.timelines = recs // as findRecordings takes it from the sdr_recorder app
	_, none := replayHandler(t, nil, nil)
	u = "http" + strings.TrimPrefix(u, "ws")
	none = "http" + strings.TrimPrefix(none, "ws")

	code, ctype, body := get(t, u+"?recording")
	if code != http.StatusOK || ctype != "application/json" {
		t.Fatalf("?recording: %d %s %q", code, ctype, body)
	}
	var got struct {
		Start, End time.Time
		Markers    []map[string]any
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("?recording: %q: %v", body, err)
	}
	if !got.Start.Equal(start) || !got.End.Equal(end) || len(got.Markers) != 1 || got.Markers[0]["mode"] != "HOLD" || got.Markers[0]["kind"] != "gate" {
		t.Errorf("?recording: %s", body)
	}
	recs.mu.Lock()
	if recs.stream != "front" {
		t.Errorf("timeline asked of stream %q, want front", recs.stream)
	}
	recs.mu.Unlock()

	code, _, body = get(t, none+"?recording")
	if code != http.StatusNotImplemented || !strings.HasPrefix(body, "sdr_stream front: ") || !strings.Contains(body, "needs the sdr_recorder app") {
		t.Errorf("?recording without sdr_recorder: %d %q, want 501 with a message", code, body)
	}
}
