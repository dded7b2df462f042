package caddymodule

import (
	"net/http"
	"strings"
	"testing"
)

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
