package testenv

import (
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// DialWS opens a WebSocket to url, closed with the test, whose reads fail
// after testwait.Timeout(timeout).
func DialWS(t testing.TB, url string, hdr http.Header, timeout time.Duration) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		t.Fatalf("dialing %s: %v (%v)", url, err, resp)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(testwait.Deadline(timeout))
	return c
}

// ReadVideo reads messages from c until a 0x01 video frame and returns its
// header.
func ReadVideo(t testing.TB, c *websocket.Conn) shmring.Header {
	t.Helper()
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("reading video: %v", err)
		}
		if msg[0] != wire.TypeVideo {
			continue
		}
		h, _, err := wire.ParseVideo(msg)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
}
