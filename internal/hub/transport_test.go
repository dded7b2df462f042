package hub

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// serveRaw runs the clients of h behind a test server, over TLS when tls is
// set, and returns the server and the type of the first client's
// connection, once it has one.
func serveRaw(t *testing.T, h *Hub, cfg ClientConfig, useTLS bool) (*httptest.Server, <-chan string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	types := make(chan string, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := Upgrade(w, r)
		if err != nil {
			return
		}
		wg.Add(1)
		defer wg.Done()
		select {
		case types <- fmt.Sprintf("%T", conn):
		default:
		}
		_ = h.NewClient(conn, nil, cfg).Run(ctx)
	}))
	if useTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(func() {
		cancel()
		srv.CloseClientConnections()
		wg.Wait()
		srv.Close()
	})
	return srv, types
}

// dialRaw completes a WebSocket handshake with srv by hand and returns the
// connection's reader, positioned at the first server frame.
func dialRaw(t *testing.T, srv *httptest.Server) io.Reader {
	t.Helper()
	addr := srv.Listener.Addr().String()
	var (
		conn net.Conn
		err  error
	)
	if srv.TLS != nil {
		conn, err = tls.Dial("tcp", addr, srv.Client().Transport.(*http.Transport).TLSClientConfig)
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(testwait.Deadline(testwait.Default))
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Version", "13")
	if err := req.Write(conn); err != nil {
		t.Fatalf("sending the handshake: %v", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v, %v", resp, err)
	}
	return br
}

// Whatever the connection, the bytes a client receives are the framed
// messages of the published frames, byte for byte and nothing else: over
// TCP, where the send round writes a frame's head and payload with one
// writev (and the client's goroutine with another once the socket is
// full), over TLS and over a pipe, where the client's goroutine gathers
// them into few writes. The payload sizes cover every length encoding of
// the WebSocket frame header, an empty payload and payloads larger than a
// gathered write.
func TestClientStreamByteIdentical(t *testing.T) {
	t.Parallel()
	sizes := []int{93, 0, 1, 92, 65502, 65503, 1 << 20, 300_001, 20_000, 5}
	cfg := ClientConfig{KeyframeTimeout: time.Minute, PingInterval: -1}
	for _, tc := range []struct {
		name     string
		dial     func(t *testing.T, h *Hub) io.Reader
		directly bool // the send round writes to it
	}{
		{"tcp", func(t *testing.T, h *Hub) io.Reader {
			srv, _ := serveRaw(t, h, cfg, false)
			return dialRaw(t, srv)
		}, directSupported},
		{"tls", func(t *testing.T, h *Hub) io.Reader {
			srv, types := serveRaw(t, h, cfg, true)
			r := dialRaw(t, srv)
			if typ := testwait.Recv(t, types, "the server's connection"); typ != "*tls.Conn" {
				t.Fatalf("the client runs on a %s, want a *tls.Conn", typ)
			}
			return r
		}, false},
		{"pipe", func(t *testing.T, h *Hub) io.Reader {
			_, cli := runPiped(t, h, cfg)
			return cli
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := New(Config{})
			defer h.Close()
			r := tc.dial(t, h)
			testwait.For(t, "the client to join", func() bool { return h.Stats().Clients == 1 })
			var want []byte
			for i, size := range sizes {
				seq := uint64(i + 1)
				f := mkFrame(seq, i == 0, size)
				f.Payload = stressPayload(seq, size)
				h.Publish(f)
				want = append(want, wire.VideoFrame(f.Header, f.Payload)...)
			}
			got := make([]byte, len(want))
			if _, err := io.ReadFull(r, got); err != nil {
				t.Fatalf("reading %d bytes: %v; stats %+v", len(want), err, h.Stats())
			}
			if i := firstDifference(got, want); i >= 0 {
				t.Fatalf("byte %d of %d differs: got % x, want % x", i, len(want), got[i:min(i+16, len(got))], want[i:min(i+16, len(want))])
			}
			waitWritten(t, h, uint64(len(want)))
			if st := h.Stats(); st.FramesOut != uint64(len(sizes)) || st.BytesOut != uint64(len(want)) {
				t.Errorf("stats count %d frames, %d bytes out; want %d, %d", st.FramesOut, st.BytesOut, len(sizes), len(want))
			}
			if tc.directly && h.Stats().DirectWrites == 0 {
				t.Error("the send round wrote nothing itself")
			}
		})
	}
}

// firstDifference is the first index at which a and b differ, -1 if none.
func firstDifference(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// writeCounter counts the writes made to a connection.
type writeCounter struct {
	net.Conn
	writes atomic.Int64
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// On a connection that takes each buffer in a write of its own (TLS, where
// each write is at least one record and one system call), a frame's head
// never goes alone: small frames cost a write each at most, as when a
// frame was one buffer.
func TestClientGathersHeadAndPayload(t *testing.T) {
	t.Parallel()
	h := New(Config{})
	defer h.Close()
	srv, cli := net.Pipe()
	conn := &writeCounter{Conn: srv}
	c := h.NewClient(conn, nil, ClientConfig{KeyframeTimeout: time.Minute, PingInterval: -1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { _ = cli.Close(); cancel(); <-done }()
	testwait.For(t, "the client to join", func() bool { return h.Stats().Clients == 1 })
	_ = cli.SetReadDeadline(testwait.Deadline(testwait.Default))
	const frames = 20
	for i := range frames {
		h.Publish(mkFrame(uint64(i+1), i == 0, 100+i))
		msg, err := readServerMessage(cli)
		if err != nil {
			t.Fatalf("frame %d: %v", i+1, err)
		}
		if hdr, payload, err := wire.ParseVideo(msg); err != nil || hdr.FrameSeq != uint64(i+1) || len(payload) != 100+i {
			t.Fatalf("frame %d: got frame %d of %d bytes, %v", i+1, hdr.FrameSeq, len(payload), err)
		}
	}
	if n := conn.writes.Load(); n > frames {
		t.Errorf("%d frames took %d writes, want at most one each", frames, n)
	}
}
