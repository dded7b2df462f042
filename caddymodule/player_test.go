package caddymodule

import (
	"encoding/json"
	"net/http"
	"strings"
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

func TestPlayerServe(t *testing.T) {
	tester := localhostTester(t, `
	http://localhost:9080 {
		handle_path /player/* {
			sdr_player {
				stream_url /video/ws
			}
		}
		handle {
			sdr_player
			respond "next handler" 200
		}
	}`)

	for _, tc := range []struct {
		path, ctype, contains string
		status                int
	}{
		{"/", "text/html; charset=utf-8", `<script type="module" src="./sdr/app.js">`, 200},
		{"/index.html", "text/html; charset=utf-8", `<title>sdr-caddy player</title>`, 200},
		{"/sdr/player.js", "text/javascript; charset=utf-8", "export class Player", 200},
		{"/sdr/controls.js", "text/javascript; charset=utf-8", "export class KeyboardDriver", 200},
		{"/sdr/app.js", "text/javascript; charset=utf-8", "import { Player } from './player.js'", 200},
		{"/sdr/player.css", "text/css; charset=utf-8", ".sdr-banner", 200},
		{"/player/", "text/html; charset=utf-8", `<meta name="sdr-stream-url" content="/video/ws">`, 200},
		{"/player/sdr/player.js", "text/javascript; charset=utf-8", "export class Player", 200},
		{"/sdr/nope.js", "", "", 404},
		{"/sdr/embed.go", "", "", 404},
		{"/anything/else", "text/plain; charset=utf-8", "next handler", 200},
	} {
		resp, err := tester.Client.Get("http://localhost:9080" + tc.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		body := playerBody(t, resp)
		if resp.StatusCode != tc.status {
			t.Errorf("GET %s: status %d, want %d", tc.path, resp.StatusCode, tc.status)
			continue
		}
		if tc.status != 200 {
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != tc.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", tc.path, got, tc.ctype)
		}
		if !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: body does not contain %q", tc.path, tc.contains)
		}
	}
	// The page at / has no meta tag: it connects to /stream/ws.
	resp, err := tester.Client.Get("http://localhost:9080/")
	if err != nil {
		t.Fatal(err)
	}
	if body := playerBody(t, resp); strings.Contains(body, "sdr-stream-url") {
		t.Errorf("GET /: page carries a stream URL meta tag without stream_url")
	}

	// Revalidation by ETag.
	resp, err = tester.Client.Get("http://localhost:9080/sdr/player.js")
	if err != nil {
		t.Fatal(err)
	}
	playerBody(t, resp)
	etag := resp.Header.Get("Etag")
	if etag == "" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("player.js: Etag %q, Cache-Control %q", etag, resp.Header.Get("Cache-Control"))
	}
	req, _ := http.NewRequest(http.MethodGet, "http://localhost:9080/sdr/player.js", nil)
	req.Header.Set("If-None-Match", etag)
	tester.AssertResponseCode(req, http.StatusNotModified)

	req, _ = http.NewRequest(http.MethodPost, "http://localhost:9080/sdr/player.js", strings.NewReader("{}"))
	tester.AssertResponseCode(req, http.StatusMethodNotAllowed)
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

func playerBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}
