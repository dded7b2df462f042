package hub

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// serve starts an HTTP server whose handler streams h to every WebSocket
// client with cfg, and returns its ws:// URL. Client goroutines end with the
// test.
func serve(t *testing.T, h *Hub, cfg ClientConfig) (string, context.CancelFunc, *sync.WaitGroup) {
	t.Helper()
	return serveWith(t, h, cfg, nil)
}

// serveWith is serve with onConn, when not nil, called on each upgraded
// connection before its client runs.
func serveWith(t *testing.T, h *Hub, cfg ClientConfig, onConn func(net.Conn)) (string, context.CancelFunc, *sync.WaitGroup) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := Upgrade(w, r)
		if err != nil {
			return
		}
		wg.Add(1)
		defer wg.Done()
		if onConn != nil {
			onConn(conn)
		}
		_ = h.NewClient(conn, nil, cfg).Run(ctx)
	}))
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http"), cancel, &wg
}

func dial(t *testing.T, url string, hdr http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		t.Fatalf("dialing %s: %v (%v)", url, err, resp)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(testwait.Deadline(20 * time.Second))
	return c
}

func closeCode(t *testing.T, c *websocket.Conn) (int, string) {
	t.Helper()
	for {
		_, _, err := c.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Text
		}
		if err != nil {
			t.Fatalf("connection ended without a close frame: %v", err)
		}
	}
}

func TestClientReceivesVideoByteIdentical(t *testing.T) {
	t.Parallel()
	h := New(Config{})
	defer h.Close()
	url, _, _ := serve(t, h, ClientConfig{})
	first := mkFrame(1, true, 100000)
	first.Payload[0], first.Payload[99999] = 0xAB, 0xCD
	h.Publish(first)
	h.Publish(mkFrame(2, false, 15000))
	c := dial(t, url, nil)
	for i, f := range []struct {
		seq uint64
		n   int
	}{{1, 100000}, {2, 15000}} {
		typ, msg, err := c.ReadMessage()
		if err != nil || typ != websocket.BinaryMessage {
			t.Fatalf("message %d: type %d, %v", i, typ, err)
		}
		hdr, payload, err := wire.ParseVideo(msg)
		if err != nil || hdr.FrameSeq != f.seq || len(payload) != f.n {
			t.Fatalf("message %d: seq %d, %d bytes, %v", i, hdr.FrameSeq, len(payload), err)
		}
		if i == 0 && !bytes.Equal(msg, wire.AppendVideo(nil, first.Header, first.Payload)) {
			t.Fatal("keyframe message differs from type byte + header + payload")
		}
	}
	// Live frames follow.
	h.Publish(mkFrame(3, false, 10))
	if _, msg, err := c.ReadMessage(); err != nil || msg[0] != wire.TypeVideo {
		t.Fatalf("live frame: %x %v", msg[:1], err)
	}
}

// A client that waits for a keyframe while deltas flow past it is closed
// with 4000 once they have flowed for longer than the timeout. The deltas
// keep coming until it is (a pacing writer, as a simulator's); each is
// followed by a send round, which closes the client over its own socket.
func TestClientKeyframeTimeoutCloses(t *testing.T) {
	t.Parallel()
	h := New(Config{})
	defer h.Close()
	url, _, _ := serve(t, h, ClientConfig{KeyframeTimeout: 300 * time.Millisecond})
	c := dial(t, url, nil)
	testwait.For(t, "the client to join", func() bool { return h.Stats().Clients == 1 })
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for seq := uint64(1); ; seq++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			h.Publish(mkFrame(seq, false, 10))
		}
	}()
	code, reason := closeCode(t, c)
	if code != int(wire.CloseKeyframeTimeout) || !strings.Contains(reason, "keyframe") {
		t.Fatalf("close %d %q, want 4000 about the keyframe", code, reason)
	}
	if h.Stats().KeyframeTimeouts != 1 {
		t.Errorf("keyframe timeouts %d, want 1", h.Stats().KeyframeTimeouts)
	}
}

// pipeClient runs a client of h over net.Pipe inside a synctest bubble and
// returns the test's end and the channel Run's result comes on.
func pipeClient(h *Hub, cfg ClientConfig) (net.Conn, <-chan error, context.CancelFunc) {
	srv, cli := net.Pipe()
	c := h.NewClient(srv, nil, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return cli, done, cancel
}

// readClose reads one server frame from r and returns its close code, or
// fails when it is not a close frame.
func readClose(t *testing.T, r io.Reader) uint16 {
	t.Helper()
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatalf("reading the close frame: %v", err)
	}
	if hdr[0] != 0x80|wire.OpClose || hdr[1] < 2 || hdr[1] > 125 {
		t.Fatalf("frame header % x, want a close frame", hdr)
	}
	body := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.Uint16(body)
}

// With no video at all a client waiting for its keyframe is never closed:
// the old transport-server checked the IDR timeout only when a frame came,
// and the operator's estop must work while the simulator starts. The
// client outlives its timeout many times over, its command is taken and
// answered.
func TestClientWithoutVideoStaysAndCommands(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := New(Config{})
		defer h.Close()
		cmds := make(chan string, 1)
		cli, done, cancel := pipeClient(h, ClientConfig{
			KeyframeTimeout: 300 * time.Millisecond,
			// The subject is the keyframe timeout: this peer reads nothing
			// for a minute, which pings would rightly end.
			PingInterval: -1,
			OnCommand: func(body []byte) []byte {
				cmds <- string(body)
				r, _ := wire.Telemetry("telemetry.command.ack", []byte(`{"status":"seen"}`))
				return r
			},
		})
		defer cli.Close()
		elapse(time.Minute) // 200 keyframe timeouts without a frame
		select {
		case err := <-done:
			t.Fatalf("client without video ended after a minute: %v", err)
		default:
		}
		cmd := `{"action":"estop","cmd_seq":1}`
		go func() {
			_, _ = cli.Write(wire.AppendClientFrame(nil, wire.OpBinary, true, [4]byte{7, 1, 2, 3}, append([]byte{wire.TypeCommand}, cmd...)))
		}()
		msg, err := readServerMessage(cli)
		if err != nil {
			t.Fatal(err)
		}
		if subj, _, err := wire.ParseTelemetry(msg); err != nil || subj != "telemetry.command.ack" {
			t.Fatalf("reply %q: %v", msg, err)
		}
		if got := <-cmds; got != cmd {
			t.Fatalf("command %q, want %q", got, cmd)
		}
		if n := h.Stats().KeyframeTimeouts; n != 0 {
			t.Fatalf("%d keyframe timeouts without video", n)
		}
		cancel()
		if code := readClose(t, cli); code != wire.CloseServiceRestart {
			t.Fatalf("close %d on stop, want 1012", code)
		}
		<-done
	})
}

// The timeout counts video time only: a client that waited a long time
// without frames is not closed by the first delta that comes, but once
// deltas have flowed past it for the timeout, at the first delta after it.
func TestClientKeyframeTimeoutCountsFromTheFirstFrame(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const timeout, period = 300 * time.Millisecond, 40 * time.Millisecond
		h := New(Config{})
		defer h.Close()
		cli, done, cancel := pipeClient(h, ClientConfig{KeyframeTimeout: timeout})
		defer cancel()
		defer cli.Close()
		elapse(10 * timeout) // no video: the simulator starts
		first := time.Now()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for seq := uint64(1); ; seq++ {
				h.Publish(mkFrame(seq, false, 10))
				select {
				case <-stop:
					return
				case <-time.After(period):
				}
			}
		}()
		code := readClose(t, cli)
		closed := time.Since(first)
		if code != wire.CloseKeyframeTimeout {
			t.Fatalf("close %d, want 4000", code)
		}
		// Closed by the first delta later than timeout after the first one.
		if want := (timeout/period + 1) * period; closed != want {
			t.Fatalf("closed %v after the first delta, want %v (the first delta past the %v timeout)", closed, want, timeout)
		}
		if err := <-done; err == nil || !strings.Contains(err.Error(), "4000") {
			t.Fatalf("Run returned %v, want the 4000 close", err)
		}
	})
}

func TestClientHostileInput(t *testing.T) {
	t.Parallel()
	h := New(Config{})
	defer h.Close()
	var cmds [][]byte
	var mu sync.Mutex
	url, _, _ := serve(t, h, ClientConfig{MaxMessage: 1024, OnCommand: func(body []byte) []byte {
		mu.Lock()
		cmds = append(cmds, append([]byte(nil), body...))
		mu.Unlock()
		r, _ := wire.Telemetry("telemetry.command.ack", []byte(`{"status":"x"}`))
		return r
	}})
	c := dial(t, url, nil)
	pong := make(chan string, 1)
	c.SetPongHandler(func(s string) error { pong <- s; return nil })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.WriteMessage(websocket.BinaryMessage, []byte{0x09, 1, 2}))     // unknown type
	must(c.WriteMessage(websocket.BinaryMessage, []byte{0x03, '{', '}'})) // signaling: not served here
	must(c.WriteMessage(websocket.TextMessage, []byte("hello")))
	must(c.WriteMessage(websocket.BinaryMessage, nil))
	must(c.WriteMessage(websocket.BinaryMessage, append([]byte{wire.TypeCommand}, `{"action":"pause","cmd_seq":1}`...)))
	must(c.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(time.Second)))
	_, msg, err := c.ReadMessage()
	must(err)
	if subj, _, err := wire.ParseTelemetry(msg); err != nil || subj != "telemetry.command.ack" {
		t.Fatalf("reply %q: %v", msg, err)
	}
	// The pong handler runs inside ReadMessage; an oversized message then ends it.
	must(c.WriteMessage(websocket.BinaryMessage, make([]byte, 2000)))
	code, _ := closeCode(t, c)
	if code != websocket.CloseMessageTooBig {
		t.Fatalf("oversized message: close %d, want 1009", code)
	}
	select {
	case p := <-pong:
		if p != "p1" {
			t.Errorf("pong %q", p)
		}
	default:
		t.Error("no pong for the ping")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(cmds) != 1 || string(cmds[0]) != `{"action":"pause","cmd_seq":1}` {
		t.Errorf("commands %q", cmds)
	}
	if n := h.Stats().MessagesIgnored; n != 4 {
		t.Errorf("ignored %d messages, want 4", n)
	}
}

func TestClientClosedOnStop(t *testing.T) {
	t.Parallel()
	h := New(Config{})
	defer h.Close()
	url, cancel, wg := serve(t, h, ClientConfig{})
	h.Publish(mkFrame(1, true, 10))
	c := dial(t, url, nil)
	if _, _, err := c.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if code, _ := closeCode(t, c); code != int(wire.CloseServiceRestart) {
		t.Fatalf("close %d, want 1012", code)
	}
	wg.Wait()
	if n := h.Stats().Clients; n != 0 {
		t.Errorf("%d clients after stop", n)
	}
}

func TestSlowClientSkipsWithoutSlowingOthers(t *testing.T) {
	t.Parallel()
	h := New(Config{Capacity: 64})
	defer h.Close()
	url, _, _ := serve(t, h, ClientConfig{WriteTimeout: 30 * time.Second})
	// The slow client: a raw TCP connection that never reads after the
	// handshake, so the server's socket buffers fill.
	slow := dial(t, url, nil)
	fast := dial(t, url, nil)
	// A pacing writer, a frame every 2 ms (the subject: a live stream), of
	// 200 KB until the fast client has had 300 frames, then of 20 KB.
	var small atomic.Bool
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			size := 200000
			if small.Load() {
				size = 20000
			}
			h.Publish(mkFrame(uint64(i+1), i%30 == 0, size))
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	// read reads c while more says so: frames in order, and the one after
	// a jump (a skip of frames the client was too late for) a keyframe. It
	// returns how many jumps there were.
	read := func(c *websocket.Conn, who string, more func(last uint64, gaps int) bool) (gaps int) {
		var last uint64
		for more(last, gaps) {
			_ = c.SetReadDeadline(testwait.Deadline(30 * time.Second))
			_, msg, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("%s client after frame %d: %v", who, last, err)
			}
			hdr, _, err := wire.ParseVideo(msg)
			if err != nil {
				t.Fatal(err)
			}
			if hdr.FrameSeq <= last {
				t.Fatalf("%s client: frame %d after %d", who, hdr.FrameSeq, last)
			}
			if hdr.FrameSeq != last+1 && last != 0 {
				gaps++
				if !hdr.Keyframe() {
					t.Fatalf("%s client resumed at delta %d after %d", who, hdr.FrameSeq, last)
				}
			}
			last = hdr.FrameSeq
		}
		return gaps
	}
	// The fast client goes on while the slow one reads nothing. (It may
	// skip too if a loaded machine leaves it more than 64 frames behind:
	// how fast it reads is not what is tested, that the slow client does
	// not hold it back is.)
	if gaps := read(fast, "fast", func(last uint64, _ int) bool { return last < 300 }); gaps > 0 {
		t.Logf("the fast client skipped %d times (a loaded machine)", gaps)
	}
	// Now the slow client reads while frames keep coming: after what its
	// socket buffers held it must jump ahead, and land on a keyframe.
	small.Store(true)
	gaps := read(slow, "slow", func(last uint64, gaps int) bool { return gaps == 0 || last <= 300 })
	if h.Stats().LagSkips == 0 {
		t.Errorf("slow client never skipped: %d gaps, %+v", gaps, h.Stats())
	}
}

func TestStuckClientDisconnectedAtWriteTimeout(t *testing.T) {
	t.Parallel()
	h := New(Config{})
	defer h.Close()
	url, _, _ := serve(t, h, ClientConfig{WriteTimeout: 400 * time.Millisecond})
	stuck := dial(t, url, nil) // never reads
	_ = stuck
	testwait.For(t, "the client to join", func() bool { return h.Stats().Clients == 1 })
	// A pacing writer: a frame every 5 ms until the stuck client is gone.
	deadline := testwait.Deadline(testwait.Default)
	for i := 0; h.Stats().Clients != 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("stuck client still connected after %d frames: %+v", i, h.Stats())
		}
		h.Publish(mkFrame(uint64(i+1), i%10 == 0, 100000))
		time.Sleep(5 * time.Millisecond) // the subject: the pacing writer
	}
}

// A close frame with a code no peer may send (999, 1005, 2999) or a reason
// that is not UTF-8 is a protocol error: answered with 1002 (RFC 6455 7.4),
// not with the 1000 of a normal close, which a valid close still gets.
func TestClientInvalidCloseAnswered1002(t *testing.T) {
	t.Parallel()
	h := New(Config{})
	defer h.Close()
	url, _, _ := serve(t, h, ClientConfig{})
	for _, tc := range []struct {
		name    string
		payload []byte
		want    int
	}{
		{"code 999", websocket.FormatCloseMessage(999, ""), websocket.CloseProtocolError},
		{"code 1005", []byte{0x03, 0xed}, websocket.CloseProtocolError},
		{"code 2999", websocket.FormatCloseMessage(2999, "x"), websocket.CloseProtocolError},
		{"reason not UTF-8", append(websocket.FormatCloseMessage(websocket.CloseNormalClosure, "ok"), 0xff), websocket.CloseProtocolError},
		{"valid", websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye"), websocket.CloseNormalClosure},
	} {
		c := dial(t, url, nil)
		if err := c.WriteControl(websocket.CloseMessage, tc.payload, testwait.Deadline(10*time.Second)); err != nil {
			t.Fatal(err)
		}
		if code, reason := closeCode(t, c); code != tc.want {
			t.Errorf("%s: answered %d %q, want %d", tc.name, code, reason, tc.want)
		}
	}
}
