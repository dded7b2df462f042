package stream

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/moduletest"
)

func TestRTCConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		c    RTCConfig
		err  string
	}{
		{"defaults", RTCConfig{}, ""},
		{"full", RTCConfig{UDPPortMin: 50000, UDPPortMax: 50100, NAT1To1IPs: []string{"203.0.113.7", "2001:db8::1"},
			ICEServers: []RTCICEServer{{URLs: []string{"stun:x:3478"}}}, UDPMux: ":8443"}, ""},
		{"half range", RTCConfig{UDPPortMin: 50000}, "want both set"},
		{"reversed range", RTCConfig{UDPPortMin: 6000, UDPPortMax: 5000}, "min <= max"},
		{"port too big", RTCConfig{UDPPortMin: 1, UDPPortMax: 70000}, "udp_port_max 70000"},
		{"bad nat ip", RTCConfig{NAT1To1IPs: []string{"example.com"}}, `"example.com" is not an IP`},
		{"bad mux", RTCConfig{UDPMux: "8443"}, "want [host]:port"},
		{"mux port 0", RTCConfig{UDPMux: ":0"}, "port must be 1 to 65535"},
		{"ice without urls", RTCConfig{ICEServers: []RTCICEServer{{}}}, "ice server 0 has no urls"},
		{"negative rate", RTCConfig{ControlRate: -1}, "must not be negative"},
	} {
		moduletest.CheckError(t, tc.name, tc.c.Validate(), tc.err)
	}
}

// A WHEP handler whose UDP port is taken provisions (caddy validate binds
// nothing), fails to start with an error naming the port, and Cleanup
// gives the ring reader back.
func TestWHEPProvisionBusyPort(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "frames")
	moduletest.CreateRing(t, path, 1<<16)
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	mux := busy.LocalAddr().String()

	ctx, cancel := moduletest.Context(t)
	defer cancel()
	h := &WHEP{Name: "busy", Source: &StreamSource{SHM: &SHMSource{Path: path}}, WebRTC: &RTCConfig{UDPMux: mux}}
	// Provision binds nothing (caddy validate of a live config must
	// succeed); the start of the config does, and fails.
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	err = moduletest.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "binding udp mux "+mux) {
		t.Fatalf("start: %v, want an error binding %s", err, mux)
	}
	if n, ok := rtcEngines.References(h.rtcConfig().engineKey()); ok {
		t.Fatalf("the engine that failed to bind is held: %d references", n)
	}
	key := h.source.ringKey
	if n, ok := ringPool.References(key); !ok || n != 1 {
		t.Fatalf("ring reader %s: %d references (%t), want 1 before Cleanup", key, n, ok)
	}
	if err := h.Cleanup(); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if n, ok := ringPool.References(key); ok {
		t.Fatalf("ring reader still held after Cleanup: %d references", n)
	}
}

// sdr_stream and sdr_whep of one ring take the same shared reader the same
// way, and each one's Cleanup gives back its own reference and no other.
func TestStreamAndWHEPShareOneRingReader(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "frames")
	moduletest.CreateRing(t, path, 1<<16)
	ctx, cancel := moduletest.Context(t)
	defer cancel()
	src := &StreamSource{SHM: &SHMSource{Path: path}}
	s := &Stream{Name: "shared", Source: src}
	if err := s.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	w := &WHEP{Name: "shared", Source: src}
	if err := w.Provision(ctx); err != nil {
		_ = s.Cleanup()
		t.Fatal(err)
	}
	key := s.source.ringKey
	if w.source.ringKey != key || w.source.ring.Ring != s.source.ring.Ring {
		t.Fatalf("whep reads ring %s (%p), the stream %s (%p): want one shared reader", w.source.ringKey, w.source.ring.Ring, key, s.source.ring.Ring)
	}
	refs := func() int {
		n, _ := ringPool.References(key)
		return n
	}
	if n := refs(); n != 2 {
		t.Fatalf("%d references to the ring reader, want 2", n)
	}
	if err := w.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if n := refs(); n != 1 {
		t.Fatalf("%d references after the whep's Cleanup, want the stream's 1", n)
	}
	if err := s.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if n, ok := ringPool.References(key); ok {
		t.Fatalf("ring reader still held after both Cleanups: %d references", n)
	}
}

// Requests WHEP refuses, answered with the status and without a session.
func TestWHEPRefusals(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "frames")
	moduletest.CreateRing(t, path, 1<<16)
	ctx, cancel := moduletest.Context(t)
	defer cancel()
	h := &WHEP{Name: "refusals", Source: &StreamSource{SHM: &SHMSource{Path: path}}}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	if err := moduletest.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, ctype, body string
		status              int
	}{
		{http.MethodPost, "text/plain", "v=0", http.StatusUnsupportedMediaType},
		{http.MethodPost, "application/sdp", "v=0\r\nnonsense", http.StatusBadRequest},
		{http.MethodPost, "application/sdp", strings.Repeat("a", whepMaxOffer+1), http.StatusRequestEntityTooLarge},
		{http.MethodDelete, "", "", http.StatusNotFound},
		{http.MethodGet, "", "", http.StatusMethodNotAllowed},
		{http.MethodPatch, "application/trickle-ice-sdpfrag", "a=x", http.StatusMethodNotAllowed},
	} {
		r := httptest.NewRequest(tc.method, "/whep/nosuchsession", strings.NewReader(tc.body))
		if tc.ctype != "" {
			r.Header.Set("Content-Type", tc.ctype)
		}
		err := h.ServeHTTP(httptest.NewRecorder(), r, nil)
		var he caddyhttp.HandlerError
		if !errors.As(err, &he) || he.StatusCode != tc.status {
			t.Errorf("%s %s %.20q: %v, want status %d", tc.method, tc.ctype, tc.body, err, tc.status)
		}
	}
	h.mu.Lock()
	n := len(h.sessions)
	h.mu.Unlock()
	if n != 0 {
		t.Errorf("%d sessions left after refused requests", n)
	}
}
