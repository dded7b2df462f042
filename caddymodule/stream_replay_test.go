package caddymodule

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
)

// Through Caddy, without an sdr_recorder app: a replay request is answered
// 501 with a message saying what it needs, a bad value 400 with one naming
// it, each before any upgrade; a live client of the same handler gets its
// video as before.
func TestStreamServeReplayWithoutRecorder(t *testing.T) {
	w := startStream(t, "")
	for _, c := range []struct {
		query string
		code  int
		body  string
	}{
		{"replay=-30s", http.StatusNotImplemented, "sdr_stream default: replay needs the sdr_recorder app"},
		{"replay=-30s&speed=9", http.StatusBadRequest, `sdr_stream default: speed "9": want a number from 0.25 to 4`},
		{"replay=noon", http.StatusBadRequest, `sdr_stream default: replay "noon": not a time`},
	} {
		ws, resp, err := websocket.DefaultDialer.Dial("ws://localhost:9080/stream/ws?"+c.query, nil)
		if err == nil {
			_ = ws.Close()
			t.Fatalf("%s: upgraded, want %d", c.query, c.code)
		}
		if resp == nil {
			t.Fatalf("%s: %v", c.query, err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != c.code || !strings.HasPrefix(string(body), c.body) {
			t.Fatalf("%s: %d %q, want %d %q", c.query, resp.StatusCode, body, c.code, c.body)
		}
	}
	live := streamDial(t, "ws://localhost:9080/stream/ws?speed=2", nil) // speed alone: live
	key := w.Write(t, true, 100)
	if h, _ := shmringtest.ReadVideo(t, live); h.FrameSeq != key || !h.Keyframe() {
		t.Fatalf("live client got frame %d (keyframe %v), want keyframe %d", h.FrameSeq, h.Keyframe(), key)
	}
}
