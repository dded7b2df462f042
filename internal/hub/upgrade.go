package hub

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/gorilla/websocket"
)

// Upgrade completes the WebSocket handshake of r with gorilla/websocket and
// returns the bare connection, from then on framed by the hub. checkOrigin
// decides cross-origin requests; nil allows only same-origin ones.
func Upgrade(w http.ResponseWriter, r *http.Request, checkOrigin func(*http.Request) bool) (net.Conn, error) {
	if checkOrigin == nil {
		checkOrigin = SameOrigin
	}
	u := websocket.Upgrader{CheckOrigin: checkOrigin}
	ws, err := u.Upgrade(hijacker{w}, r, nil)
	if err != nil {
		return nil, fmt.Errorf("upgrading %s to websocket: %w", r.RemoteAddr, err)
	}
	return ws.NetConn(), nil
}

// hijacker lets gorilla hijack a ResponseWriter that middleware wrapped
// (it asserts http.Hijacker on the writer it gets; the wrappers offer
// Unwrap, which http.ResponseController follows).
type hijacker struct{ http.ResponseWriter }

func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(h.ResponseWriter).Hijack()
}

func (h hijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// SameOrigin allows requests without an Origin header (not from a browser)
// and those whose Origin names the requested host.
func SameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// Origins returns an origin check that allows same-origin requests and the
// listed origins ("https://app.example.com"; "*" allows every origin).
func Origins(allowed []string) func(*http.Request) bool {
	set := make(map[string]bool, len(allowed))
	for _, a := range allowed {
		set[strings.ToLower(strings.TrimSuffix(a, "/"))] = true
	}
	return func(r *http.Request) bool {
		if SameOrigin(r) || set["*"] {
			return true
		}
		return set[strings.ToLower(r.Header.Get("Origin"))]
	}
}
