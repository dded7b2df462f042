package stream

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/moduletest"
)

func TestStreamScaleValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, json, err string
	}{
		{"edge", `{"name":"front","source":{"nats":{"subject":"video.front"}}}`, ""},
		{"origin default subject", `{"name":"front","publish":{}}`, ""},
		{"relay hop", `{"source":{"nats":{"subject":"video.a"}},"publish":{"subject":"video.b"}}`, ""},
		{"no subject", `{"source":{"nats":{}}}`, "source nats: video subject is empty"},
		{"wildcard", `{"source":{"nats":{"subject":"video.*"}}}`, "wildcards"},
		{"idr suffix", `{"publish":{"subject":"video.front.force_idr"}}`, "suffix of keyframe requests"},
		{"loop", `{"source":{"nats":{"subject":"video.a"}},"publish":{"subject":"video.a"}}`, "is the stream's own nats source"},
		{"two sources", `{"source":{"nats":{"subject":"video.a"},"encoder":"cam"}}`, "set exactly one of shm, encoder and nats, got 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Stream
			if err := json.Unmarshal([]byte(tc.json), &s); err != nil {
				t.Fatal(err)
			}
			err := s.Validate()
			if tc.err == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.err)
			}
		})
	}
}

func TestStreamScalePublishSubject(t *testing.T) {
	t.Parallel()
	for js, want := range map[string]string{
		`{}`:                           "",
		`{"publish":{}}`:               "video.default",
		`{"name":"rear","publish":{}}`: "video.rear",
		`{"name":"rear","publish":{"subject":"robot1.rear"}}`: "robot1.rear",
	} {
		var s Stream
		if err := json.Unmarshal([]byte(js), &s); err != nil {
			t.Fatal(err)
		}
		if got := s.publishSubject(); got != want {
			t.Errorf("%s: subject %q, want %q", js, got, want)
		}
	}
}

// TestStreamScaleNeedsNATS: without the sdr_nats app, an edge or origin
// stream fails to provision with an error that says what is missing, and
// its Cleanup releases nothing it did not take.
func TestStreamScaleNeedsNATS(t *testing.T) {
	t.Parallel()
	for _, js := range []string{
		`{"name":"e","source":{"nats":{"subject":"video.front"}}}`,
	} {
		var s Stream
		if err := json.Unmarshal([]byte(js), &s); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := moduletest.Context(t)
		err := s.Provision(ctx)
		if err == nil || !strings.Contains(err.Error(), "needs the sdr_nats app") {
			t.Fatalf("Provision = %v, want an error naming the sdr_nats app", err)
		}
		if err := s.Cleanup(); err != nil {
			t.Fatalf("Cleanup after a failed Provision: %v", err)
		}
		cancel()
	}
}
