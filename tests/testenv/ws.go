package testenv

import (
	"errors"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// DialWS opens a WebSocket to url, closed with the test, whose reads fail
// after testwait.Timeout(timeout).
//
// A dial that the server drops before any answer (unexpected EOF, a reset)
// is tried again, up to 5 times, as a browser does: in the instant of a
// configuration reload, the old server, letting go of the shared listener,
// may take one connection and close it (it did, under the soak's CPU hog:
// tests/stream TestReloadUnderLoadLeavesNothingBehind). A refusal with an
// HTTP answer is never retried.
func DialWS(t testing.TB, url string, hdr http.Header, timeout time.Duration) *websocket.Conn {
	t.Helper()
	var c *websocket.Conn
	var resp *http.Response
	var err error
	for try := 1; ; try++ {
		c, resp, err = websocket.DefaultDialer.Dial(url, hdr)
		if err == nil || resp != nil || !droppedAtReload(err) || try == 5 {
			break
		}
		time.Sleep(100 * time.Millisecond) // a browser's back-off before it redials
	}
	if err != nil {
		t.Fatalf("dialing %s: %v (%v)", url, err, resp)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(testwait.Deadline(timeout))
	return c
}

// droppedAtReload reports whether a dial's error is a connection closed
// before the handshake's answer.
func droppedAtReload(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}
