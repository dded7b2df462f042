package stream

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/moduletest"
	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcaddyfile"
)

func TestStreamValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		s    *Stream
		err  string
	}{
		{"defaults", &Stream{}, ""},
		{"shm", &Stream{Source: &StreamSource{SHM: &SHMSource{Path: "/x", Size: 4096}}}, ""},
		{"two sources", &Stream{Source: &StreamSource{SHM: &SHMSource{}, Encoder: "cam"}}, "set exactly one"},
		{"no source", &Stream{Source: &StreamSource{}}, "set exactly one"},
		{"tiny ring", &Stream{Source: &StreamSource{SHM: &SHMSource{Size: 10}}}, "shm size 10"},
		{"negative frame cap", &Stream{Source: &StreamSource{SHM: &SHMSource{MaxFrameSize: -1}}}, "max_frame_size -1 is negative"},
		{"negative timeout", &Stream{IDRTimeout: caddy.Duration(-1)}, "idr_timeout is negative"},
		{"negative depth", &Stream{QueueDepth: -1}, "queue_depth is negative"},
		{"max lag", &Stream{MaxLag: caddy.Duration(250 * time.Millisecond)}, ""},
		{"negative max lag", &Stream{MaxLag: caddy.Duration(-1)}, "max_lag is negative"},
		{"send queue off", &Stream{SendQueue: -1}, ""},
		{"send queue below off", &Stream{SendQueue: -2}, "send_queue -2"},
		{"send queue too large", &Stream{SendQueue: 2 << 30}, "up to 1GiB"},
	} {
		moduletest.CheckError(t, tc.name, tc.s.Validate(), tc.err)
	}
}

// sdr_whep takes the same source as sdr_stream, and refuses the same bad
// source settings and the same bad allowlists, as JSON may give them.
func TestWHEPValidateSource(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		w    *WHEP
		err  string
	}{
		{"shm", &WHEP{Source: &StreamSource{SHM: &SHMSource{Path: "/x", MaxFrameSize: 1 << 20}}}, ""},
		{"tiny ring", &WHEP{Source: &StreamSource{SHM: &SHMSource{Size: 10}}}, "shm size 10"},
		{"negative frame cap", &WHEP{Source: &StreamSource{SHM: &SHMSource{MaxFrameSize: -1}}}, "max_frame_size -1 is negative"},
		{"allowlists", &WHEP{CommandTrust: sdrcaddyfile.CommandTrust{AllowedOrigins: []string{"https://*.example.com"}, AllowedHosts: []string{"robot.example.com"}}}, ""},
		{"bad origin", &WHEP{CommandTrust: sdrcaddyfile.CommandTrust{AllowedOrigins: []string{"app.example.com"}}}, `allowed origin "app.example.com"`},
		{"bad host", &WHEP{CommandTrust: sdrcaddyfile.CommandTrust{AllowedHosts: []string{"http://robot"}}}, `allowed host "http://robot"`},
	} {
		moduletest.CheckError(t, tc.name, tc.w.Validate(), tc.err)
	}
}

// A bad config is refused before Provision opens anything, and Cleanup
// after the failed Provision releases nothing it did not take.
func TestStreamProvisionRefusesBadConfig(t *testing.T) {
	t.Parallel()
	ctx, cancel := moduletest.Context(t)
	defer cancel()
	s := &Stream{Source: &StreamSource{SHM: &SHMSource{Path: "/nonexistent"}, Encoder: "cam"}}
	if err := s.Provision(ctx); err == nil || !strings.Contains(err.Error(), "set exactly one") {
		t.Fatalf("Provision: %v", err)
	}
	if s.source != nil {
		t.Fatal("Provision took a source before refusing the config")
	}
	if err := s.Cleanup(); err != nil {
		t.Fatalf("Cleanup after a failed Provision: %v", err)
	}
}
