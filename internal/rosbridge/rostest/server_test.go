package rostest

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// An op is recorded once it took effect: a test that waits for an
// unsubscribe (or a subscribe) finds the server's subscriptions already
// changed by it. Recorded first, the op could be seen while the state was
// still the old one, which made tests of the mux fail on a loaded machine.
// The check runs as each op is recorded, which is the earliest moment a
// waiter can see it.
func TestOpRecordedAfterItsEffect(t *testing.T) {
	s, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wrong := make(chan string, 10)
	s.mu.Lock()
	s.seen = func(o Op) {
		want := map[string]int{"subscribe": 1, "unsubscribe": 0}[o.Op]
		if conns, _ := s.Subscribers("/odom"); conns != want {
			wrong <- o.Op
		}
	}
	s.mu.Unlock()
	ws, _, err := websocket.DefaultDialer.Dial(s.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, op := range []string{"subscribe", "unsubscribe"} {
		if err := ws.WriteJSON(map[string]any{"op": op, "id": "s", "topic": "/odom"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WaitFor(testwait.Timeout(10*time.Second), func(ops []Op) bool { return len(ops) == 2 }); err != nil {
		t.Fatal(err)
	}
	close(wrong)
	for op := range wrong {
		t.Errorf("%s recorded before the server's subscriptions changed", op)
	}
}
