package player

import (
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/moduletest"
)

func TestPlayerCaddyfile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		want     Player
		err      string
	}{
		{name: "bare", in: `sdr_player`},
		{name: "stream path", in: "sdr_player {\n stream_url /video/ws\n}", want: Player{StreamURL: "/video/ws"}},
		{name: "stream ws url", in: "sdr_player {\n stream_url wss://edge.example/stream/ws\n}", want: Player{StreamURL: "wss://edge.example/stream/ws"}},
		{name: "argument", in: `sdr_player /x`, err: `sdr_player takes no arguments, got "/x"`},
		{name: "unknown", in: "sdr_player {\n root /srv\n}", err: `unknown subdirective "root"`},
		{name: "duplicate", in: "sdr_player {\n stream_url /a\n stream_url /b\n}", err: `duplicate subdirective "stream_url"`},
		{name: "no value", in: "sdr_player {\n stream_url\n}", err: `wrong argument count`},
		{name: "two values", in: "sdr_player {\n stream_url /a /b\n}", err: `stream_url takes one argument, got "/b"`},
		{name: "http url", in: "sdr_player {\n stream_url http://x/ws\n}", err: `want a path starting with / or a ws:// or wss:// URL`},
		{name: "relative", in: "sdr_player {\n stream_url stream/ws\n}", err: `want a path starting with /`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var p Player
			err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
			if moduletest.ParseFailed(t, err, tc.err) {
				return
			}
			if p.StreamURL != tc.want.StreamURL {
				t.Fatalf("StreamURL = %q, want %q", p.StreamURL, tc.want.StreamURL)
			}
		})
	}
}

func TestPlayerValidateJSON(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{`{"stream_url":"ftp://x/y"}`, `{"stream_url":"ws://"}`} {
		var p Player
		if err := json.Unmarshal([]byte(raw), &p); err != nil {
			t.Fatal(err)
		}
		if err := p.Validate(); err == nil {
			t.Errorf("Validate(%s) = nil, want an error", raw)
		}
	}
}
