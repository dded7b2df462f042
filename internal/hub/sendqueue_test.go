package hub

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// startConn reports the start of each Write on a connection without a
// socket of its own (the client's goroutine writes every frame).
type startConn struct {
	net.Conn
	writing chan int
}

func (c *startConn) Write(b []byte) (int, error) {
	c.writing <- len(b)
	return c.Conn.Write(b)
}

// A client that stops reading has at most one write's worth of frames taken
// from the hub (SendQueue, at least one frame); the frames after it wait in
// the hub, where the client skips to a keyframe once it is Capacity frames
// behind. With the budget of 1 MiB it was sent every frame that had come
// while its previous write was blocked, however stale.
func TestStalledClientWaitsInTheHub(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		sendQueue int
		want      []uint64 // frame_seq after the first keyframe
	}{
		{"send queue 4KiB", 4 << 10, []uint64{2, 21}},
		{"no send queue", -1, []uint64{2, 3, 4, 5, 6, 21}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := New(Config{Capacity: 8})
			defer h.Close()
			srv, cli := net.Pipe()
			conn := &startConn{Conn: srv, writing: make(chan int, 64)}
			c := h.NewClient(conn, nil, ClientConfig{KeyframeTimeout: time.Minute, PingInterval: -1, SendQueue: tc.sendQueue})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			defer func() { _ = cli.Close(); cancel(); <-done }()
			testwait.For(t, "the client to join", func() bool { return h.Stats().Clients == 1 })
			_ = cli.SetReadDeadline(testwait.Deadline(testwait.Default))
			seq := func() uint64 {
				t.Helper()
				msg, err := readServerMessage(cli)
				if err != nil {
					t.Fatal(err)
				}
				return binary.LittleEndian.Uint64(msg[1+8:])
			}

			h.Publish(mkFrame(1, true, 5000))
			testwait.Recv(t, conn.writing, "the write of frame 1")
			// Frames 2-6 come while the write of frame 1 is blocked.
			for i := uint64(2); i <= 6; i++ {
				h.Publish(mkFrame(i, false, 5000))
			}
			if got := seq(); got != 1 {
				t.Fatalf("first frame %d, want 1", got)
			}
			// The next write has taken its frames from the hub; the client
			// reads nothing while 14 more come, and a keyframe.
			testwait.Recv(t, conn.writing, "the next write")
			for i := uint64(7); i <= 20; i++ {
				h.Publish(mkFrame(i, false, 5000))
			}
			h.Publish(mkFrame(21, true, 5000))
			var got []uint64
			for len(got) == 0 || got[len(got)-1] != 21 {
				got = append(got, seq())
				if len(got) > 25 {
					break
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("after frame 1 the client got frames %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("after frame 1 the client got frames %v, want %v", got, tc.want)
				}
			}
			if st := h.Stats(); st.LagSkips != 1 {
				t.Errorf("%d lag skips, want 1", st.LagSkips)
			}
		})
	}
}
