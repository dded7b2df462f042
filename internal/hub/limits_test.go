package hub

import (
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// flood writes frames to c until a write fails (the server closed it).
func flood(c net.Conn, first []byte, next []byte) {
	if _, err := c.Write(first); err != nil {
		return
	}
	for {
		if _, err := c.Write(next); err != nil {
			return
		}
	}
}

// serverFrame reads one server frame: opcode and payload.
func serverFrame(r io.Reader) (byte, []byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(hdr[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint64(b[:]))
	}
	body := make([]byte, n)
	_, err := io.ReadFull(r, body)
	return hdr[0] & 0x0f, body, err
}

// pipeCloseCode reads server frames until a close frame and returns its
// code; the read deadline detects a hang.
func pipeCloseCode(t *testing.T, c net.Conn) uint16 {
	t.Helper()
	_ = c.SetReadDeadline(testwait.Deadline(testwait.Default))
	for {
		op, body, err := serverFrame(c)
		if err != nil {
			t.Fatalf("reading until the close frame: %v", err)
		}
		if op == wire.OpClose {
			if len(body) < 2 {
				t.Fatalf("close frame without a code")
			}
			return binary.BigEndian.Uint16(body)
		}
	}
}

// An endless message of empty continuation frames (never FIN) closes the
// client with 1009 at the fragment limit, instead of holding a core.
func TestClientEndlessContinuationClosed(t *testing.T) {
	t.Parallel()
	h := New(Config{})
	defer h.Close()
	cli, done, cancel := pipeClient(h, ClientConfig{Limits: wire.FrameLimits{MaxFragments: 64}})
	defer cancel()
	defer cli.Close()
	key := [4]byte{9, 8, 7, 6}
	go flood(cli, wire.AppendClientFrame(nil, wire.OpBinary, false, key, nil),
		wire.AppendClientFrame(nil, wire.OpContinuation, false, key, nil))
	if code := pipeCloseCode(t, cli); code != wire.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	testwait.Recv(t, done, "the client to end")
	if st := h.Stats(); st.LimitCloses != 1 {
		t.Fatalf("limit closes %d, want 1", st.LimitCloses)
	}
}

// Frames faster than the frame limit (here pongs, which need no answer)
// close the client with 1008.
func TestClientFrameFloodClosed(t *testing.T) {
	t.Parallel()
	h := New(Config{})
	defer h.Close()
	cli, done, cancel := pipeClient(h, ClientConfig{Limits: wire.FrameLimits{Rate: 10, Burst: 100}})
	defer cancel()
	defer cli.Close()
	pong := wire.AppendClientFrame(nil, wire.OpPong, true, [4]byte{1, 2, 3, 4}, nil)
	go flood(cli, pong, pong)
	if code := pipeCloseCode(t, cli); code != wire.ClosePolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
	testwait.Recv(t, done, "the client to end")
}

// pingPeer reads the server's frames from c until it is closed, answering
// each ping with a pong when answer is set; it returns the close code (0
// when the connection ended without one).
func pingPeer(c net.Conn, answer bool, pings chan<- struct{}) uint16 {
	for {
		op, body, err := serverFrame(c)
		if err != nil {
			return 0
		}
		switch op {
		case wire.OpPing:
			select {
			case pings <- struct{}{}:
			default:
			}
			if answer {
				if _, err := c.Write(wire.AppendClientFrame(nil, wire.OpPong, true, [4]byte{5, 5, 5, 5}, body)); err != nil {
					return 0
				}
			}
		case wire.OpClose:
			return binary.BigEndian.Uint16(body)
		}
	}
}

// A peer that reads but never answers a ping is closed (1001) in the
// second interval after its first ping; one that answers stays.
func TestClientPingTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := New(Config{})
		defer h.Close()
		const every = time.Second
		dead, deadDone, cancelDead := pipeClient(h, ClientConfig{PingInterval: every})
		defer cancelDead()
		live, liveDone, cancelLive := pipeClient(h, ClientConfig{PingInterval: every})
		defer cancelLive()
		deadCode, liveCode := make(chan uint16, 1), make(chan uint16, 1)
		livePings := make(chan struct{}, 100)
		start := time.Now()
		go func() { deadCode <- pingPeer(dead, false, make(chan struct{}, 100)) }()
		go func() { liveCode <- pingPeer(live, true, livePings) }()

		var code uint16
		select {
		case code = <-deadCode:
		case <-time.After(time.Hour): // synthetic time: detects a hang at once
			t.Fatal("silent peer never closed")
		}
		if code != wire.CloseGoingAway {
			t.Fatalf("silent peer closed with %d, want 1001", code)
		}
		if took := time.Since(start); took != 2*every {
			t.Fatalf("silent peer closed after %s, want 2 intervals (a ping at 1s unanswered at 2s)", took)
		}
		<-deadDone
		time.Sleep(time.Minute)
		synctest.Wait()
		select {
		case err := <-liveDone:
			t.Fatalf("answering peer ended: %v", err)
		default:
		}
		if n := len(livePings); n < 50 {
			t.Fatalf("answering peer got %d pings in a minute, want one a second", n)
		}
		if st := h.Stats(); st.PingTimeouts != 1 {
			t.Fatalf("ping timeouts %d, want 1", st.PingTimeouts)
		}
		live.Close()
		<-liveCode
		<-liveDone
	})
}

// Pings go out whole between the video frames that the send round writes
// on its own (writev) and hands over half written to the client's
// goroutine when the socket is full: a peer that reads slowly parses every
// frame and sees the pings.
func TestClientPingsBetweenVideo(t *testing.T) {
	t.Parallel()
	h := New(Config{Capacity: 16})
	defer h.Close()
	// The interval leaves the peer time to read what is queued ahead of
	// each ping before its pong is due.
	url, _, _ := serveWith(t, h, ClientConfig{PingInterval: 250 * time.Millisecond},
		func(c net.Conn) { _ = c.(*net.TCPConn).SetWriteBuffer(32 << 10) })
	c := dial(t, url, nil)
	var pings atomic.Int64
	c.SetPingHandler(func(data string) error {
		pings.Add(1)
		return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	stop := make(chan struct{})
	published := make(chan struct{})
	go func() {
		defer close(published)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for seq := uint64(1); ; seq++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			h.Publish(mkFrame(seq, seq%10 == 1, 20_000+int(seq%7)*1000))
		}
	}()
	defer func() { close(stop); <-published }()
	videos := 0
	for pings.Load() < 8 || videos < 300 || h.Stats().DirectWrites == 0 || h.Stats().Handovers == 0 {
		_ = c.SetReadDeadline(testwait.Deadline(testwait.Default))
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("after %d pings and %d video messages: %v", pings.Load(), videos, err)
		}
		if len(msg) == 0 || msg[0] != wire.TypeVideo {
			t.Fatalf("message of type %v, want video", msg[:min(1, len(msg))])
		}
		videos++
		if videos%20 == 0 {
			time.Sleep(5 * time.Millisecond) // the subject: a reader that lets the socket fill
		}
	}
	if st := h.Stats(); st.PingTimeouts != 0 {
		t.Fatalf("a peer that answers pings was timed out: %+v", st)
	}
}
