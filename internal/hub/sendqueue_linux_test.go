package hub

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// notSentLowat reads TCP_NOTSENT_LOWAT of a TCP connection.
func notSentLowat(t *testing.T, conn net.Conn) int {
	t.Helper()
	rc, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// SendQueue becomes the socket's TCP_NOTSENT_LOWAT, for a plain TCP
// connection and for the one under a TLS connection; negative leaves the
// kernel's default.
func TestSendQueueSetsNotSentLowat(t *testing.T) {
	t.Parallel()
	h := New(Config{})
	defer h.Close()
	fresh, _ := tcpPair(t)
	kernel := notSentLowat(t, fresh)
	for _, tc := range []struct {
		name      string
		sendQueue int
		tls       bool
		want      int
	}{
		{"default", 0, false, DefaultSendQueue},
		{"set", 16 << 10, false, 16 << 10},
		{"under tls", 16 << 10, true, 16 << 10},
		{"off", -1, false, kernel},
	} {
		srv, _ := tcpPair(t)
		var conn net.Conn = srv
		if tc.tls {
			conn = tls.Server(srv, &tls.Config{})
		}
		h.NewClient(conn, nil, ClientConfig{SendQueue: tc.sendQueue})
		if got := notSentLowat(t, srv); got != tc.want {
			t.Errorf("%s: TCP_NOTSENT_LOWAT %d, want %d", tc.name, got, tc.want)
		}
	}
}

// The send round writes everything that waits for a client, budget by
// budget, while its socket takes it: with telemetry that fills the budget
// and a frame, the round writes the telemetry and then the frame (it left
// the frame to the next frame's round).
func TestSendRoundWritesPastTheBudget(t *testing.T) {
	t.Parallel()
	h := New(Config{TelemetryHold: time.Minute})
	defer h.Close()
	srv, cli := tcpPair(t)
	c := h.NewClient(srv, nil, ClientConfig{KeyframeTimeout: time.Minute, PingInterval: -1, SendQueue: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { _ = cli.Close(); cancel(); <-done }()
	testwait.For(t, "the client to join the send round", func() bool {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return !c.slow && len(h.members.Load()) == 1
	})
	telem, err := wire.Telemetry("telemetry.test", []byte(`{"i":1}`))
	if err != nil {
		t.Fatal(err)
	}
	h.Broadcast(wire.AppendBinaryFrame(nil, telem)) // held for the next frame
	h.Publish(mkFrame(1, true, 1000))
	_ = cli.SetReadDeadline(testwait.Deadline(testwait.Default))
	for _, want := range []byte{wire.TypeTelemetry, wire.TypeVideo} {
		msg, err := readServerMessage(cli)
		if err != nil {
			t.Fatalf("waiting for a message of type %#x: %v", want, err)
		}
		if msg[0] != want {
			t.Fatalf("message of type %#x, want %#x", msg[0], want)
		}
	}
	if st := h.Stats(); st.Handovers != 0 {
		t.Errorf("%d handovers: the messages went through the client's goroutine, not the send round", st.Handovers)
	}
}
