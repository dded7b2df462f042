package testenv

import (
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
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
