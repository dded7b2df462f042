package hub

import (
	"bufio"
	"fmt"
	"net"
	"net/http"

	"github.com/gorilla/websocket"
)

// Upgrade completes the WebSocket handshake of r with gorilla/websocket and
// returns the bare connection, from then on framed by the hub. Every Origin
// is accepted, as the old transport-server did: watching is harmless, and
// what a connection may command is judged on its commands
// (internal/origin).
func Upgrade(w http.ResponseWriter, r *http.Request) (net.Conn, error) {
	u := websocket.Upgrader{CheckOrigin: anyOrigin}
	ws, err := u.Upgrade(hijacker{w}, r, nil)
	if err != nil {
		return nil, fmt.Errorf("upgrading %s to websocket: %w", r.RemoteAddr, err)
	}
	return ws.NetConn(), nil
}

func anyOrigin(*http.Request) bool { return true }

// hijacker lets gorilla hijack a ResponseWriter that middleware wrapped
// (it asserts http.Hijacker on the writer it gets; the wrappers offer
// Unwrap, which http.ResponseController follows).
type hijacker struct{ http.ResponseWriter }

func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(h.ResponseWriter).Hijack()
}

func (h hijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }
