package wire

import (
	"bufio"
	"net"
	"net/http"
)

// AnyOrigin is the CheckOrigin of every WebSocket upgrader of sdr-caddy:
// every Origin may connect, as the old transport-server allowed. Watching
// is harmless; what a connection may command is judged on its commands
// (internal/origin).
func AnyOrigin(*http.Request) bool { return true }

// Hijackable returns w as a ResponseWriter that gorilla/websocket's
// Upgrader can hijack. The upgrader asserts http.Hijacker on the writer it
// gets, and middleware (Caddy's) wraps the server's writer in types that
// offer Unwrap instead, which http.ResponseController follows. With a
// guard, reads of the hijacked connection go through it (GuardConn), below
// the framing of whoever reads the connection afterwards.
func Hijackable(w http.ResponseWriter, guard *FrameGuard) http.ResponseWriter {
	return hijacker{w, guard}
}

type hijacker struct {
	http.ResponseWriter
	guard *FrameGuard
}

func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil || h.guard == nil {
		return conn, brw, err
	}
	return GuardConn(conn, h.guard), brw, nil
}

func (h hijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }
