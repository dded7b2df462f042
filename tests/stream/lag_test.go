package stream

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
)

// A client that stops reading falls behind, skips to a keyframe when it
// reads again (counted in client_lag_total), and never holds up the others.
// Keyframe gating is on so that a frame the ring reader itself misses on a
// loaded machine also resumes at a keyframe: every gap a client sees must.
func TestLaggingClientSkipsToKeyframe(t *testing.T) {
	w := shmringtest.NewWriter(t, "", 1<<20)
	s := startServer(t, "", fmt.Sprintf(`	handle /stream/* {
		sdr_stream {
			source shm %s
			keyframe_gating on
			queue_depth 32
			write_timeout 60s
		}
	}`, w.Path))
	slow := dial(t, s.ws+"/stream/ws")
	fast := dial(t, s.ws+"/stream/ws")
	s.waitHealth(t, "/stream/health", "2 clients", func(h map[string]any) bool { return h["clients"] == float64(2) })

	defer w.Start(t, shmringtest.Cadence{Period: 8 * time.Millisecond, GOP: 30, Size: 100000})()

	// The fast client keeps up with 300 frames (30 MB at 125 frames/s; the
	// ring reader is built for 60) while the slow one reads nothing.
	for i := range 300 {
		_ = fast.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, _, err := fast.ReadMessage(); err != nil {
			t.Fatalf("fast client, frame %d: %v; health %v; writer at %d", i, err, s.health(t, "/stream/health"), w.Ring().Sequence())
		}
	}
	// The slow client reads now. What it missed (about 30 MB) cannot all
	// have waited in socket buffers: it must skip, land on a keyframe, and
	// be counted. Every gap it sees lands on a keyframe (with keyframe
	// gating, so do the ring reader's own misses).
	var last uint64
	for n, skipped := 0, false; !skipped; n++ {
		if n == 3000 {
			t.Fatalf("the slow client read 3000 frames and no skip was counted: %v", s.health(t, "/stream/health"))
		}
		h, _ := shmringtest.ReadVideo(t, slow)
		if last != 0 && h.FrameSeq != last+1 {
			if !h.Keyframe() {
				t.Fatalf("slow client resumed at delta %d after %d", h.FrameSeq, last)
			}
			skipped = s.health(t, "/stream/health")["client_lag_total"].(float64) > 0
		}
		last = h.FrameSeq
	}
}

// Bytes that are not WebSocket, and a handshake that never completes, do
// not disturb the server.
func TestHostileConnections(t *testing.T) {
	w := shmringtest.NewWriter(t, "", 1<<20)
	s := startServer(t, "", fmt.Sprintf(`	handle /stream/* {
		sdr_stream {
			source shm %s
			max_message_size 4KiB
		}
	}`, w.Path))
	w.Write(t, true, 100)
	s.waitHealth(t, "/stream/health", "a frame", func(h map[string]any) bool { return h["shm_seq"] == float64(1) })

	// An upgraded connection that sends an unmasked frame, then one with a
	// huge length.
	for _, junk := range [][]byte{
		{0x82, 0x01, 0x04},
		{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4},
		{0x82, 0xfe, 0xff, 0xff, 1, 2, 3, 4}, // 65535 bytes, over the limit
	} {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET /stream/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil || n < 12 || string(buf[:12]) != "HTTP/1.1 101" {
			t.Fatalf("handshake: %q %v", buf[:n], err)
		}
		if _, err := conn.Write(junk); err != nil {
			t.Fatal(err)
		}
		// The server answers with a close frame (after any video) and hangs up.
		var all []byte
		for {
			n, err := conn.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				break
			}
		}
		conn.Close()
		if !containsClose(all) {
			t.Errorf("junk %x: no close frame in %d bytes", junk, len(all))
		}
	}
	// A half handshake, left open.
	half, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port))
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	fmt.Fprintf(half, "GET /stream/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")

	// The server still serves: a client that joins now gets a keyframe
	// first (the one written above, when the junk took under a second, else
	// the one written now).
	c := dial(t, s.ws+"/stream/ws")
	w.Write(t, true, 100)
	if h, _ := shmringtest.ReadVideo(t, c); !h.Keyframe() {
		t.Fatalf("first frame %d not a keyframe", h.FrameSeq)
	}
	select {
	case <-s.caddy.Exited():
		t.Fatal("caddy exited")
	default:
	}
}

// containsClose reports whether b, a stream of server frames, holds a close frame.
func containsClose(b []byte) bool {
	for len(b) >= 2 {
		op := b[0] & 0x0f
		n, hl := int(b[1]&0x7f), 2
		switch n {
		case 126:
			if len(b) < 4 {
				return false
			}
			n, hl = int(b[2])<<8|int(b[3]), 4
		case 127:
			if len(b) < 10 {
				return false
			}
			n = 0
			for _, x := range b[2:10] {
				n = n<<8 | int(x)
			}
			hl = 10
		}
		if op == wire.OpClose {
			return true
		}
		if len(b) < hl+n {
			return false
		}
		b = b[hl+n:]
	}
	return false
}
