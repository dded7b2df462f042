package wire

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// unwrapOnly wraps a ResponseWriter the way Caddy's middleware does: it
// offers Unwrap, not http.Hijacker.
type unwrapOnly struct{ http.ResponseWriter }

func (u unwrapOnly) Unwrap() http.ResponseWriter { return u.ResponseWriter }

// readOneMessage upgrades through Hijackable(unwrapOnly{w}, guard) with
// gorilla/websocket, sends the client bytes raw below gorilla's framing,
// and returns the message the server read, or the error of the upgrade or
// the read.
func readOneMessage(t *testing.T, guard *FrameGuard, client []byte) ([]byte, error) {
	t.Helper()
	type result struct {
		msg []byte
		err error
	}
	done := make(chan result, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := websocket.Upgrader{CheckOrigin: AnyOrigin}
		conn, err := u.Upgrade(Hijackable(unwrapOnly{w}, guard), r, nil)
		if err != nil {
			done <- result{nil, err}
			return
		}
		defer conn.Close()
		_, msg, err := conn.ReadMessage()
		done <- result{msg, err}
	}))
	defer srv.Close()
	ws, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), http.Header{"Origin": {"http://elsewhere.example"}})
	if err != nil {
		res := testwait.Recv(t, done, "the server's upgrade")
		return nil, errors.Join(err, res.err)
	}
	resp.Body.Close()
	defer ws.Close()
	if _, err := ws.NetConn().Write(client); err != nil {
		t.Fatal(err)
	}
	res := testwait.Recv(t, done, "the server's read")
	return res.msg, res.err
}

func TestHijackableThroughWrappers(t *testing.T) {
	t.Parallel()
	msg, err := readOneMessage(t, nil, fragments(3, 10))
	if err != nil || !bytes.Equal(msg, bytes.Repeat([]byte{'x'}, 30)) {
		t.Fatalf("a message in 3 fragments through a writer with Unwrap only: %q, %v", msg, err)
	}
}

func TestHijackableGuardsReads(t *testing.T) {
	t.Parallel()
	g := NewFrameGuard(FrameLimits{MaxFragments: 2, Rate: -1})
	msg, err := readOneMessage(t, g, fragments(3, 10))
	var le *LimitError
	if !errors.As(err, &le) || le.Reason != ReasonFragments {
		t.Fatalf("a message in 3 fragments with a guard of 2: %q, %v; want a fragments LimitError", msg, err)
	}
}
