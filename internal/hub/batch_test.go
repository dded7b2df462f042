package hub

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// readServerMessage reads one unmasked binary WebSocket frame from r.
func readServerMessage(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != 0x82 {
		return nil, fmt.Errorf("frame starts with %#x, want 0x82 (final binary)", hdr[0])
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	msg := make([]byte, n)
	_, err := io.ReadFull(r, msg)
	return msg, err
}

// runPiped runs a client of h over net.Pipe and returns the test's end of
// the pipe; the client ends with the test.
func runPiped(t *testing.T, h *Hub, cfg ClientConfig) (*Client, net.Conn) {
	t.Helper()
	srv, cli := net.Pipe()
	c := h.NewClient(srv, nil, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		_ = cli.Close()
		cancel()
		<-done
	})
	// With one processor (TestWriterBatchesWhatWaits), the client's
	// goroutines run while the test waits here, until the writer has found
	// nothing to send and waits in its select.
	testwait.For(t, "the client to join", func() bool { return h.Stats().Clients == 1 })
	_ = cli.SetReadDeadline(testwait.Deadline(testwait.Default))
	return c, cli
}

// framed is the size of msg framed as one unmasked binary WebSocket
// message: what BytesOut counts for it once its write has returned.
func framed(msgs ...[]byte) uint64 {
	var n uint64
	for _, m := range msgs {
		n += uint64(len(wire.AppendBinaryFrame(nil, m)))
	}
	return n
}

// waitWritten waits until the writes of n bytes have returned: a write is
// counted once it returns, after the reader has the bytes.
func waitWritten(t *testing.T, h *Hub, n uint64) {
	t.Helper()
	testwait.For(t, fmt.Sprintf("%d bytes written", n), func() bool { return h.Stats().BytesOut >= n })
}

// A writer woken by one queued message sends everything else that waits
// (queued telemetry, then the hub's frames) in the same write, in order.
// With one processor the writer cannot run before the test has queued
// everything and blocks reading.
func TestWriterBatchesWhatWaits(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	h := New(Config{})
	defer h.Close()
	c, cli := runPiped(t, h, ClientConfig{KeyframeTimeout: time.Minute})

	const nTelem = 25
	var want [][]byte
	for i := range nTelem {
		msg, err := wire.Telemetry("telemetry.test", fmt.Appendf(nil, `{"i":%d}`, i))
		if err != nil {
			t.Fatal(err)
		}
		if !c.Send(msg) {
			t.Fatalf("message %d dropped", i)
		}
		want = append(want, msg)
	}
	for i := range 4 {
		f := mkFrame(uint64(i+1), i == 0, 1000)
		h.Publish(f)
		want = append(want, wire.AppendVideo(nil, f.Header, f.Payload))
	}
	for i, w := range want {
		got, err := readServerMessage(cli)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(got) != string(w) {
			t.Fatalf("message %d: got % x..., want % x...", i, got[:min(len(got), 12)], w[:min(len(w), 12)])
		}
	}
	waitWritten(t, h, framed(want...))
	// One write, or two if the scheduler preempted the test once; a write
	// per message, or the old cap of 16 queued messages per write, is 3 or
	// more.
	if st := h.Stats(); st.Writes > 2 {
		t.Errorf("%d messages took %d writes, want at most 2", len(want), st.Writes)
	}
}

// BatchBytes bounds a write: with a budget of one byte each message goes
// alone, and nothing is lost or reordered.
func TestWriterBatchBudget(t *testing.T) {
	h := New(Config{})
	defer h.Close()
	c, cli := runPiped(t, h, ClientConfig{KeyframeTimeout: time.Minute, BatchBytes: 1})
	const n = 10
	var sent []byte
	for i := range n {
		msg, _ := wire.Telemetry("telemetry.test", fmt.Appendf(nil, `{"i":%d}`, i))
		c.Send(msg)
		sent = append(sent, wire.AppendBinaryFrame(nil, msg)...)
	}
	for i := range 3 {
		f := mkFrame(uint64(i+1), i == 0, 1000)
		h.Publish(f)
		sent = append(sent, wire.AppendBinaryFrame(nil, wire.AppendVideo(nil, f.Header, f.Payload))...)
	}
	for i := range n + 3 {
		got, err := readServerMessage(cli)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		wantType := wire.TypeTelemetry
		if i >= n {
			wantType = wire.TypeVideo
		}
		if got[0] != wantType {
			t.Fatalf("message %d has type %#x, want %#x", i, got[0], wantType)
		}
	}
	waitWritten(t, h, uint64(len(sent)))
	if st := h.Stats(); st.Writes != n+3 {
		t.Errorf("%d messages took %d writes with a 1-byte budget, want one each", n+3, st.Writes)
	}
}
