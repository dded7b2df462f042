package hub

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// Client defaults.
const (
	DefaultKeyframeTimeout = 5 * time.Second // SDR_IDR_TIMEOUT_MS
	DefaultWriteTimeout    = 10 * time.Second
	DefaultMaxMessage      = 64 << 10
	DefaultBatchBytes      = 1 << 20
	DefaultQueue           = 32
)

// ClientConfig sets up one client connection. Zero fields take the defaults.
type ClientConfig struct {
	// KeyframeTimeout closes a client that has waited this long for a
	// keyframe (close code 4000).
	KeyframeTimeout time.Duration
	// WriteTimeout bounds a batched write: a client that cannot take a
	// batch within WriteTimeout (at least half of it, as the deadline is
	// moved only once half used) is disconnected.
	WriteTimeout time.Duration
	// MaxMessage is the largest message a client may send (close code 1009
	// beyond it).
	MaxMessage int
	// BatchBytes bounds the frames written with one writev.
	BatchBytes int
	// Queue is the depth of the client's queue of telemetry and replies;
	// messages beyond it are dropped (telemetry is lossy).
	Queue int
	// OnCommand takes the body of each 0x04 message (the bytes after the
	// type byte) from the client's reading goroutine, and returns a
	// complete message to send to this client alone, or nil.
	OnCommand func(body []byte) (reply []byte)
	// OnSignal takes the body of each 0x03 signaling message (WebRTC), like
	// OnCommand; nil: 0x03 messages are ignored and counted.
	OnSignal func(body []byte) (reply []byte)
}

func (c *ClientConfig) fill() {
	if c.KeyframeTimeout <= 0 {
		c.KeyframeTimeout = DefaultKeyframeTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxMessage <= 0 {
		c.MaxMessage = DefaultMaxMessage
	}
	if c.BatchBytes <= 0 {
		c.BatchBytes = DefaultBatchBytes
	}
	if c.Queue <= 0 {
		c.Queue = DefaultQueue
	}
}

// Client is one WebSocket connection fed by a hub. Its writing goroutine is
// the only one that writes to the connection.
type Client struct {
	hub  *Hub
	conn net.Conn
	br   *bufio.Reader
	cfg  ClientConfig

	queue   chan []byte // complete WebSocket frames: telemetry, replies, pongs
	closeMu sync.Mutex
	closing []byte // the close frame to send, once set
	stop    chan struct{}
	stopped atomic.Bool

	deadline  time.Time     // the write deadline set on the connection
	wbuf      net.Buffers   // the batch being written with writev
	readEnded chan struct{} // closed when the reading goroutine ends
	readErr   error         // why it ended; read after readEnded
}

// NewClient wraps a connection whose WebSocket handshake is done. br, if not
// nil, is the buffered reader that already holds the connection's input
// (as returned by a hijack); it must hold no bytes beyond the handshake.
func (h *Hub) NewClient(conn net.Conn, br *bufio.Reader, cfg ClientConfig) *Client {
	cfg.fill()
	if br == nil {
		br = bufio.NewReaderSize(conn, 512)
	}
	return &Client{hub: h, conn: conn, br: br, cfg: cfg,
		queue: make(chan []byte, cfg.Queue), stop: make(chan struct{}), readEnded: make(chan struct{})}
}

// Send queues a complete message (0x02 telemetry or a reply) for this
// client. It never blocks: when the client's queue is full the message is
// dropped and counted, and Send returns false.
func (c *Client) Send(msg []byte) bool {
	return c.sendFrame(wire.AppendBinaryFrame(make([]byte, 0, len(msg)+10), msg))
}

// SendFrame queues a complete, already framed WebSocket message; the frame
// may be shared by many clients and must not be modified.
func (c *Client) SendFrame(f []byte) bool { return c.sendFrame(f) }

func (c *Client) sendFrame(f []byte) bool {
	select {
	case c.queue <- f:
		return true
	default:
		c.hub.telemDropped.Add(1)
		c.hub.m.TelemetryDropped.Inc()
		return false
	}
}

// Close asks the client to end with a close frame carrying code and reason.
// It returns at once; Run returns when the connection is closed. The first
// call wins.
func (c *Client) Close(code uint16, reason string) {
	c.closeMu.Lock()
	if c.closing == nil {
		c.closing = wire.CloseFrame(code, reason)
	}
	c.closeMu.Unlock()
	if c.stopped.CompareAndSwap(false, true) {
		close(c.stop)
	}
}

// CloseError is returned by Run when the server closed the connection with
// a close frame.
type CloseError struct {
	Code   uint16
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("closed with code %d: %s", e.Code, e.Reason)
}

// Run streams to the client until ctx ends, the client goes away or Close is
// called; then it closes the connection. On ctx's end it sends close code
// 1012 (service restart).
func (c *Client) Run(ctx context.Context) error {
	cur := c.hub.Join()
	defer c.hub.Leave()
	go func() {
		defer close(c.readEnded)
		c.readErr = c.read()
	}()

	err := c.write(ctx, &cur)

	c.closeMu.Lock()
	cf := c.closing
	c.closeMu.Unlock()
	if cf != nil {
		_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.conn.Write(cf)
	}
	_ = c.conn.Close()
	<-c.readEnded
	if err == nil && !errors.Is(c.readErr, wire.ErrClosed) {
		err = c.readErr
	}
	return err
}

// write is the client's only writer.
func (c *Client) write(ctx context.Context, cur *Cursor) error {
	var (
		batch   []*Entry
		bufs    net.Buffers
		keyWait *time.Timer
	)
	defer func() {
		if keyWait != nil {
			keyWait.Stop()
		}
	}()
	for {
		var wake <-chan struct{}
		bufs, batch, wake = c.gather(cur, bufs[:0], batch[:0], 0)
		if len(bufs) > 0 {
			if err := c.flush(bufs, batch, cur); err != nil {
				return err
			}
			continue
		}
		var timeout <-chan time.Time
		if waiting, since := cur.WaitingForKeyframe(); waiting {
			left := c.cfg.KeyframeTimeout - time.Since(since)
			if left <= 0 {
				c.hub.keyTimeouts.Add(1)
				c.hub.m.KeyframeTimeouts.Inc()
				reason := fmt.Sprintf("no keyframe within %s", c.cfg.KeyframeTimeout)
				c.Close(wire.CloseKeyframeTimeout, reason)
				return &CloseError{wire.CloseKeyframeTimeout, reason}
			}
			if keyWait == nil {
				keyWait = time.NewTimer(left)
			} else {
				keyWait.Reset(left)
			}
			timeout = keyWait.C
		}
		select {
		case <-wake:
		case <-timeout:
		case f := <-c.queue:
			// Whatever else is already waiting goes in the same write: at
			// a dense telemetry stream, one syscall per message was most of
			// the server's time.
			bufs = append(bufs[:0], f)
			bufs, batch, _ = c.gather(cur, bufs, batch[:0], len(f))
			if err := c.flush(bufs, batch, cur); err != nil {
				return err
			}
		case <-c.stop:
			return nil
		case <-c.readEnded:
			c.closeForRead(c.readErr)
			return nil
		case <-ctx.Done():
			c.Close(wire.CloseServiceRestart, "sdr_stream stopped or reloaded; reconnect")
			return nil
		}
	}
}

// gather appends to bufs what waits for the client, in the order the
// writer has always sent it: the queued telemetry and replies first, then the
// frames the hub has for the cursor (keyframe-first and lag skips as Next
// decides). taken is the size of what bufs already holds; gathering stops
// once BatchBytes are taken, and Next gets what is left of the budget (it
// takes at least one frame). It returns the channel Next returned, closed at
// the next frame, or nil when the budget was spent before Next.
func (c *Client) gather(cur *Cursor, bufs net.Buffers, batch []*Entry, taken int) (net.Buffers, []*Entry, <-chan struct{}) {
	for taken < c.cfg.BatchBytes {
		select {
		case f := <-c.queue:
			bufs = append(bufs, f)
			taken += len(f)
			continue
		default:
		}
		break
	}
	if taken >= c.cfg.BatchBytes {
		return bufs, batch, nil // the frames go in the next write
	}
	n := len(batch)
	batch, wake := c.hub.Next(cur, batch, c.cfg.BatchBytes-taken)
	for _, e := range batch[n:] {
		bufs = append(bufs, e.Wire)
	}
	return bufs, batch, wake
}

func (c *Client) flush(bufs net.Buffers, batch []*Entry, cur *Cursor) error {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	// Moving the deadline costs a timer update per write; move it only once
	// half of it is used, so a write always has between half and all of
	// WriteTimeout.
	now := time.Now()
	if c.deadline.Sub(now) < c.cfg.WriteTimeout/2 {
		c.deadline = now.Add(c.cfg.WriteTimeout)
		if err := c.conn.SetWriteDeadline(c.deadline); err != nil {
			return fmt.Errorf("setting write deadline: %w", err)
		}
	}
	var err error
	if len(bufs) == 1 {
		_, err = c.conn.Write(bufs[0]) // one write(2), no writev setup
	} else {
		c.wbuf = bufs // WriteTo consumes it; a field does not escape per call
		_, err = c.wbuf.WriteTo(c.conn)
		c.wbuf = nil
	}
	if err != nil {
		return fmt.Errorf("writing %d bytes to client: %w", n, err)
	}
	c.hub.writes.Add(1)
	if len(batch) > 0 {
		now = time.Now()
		for _, e := range batch {
			if cur.Live(e) {
				c.hub.m.Delivery.Observe(now.Sub(e.Arrived).Seconds())
			}
		}
		c.hub.framesOut.Add(uint64(len(batch)))
		c.hub.m.FramesOut.Add(float64(len(batch)))
	}
	c.hub.bytesOut.Add(uint64(n))
	c.hub.m.BytesOut.Add(float64(n))
	return nil
}

// closeForRead turns the end of the reading goroutine into the close frame
// the writer sends.
func (c *Client) closeForRead(err error) {
	var pe *wire.ProtocolError
	switch {
	case errors.As(err, &pe):
		c.Close(pe.Code, pe.Reason)
	case errors.Is(err, wire.ErrClosed):
		c.Close(wire.CloseNormal, "")
	}
}

// read is the client's reading goroutine; it ends when the connection is
// closed or the client breaks the protocol, and it never writes.
func (c *Client) read() error {
	r := wire.NewClientReader(c.br, c.cfg.MaxMessage)
	for {
		m, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		switch m.Opcode {
		case wire.OpClose:
			return wire.ErrClosed
		case wire.OpPing:
			c.sendFrame(wire.ControlFrame(wire.OpPong, m.Data))
		case wire.OpPong:
		case wire.OpBinary:
			c.message(m.Data)
		default:
			c.hub.ignored.Add(1)
			c.hub.m.MessagesIgnored.Inc()
		}
	}
}

func (c *Client) message(msg []byte) {
	if len(msg) > 0 && msg[0] == wire.TypeCommand && c.cfg.OnCommand != nil {
		if reply := c.cfg.OnCommand(msg[1:]); reply != nil {
			c.Send(reply)
		}
		return
	}
	if len(msg) > 0 && msg[0] == wire.TypeSignaling && c.cfg.OnSignal != nil {
		if reply := c.cfg.OnSignal(msg[1:]); reply != nil {
			c.Send(reply)
		}
		return
	}
	// Other types (0x03 without WebRTC configured) are unknown.
	c.hub.ignored.Add(1)
	c.hub.m.MessagesIgnored.Inc()
}
