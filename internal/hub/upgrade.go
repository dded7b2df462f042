package hub

import (
	"fmt"
	"net"
	"net/http"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// Upgrade completes the WebSocket handshake of r with gorilla/websocket and
// returns the bare connection, from then on framed by the hub. Every Origin
// is accepted (wire.AnyOrigin).
func Upgrade(w http.ResponseWriter, r *http.Request) (net.Conn, error) {
	u := websocket.Upgrader{CheckOrigin: wire.AnyOrigin}
	ws, err := u.Upgrade(wire.Hijackable(w, nil), r, nil)
	if err != nil {
		return nil, fmt.Errorf("upgrading %s to websocket: %w", r.RemoteAddr, err)
	}
	return ws.NetConn(), nil
}
