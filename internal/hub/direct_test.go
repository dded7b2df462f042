package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// serveOne starts an HTTP server that streams h to WebSocket clients and
// hands each server-side Client to the test.
func serveOne(t *testing.T, h *Hub, cfg ClientConfig) (string, <-chan *Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	clients := make(chan *Client, 4)
	done := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := Upgrade(w, r)
		if err != nil {
			return
		}
		c := h.NewClient(conn, nil, cfg)
		clients <- c
		if err := c.Run(ctx); err != nil {
			t.Logf("client ended: %v", err)
		}
		done <- struct{}{}
	}))
	t.Cleanup(func() {
		cancel()
		srv.CloseClientConnections()
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http"), clients
}

// directClient runs one client, connected over TCP, of a hub that keeps
// 1000 frames (no lag skips), for tests of the send round's direct writes.
func directClient(t *testing.T) (*Hub, *websocket.Conn, *Client) {
	t.Helper()
	if !directSupported {
		t.Skip("the send round writes to sockets on Linux only")
	}
	t.Parallel()
	h := New(Config{Capacity: 1000})
	t.Cleanup(h.Close)
	url, clients := serveOne(t, h, ClientConfig{KeyframeTimeout: time.Minute})
	ws := dial(t, url, nil)
	return h, ws, <-clients
}

func readVideo(t *testing.T, c *websocket.Conn) uint64 {
	t.Helper()
	_, msg, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	hdr, _, err := wire.ParseVideo(msg)
	if err != nil {
		t.Fatalf("message of type %#x: %v", msg[0], err)
	}
	return hdr.FrameSeq
}

// Over TCP the send round writes the live frames itself; a client whose
// socket fills is handed to its goroutine, loses nothing it was sent, and
// goes back to the send round once it has caught up.
func TestSendRoundWritesDirectAndHandsOver(t *testing.T) {
	h, c, cl := directClient(t)
	h.Publish(mkFrame(1, true, 1000))
	if got := readVideo(t, c); got != 1 {
		t.Fatalf("first frame %d", got)
	}
	for i := uint64(2); i <= 50; i++ {
		h.Publish(mkFrame(i, false, 1000))
		if got := readVideo(t, c); got != i {
			t.Fatalf("frame %d, want %d", got, i)
		}
	}
	st := h.Stats()
	if st.DirectWrites < 45 {
		t.Fatalf("%d of %d writes by the send round, want nearly all: %+v", st.DirectWrites, st.Writes, st)
	}

	// Fill the socket: the client does not read while 300 frames of
	// 200 KB go out (more than the kernel buffers on loopback).
	for i := uint64(51); i <= 350; i++ {
		h.Publish(mkFrame(i, false, 200000))
	}
	// Each look publishes a padding frame, to keep the rounds coming.
	testwait.For(t, "a write left to the client's goroutine", func() bool {
		if h.Stats().Handovers > 0 {
			return true
		}
		h.Publish(mkFrame(0, false, 0))
		return false
	})
	// (seq 0 frames are padding; the capacity of 1000 keeps every frame.)
	var last uint64
	for last < 350 {
		seq := readVideo(t, c)
		if seq == 0 {
			continue
		}
		if seq != last+1 && last != 0 && seq != 51 {
			t.Fatalf("frame %d after %d: the handover lost or reordered frames", seq, last)
		}
		if last == 0 && seq != 51 {
			t.Fatalf("first frame after the fill %d, want 51", seq)
		}
		last = seq
	}
	// Frame 350 read, the goroutine may still be writing the padding:
	// the client is back with the send round once it has caught up.
	testwait.For(t, "the client's goroutine caught up", func() bool {
		cl.wmu.Lock()
		defer cl.wmu.Unlock()
		return !cl.slow
	})
	before := h.Stats().DirectWrites
	for i := uint64(351); i <= 360; i++ {
		h.Publish(mkFrame(i, false, 1000))
		for {
			seq := readVideo(t, c)
			if seq == i {
				break
			}
			if seq != 0 {
				t.Fatalf("frame %d, want %d", seq, i)
			}
		}
	}
	if after := h.Stats().DirectWrites; after-before < 5 {
		t.Errorf("after catching up only %d of 10 writes by the send round", after-before)
	}
}

func broadcastTelemetry(t *testing.T, h *Hub, body string) []byte {
	t.Helper()
	msg, err := wire.Telemetry("telemetry.test", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	h.Broadcast(wire.AppendBinaryFrame(nil, msg))
	return msg
}

// Queued telemetry waits for the next frame and goes out in the same write,
// here the send round's direct write. (That nothing is written while it is
// held is TestTelemetryHold's, on a fake clock.)
func TestTelemetryRidesWithNextFrame(t *testing.T) {
	t.Parallel()
	h := New(Config{TelemetryHold: time.Minute})
	defer h.Close()
	url, clients := serveOne(t, h, ClientConfig{KeyframeTimeout: time.Minute})
	ws := dial(t, url, nil)
	<-clients
	f1 := mkFrame(1, true, 100)
	h.Publish(f1)
	if got := readVideo(t, ws); got != 1 {
		t.Fatalf("first frame %d", got)
	}
	sent := framed(wire.AppendVideo(nil, f1.Header, f1.Payload))
	waitWritten(t, h, sent)
	writes := h.Stats().Writes
	want := broadcastTelemetry(t, h, `{"a":1}`)
	f2 := mkFrame(2, false, 100)
	h.Publish(f2)
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != string(want) {
		t.Fatalf("got %q, %v; want the telemetry first", msg, err)
	}
	if got := readVideo(t, ws); got != 2 {
		t.Fatalf("frame %d after the telemetry, want 2", got)
	}
	waitWritten(t, h, sent+framed(want, wire.AppendVideo(nil, f2.Header, f2.Payload)))
	if st := h.Stats(); st.Writes != writes+1 {
		t.Errorf("telemetry and frame took %d writes, want 1", st.Writes-writes)
	}
}

// Without frames, queued telemetry is not written while it is held, and
// goes out when the hold has passed, to the nanosecond of the fake clock;
// with no hold, at once. (net.Pipe and the hub's timers run in the bubble.)
func TestTelemetryHold(t *testing.T) {
	t.Parallel()
	for _, hold := range []time.Duration{150 * time.Millisecond, -1} {
		synctest.Test(t, func(t *testing.T) {
			h := New(Config{TelemetryHold: hold})
			defer h.Close()
			_, cli := runPiped(t, h, ClientConfig{KeyframeTimeout: time.Hour})
			f := mkFrame(1, true, 100)
			h.Publish(f)
			if msg, err := readServerMessage(cli); err != nil || msg[0] != wire.TypeVideo {
				t.Fatalf("hold %s: first message %v, %v", hold, msg, err)
			}
			start := time.Now()
			want := broadcastTelemetry(t, h, `{"b":2}`)
			if hold > 0 {
				// Nothing comes while the telemetry is held: a read that
				// ends 1ns later on the fake clock, which moves only once
				// everything else waits, finds nothing.
				_ = cli.SetReadDeadline(time.Now().Add(time.Nanosecond))
				if msg, err := readServerMessage(cli); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("hold %s: %q, %v before the hold ended, want nothing", hold, msg, err)
				}
				_ = cli.SetReadDeadline(testwait.Deadline(testwait.Default))
			}
			msg, err := readServerMessage(cli)
			if err != nil || string(msg) != string(want) {
				t.Fatalf("hold %s: got %q, %v", hold, msg, err)
			}
			if took, wantTook := time.Since(start), max(hold, 0); took != wantTook {
				t.Errorf("hold %s: telemetry took %s, want %s", hold, took, wantTook)
			}
		})
	}
}

// A client closed while its socket is full still gets whole frames and then
// the close frame: nothing lands inside a half-written frame.
func TestCloseAfterHandoverKeepsFraming(t *testing.T) {
	h, ws, c := directClient(t)
	h.Publish(mkFrame(1, true, 1000))
	deadline := testwait.Deadline(testwait.Default)
	for i := uint64(2); h.Stats().Handovers == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the socket never filled: %+v", h.Stats())
		}
		h.Publish(mkFrame(i, false, 150001)) // odd sizes: a short write splits a frame
	}
	c.Close(wire.CloseServiceRestart, "test")
	var last uint64
	for {
		_, msg, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if ce.Code != int(wire.CloseServiceRestart) {
				t.Fatalf("close code %d, want %d", ce.Code, wire.CloseServiceRestart)
			}
			break
		}
		if err != nil {
			t.Fatalf("after frame %d: %v", last, err)
		}
		hdr, _, err := wire.ParseVideo(msg)
		if err != nil || hdr.FrameSeq != last+1 {
			t.Fatalf("after frame %d: frame %d, %v", last, hdr.FrameSeq, err)
		}
		last = hdr.FrameSeq
	}
}

// Broadcast telemetry is sealed into one batch per round; a client keeps
// its own place in the last telemetryBacklog batches, and one further
// behind loses the oldest, counted.
func TestTelemetryBacklog(t *testing.T) {
	h := New(Config{TelemetryHold: time.Hour})
	defer h.Close()
	fresh := h.tlog.Load().head()
	var want []string
	for i := range telemetryBacklog + 8 {
		for j := range 3 { // three broadcasts between two rounds: one batch
			m := fmt.Sprintf("%d.%d;", i, j)
			h.Broadcast([]byte(m))
			want = append(want, m)
		}
		h.round()
	}
	next := fresh
	taken, bufs := h.takeTelemetry(&next, nil, 0, 1<<20)
	if len(bufs) != telemetryBacklog {
		t.Fatalf("took %d batches, want the last %d", len(bufs), telemetryBacklog)
	}
	var got strings.Builder
	for _, b := range bufs {
		got.Write(b)
	}
	if exp := strings.Join(want[8*3:], ""); got.String() != exp || taken != len(exp) {
		t.Fatalf("took %q (%d bytes), want %q", got.String(), taken, exp)
	}
	if d := h.Stats().TelemetryDropped; d != 8 {
		t.Errorf("%d batches counted as dropped, want 8", d)
	}
	if _, more := h.takeTelemetry(&next, nil, 0, 1<<20); len(more) != 0 {
		t.Errorf("%d more batches after taking all", len(more))
	}
}

// tail keeps exactly the bytes after the first n, whatever the buffers'
// sizes (empty ones included) and wherever n falls.
func TestTailAfterShortWrite(t *testing.T) {
	bufs := net.Buffers{[]byte("ab"), nil, []byte("cde"), []byte(""), []byte("f"), []byte("ghij")}
	all := string(bytes.Join(bufs, nil))
	for n := 0; n <= len(all); n++ {
		got := string(bytes.Join(tail(bufs, n), nil))
		if got != all[n:] {
			t.Errorf("tail after %d bytes: %q, want %q", n, got, all[n:])
		}
		for _, b := range tail(bufs, n) {
			if len(b) == 0 {
				t.Errorf("tail after %d bytes holds an empty buffer", n)
			}
		}
	}
}
