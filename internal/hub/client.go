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
	"syscall"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// Client defaults.
const (
	DefaultKeyframeTimeout = 5 * time.Second // SDR_IDR_TIMEOUT_MS
	DefaultWriteTimeout    = 10 * time.Second
	DefaultMaxMessage      = 64 << 10
	DefaultBatchBytes      = 1 << 20
	DefaultSendQueue       = 64 << 10
	DefaultQueue           = 32
	DefaultPingInterval    = 20 * time.Second
)

// ClientConfig sets up one client connection. Zero fields take the defaults.
type ClientConfig struct {
	// KeyframeTimeout closes a client (close code 4000) that waits for a
	// keyframe while frames flow past it for this long (Cursor's
	// KeyframeOverdue). With no frames at all the client stays.
	KeyframeTimeout time.Duration
	// WriteTimeout bounds a blocking write: a client that cannot take a
	// batch within WriteTimeout (at least half of it, as the deadline is
	// moved only once half used) is disconnected.
	WriteTimeout time.Duration
	// MaxMessage is the largest message a client may send (close code 1009
	// beyond it).
	MaxMessage int
	// BatchBytes bounds the frames written with one writev; it is never
	// more than SendQueue.
	BatchBytes int
	// SendQueue bounds the video a client has below the hub, in bytes: on
	// a TCP socket on Linux the kernel keeps at most about SendQueue bytes
	// unsent for it (TCP_NOTSENT_LOWAT; the socket takes more only once
	// less than that waits, and a write may add one segment buffer), and
	// one write takes at most SendQueue bytes of frames from the hub (at
	// least one frame). A client whose network is slower than the stream
	// then falls behind in the hub, where it skips to a keyframe
	// (Config.Capacity), instead of in its socket's send buffer, which
	// Linux grows to megabytes (net.ipv4.tcp_wmem) and from which nothing
	// is skipped. Negative: no limit (the kernel's buffers, BatchBytes).
	SendQueue int
	// Queue is the depth of the client's queue of replies and pongs
	// (Send); messages beyond it are dropped.
	Queue int
	// Limits bound the frames the client sends: fragments per message and
	// frames per second (wire.FrameLimits; closes with 1009 or 1008).
	Limits wire.FrameLimits
	// PingInterval is how often the client is sent a ping; a client that
	// has sent nothing (no pong, no message) since the previous ping is
	// closed (code 1001), so that a dead peer goes within about two
	// intervals even while video fills its socket buffer. Negative: no
	// pings.
	PingInterval time.Duration
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
	if c.SendQueue == 0 {
		c.SendQueue = DefaultSendQueue
	}
	if c.SendQueue > 0 {
		c.BatchBytes = min(c.BatchBytes, c.SendQueue)
	}
	if c.Queue <= 0 {
		c.Queue = DefaultQueue
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
}

// Client is one WebSocket connection fed by a hub.
//
// Two writers take turns, under wmu: the hub's send round, which writes
// what waits for the client with one non-blocking writev on the socket
// (no goroutine of the client wakes), and the client's own goroutine,
// which takes over with blocking writes and a deadline when the socket is
// full (a partial write, the rest of which it finishes), for replies, and
// for connections without a socket of their own (TLS).
//
// The fields the send round reads for every client in every round come
// first, in one run of memory (cfg's first fields, wmu, the cursor's
// position): the round visits hundreds of clients between two visits to
// this one, and each cache line of the client it touches is a miss.
type Client struct {
	cfg ClientConfig

	// Guarded by wmu, and read by the send round.
	wmu    sync.Mutex
	gone   bool   // Run is ending: nothing more is written
	slow   bool   // the goroutine writes (set until it has caught up)
	tnext  uint64 // the next broadcast telemetry batch to send
	hub    *Hub
	raw    syscall.RawConn // nil: every write goes through the client's goroutine
	direct directWriter
	cur    Cursor // its position first, the rest only while it waits for a keyframe

	// The rest guarded by wmu.
	rest      net.Buffers // the unwritten tail of a partial direct write
	restBatch []*Entry    // the frames that tail completes
	deadline  time.Time   // the write deadline set on the connection
	wbuf      net.Buffers // the batch being written with writev
	vectored  bool        // net.Buffers go to conn with writev (a bare socket)

	conn net.Conn
	br   *bufio.Reader
	// guard watches what the client sends (wire.FrameLimits) and when.
	guard *wire.FrameGuard

	queue   chan []byte   // replies and pongs: written at once by the goroutine
	kick    chan struct{} // the send round hands a write to the goroutine
	closeMu sync.Mutex
	closing []byte // the close frame to send, once set
	stop    chan struct{}
	stopped atomic.Bool

	readEnded chan struct{} // closed when the reading goroutine ends
	readErr   error         // why it ended; read after readEnded
}

// NewClient wraps a connection whose WebSocket handshake is done. br, if not
// nil, is the buffered reader that already holds the connection's input
// (as returned by a hijack); it must hold no bytes beyond the handshake.
func (h *Hub) NewClient(conn net.Conn, br *bufio.Reader, cfg ClientConfig) *Client {
	cfg.fill()
	var in io.Reader = conn
	if br != nil {
		in = br
	}
	guard := wire.NewFrameGuard(cfg.Limits)
	br = bufio.NewReaderSize(wire.GuardReader(in, guard), 512)
	c := &Client{hub: h, conn: conn, br: br, cfg: cfg, guard: guard,
		queue: make(chan []byte, cfg.Queue),
		kick:  make(chan struct{}, 1), stop: make(chan struct{}), readEnded: make(chan struct{})}
	if sc, ok := conn.(syscall.Conn); ok && directSupported {
		if rc, err := sc.SyscallConn(); err == nil {
			c.raw = rc
		}
	}
	c.slow = c.raw == nil
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
		c.vectored = true
	}
	if cfg.SendQueue > 0 {
		// Not a TCP socket (a pipe, a Unix socket), or not Linux: the
		// write budget alone bounds what is taken from the hub.
		_ = setSendQueue(socketOf(conn), cfg.SendQueue)
	}
	return c
}

// socketOf returns the socket under conn: its own, or that of the
// connection a TLS connection runs on; nil when there is none.
func socketOf(conn net.Conn) syscall.RawConn {
	for range 4 {
		if sc, ok := conn.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				return rc
			}
			return nil
		}
		nc, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		conn = nc.NetConn()
	}
	return nil
}

// Send queues a complete message (a reply) for this client alone; the
// client's goroutine writes it at once. It never blocks: when the queue is
// full the message is dropped and counted, and Send returns false.
func (c *Client) Send(msg []byte) bool {
	return c.sendFrame(wire.AppendBinaryFrame(make([]byte, 0, len(msg)+10), msg))
}

// SendFrame queues a complete, already framed WebSocket message to be
// written at once, like Send; the frame may be shared by many clients and
// must not be modified.
func (c *Client) SendFrame(f []byte) bool { return c.sendFrame(f) }

func (c *Client) sendFrame(f []byte) bool {
	select {
	case c.queue <- f:
		return true
	default:
		c.hub.dropTelemetry(1)
		return false
	}
}

// wakeWriter asks the client's goroutine to write what waits.
func (c *Client) wakeWriter() {
	select {
	case c.kick <- struct{}{}:
	default:
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
	c.cur = c.hub.Join()
	defer c.hub.Leave()
	go func() {
		defer close(c.readEnded)
		c.readErr = c.read()
	}()

	c.hub.register(c)
	err := c.runWriter(ctx)
	c.wmu.Lock() // a send round in progress finishes first
	c.gone = true
	rest := c.rest
	c.rest, c.restBatch = nil, nil
	c.wmu.Unlock()

	c.closeMu.Lock()
	cf := c.closing
	c.closeMu.Unlock()
	if cf != nil {
		_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		// A frame the send round left half written is finished first, or
		// the close frame would land inside it; a client that cannot take
		// it in time gets no close frame, only the end of the connection.
		var err error
		if len(rest) > 0 {
			_, err = rest.WriteTo(c.conn)
		}
		if err == nil {
			_, _ = c.conn.Write(cf)
		}
	}
	_ = c.conn.Close()
	<-c.readEnded
	if err == nil && !errors.Is(c.readErr, wire.ErrClosed) {
		err = c.readErr
	}
	return err
}

// runWriter runs write, and takes the client out of the send round when it
// ends, also by a panic.
func (c *Client) runWriter(ctx context.Context) error {
	defer c.hub.unregister(c)
	return c.write(ctx)
}

// write is the client's goroutine: it writes what the send round left to
// it, replies, and the frames of a client without a socket of its own, and
// it ends the client on a keyframe timeout, Close, the end of the reading
// goroutine or ctx.
//
// The keyframe timeout needs no timer: it is due only when a frame passes
// the waiting client (Cursor's KeyframeOverdue), and every frame is
// followed by a send round, which wakes this goroutine when it is.
func (c *Client) write(ctx context.Context) error {
	var (
		sc     scratch
		first  []byte
		pings  <-chan time.Time
		pinged time.Time // when the last ping went out
	)
	if c.cfg.PingInterval > 0 {
		t := time.NewTicker(c.cfg.PingInterval)
		defer t.Stop()
		pings = t.C
	}
	for {
		c.wmu.Lock()
		err := c.drain(&sc, first)
		overdue := c.cur.KeyframeOverdue(c.cfg.KeyframeTimeout)
		c.wmu.Unlock()
		sc.reset()
		first = nil
		if err != nil {
			return err
		}
		if overdue {
			c.hub.keyTimeouts.Add(1)
			c.hub.m.KeyframeTimeouts.Inc()
			reason := fmt.Sprintf("no keyframe within %s of video", c.cfg.KeyframeTimeout)
			c.Close(wire.CloseKeyframeTimeout, reason)
			return &CloseError{wire.CloseKeyframeTimeout, reason}
		}
		select {
		case <-c.kick:
		case first = <-c.queue:
		case <-c.stop:
			return nil
		case <-c.readEnded:
			c.closeForRead(c.readErr)
			return nil
		case <-ctx.Done():
			c.Close(wire.CloseServiceRestart, "sdr_stream stopped or reloaded; reconnect")
			return nil
		case now := <-pings:
			if !pinged.IsZero() && c.guard.SilentSince(pinged) {
				c.hub.pingTimeouts.Add(1)
				c.hub.m.Closes.WithLabelValues(ReasonPingTimeout).Inc()
				reason := fmt.Sprintf("no pong or message for %s", now.Sub(pinged).Round(time.Millisecond))
				c.Close(wire.CloseGoingAway, reason)
				return &CloseError{wire.CloseGoingAway, reason}
			}
			pinged = now
			// Written by this goroutine with whatever else waits, whole:
			// never inside a frame the send round left half written.
			first = pingFrame
		}
	}
}

// ReasonPingTimeout is the Closes reason of a client that answered no ping.
const ReasonPingTimeout = "ping_timeout"

// pingFrame is the ping every client is sent (no payload).
var pingFrame = wire.ControlFrame(wire.OpPing, nil)

// scratch holds a writer's reusable slices, and a send round's time.
type scratch struct {
	bufs  net.Buffers
	batch []*Entry
	now   time.Time // the round's Hub.lagClock, read once per round
}

// reset drops the references to frames, which may then be freed.
func (s *scratch) reset() {
	clear(s.bufs)
	clear(s.batch)
	s.bufs, s.batch = s.bufs[:0], s.batch[:0]
}

// drain writes, blocking, everything that waits for the client: the tail of
// a partial direct write, first, the replies, the shared telemetry and the
// frames, until nothing is left; then it gives the writes back to the send
// round. Called with wmu held.
func (c *Client) drain(sc *scratch, first []byte) error {
	if c.rest != nil {
		rest, batch := c.rest, c.restBatch
		c.rest, c.restBatch = nil, nil
		if err := c.flush(rest, batch); err != nil {
			return err
		}
	}
	for {
		sc.bufs, sc.batch = sc.bufs[:0], sc.batch[:0]
		if first != nil {
			sc.bufs = append(sc.bufs, first)
			first = nil
		}
		sc.bufs, sc.batch = c.gather(sc.bufs, sc.batch, true, c.hub.lagClock())
		if len(sc.bufs) == 0 {
			break
		}
		if err := c.flush(sc.bufs, sc.batch); err != nil {
			return err
		}
	}
	if c.raw != nil {
		c.slow = false
		// The send round's writes never block; a deadline left set would
		// only expire under them.
		if !c.deadline.IsZero() {
			c.deadline = time.Time{}
			if err := c.conn.SetWriteDeadline(c.deadline); err != nil {
				return fmt.Errorf("clearing write deadline: %w", err)
			}
		}
	}
	return nil
}

// gather appends to bufs what waits for the client, in the order the
// writer has always sent it: the replies (when urgent) and the queued
// telemetry first, then the frames the hub has for the cursor
// (keyframe-first and lag skips as Next decides). Gathering stops once
// BatchBytes are taken; Next gets what is left of the budget (it takes at
// least one frame), and judges frame ages at now. Called with wmu held.
func (c *Client) gather(bufs net.Buffers, batch []*Entry, urgent bool, now time.Time) (net.Buffers, []*Entry) {
	taken := size(bufs)
	if urgent {
		taken, bufs = drainQueue(c.queue, bufs, taken, c.cfg.BatchBytes)
	}
	taken, bufs = c.hub.takeTelemetry(&c.tnext, bufs, taken, c.cfg.BatchBytes)
	if taken >= c.cfg.BatchBytes {
		return bufs, batch // the frames go in the next write
	}
	n := len(batch)
	batch = c.hub.next(&c.cur, batch, c.cfg.BatchBytes-taken, now)
	for _, e := range batch[n:] {
		bufs = append(bufs, e.Head)
		if len(e.Body) > 0 {
			bufs = append(bufs, e.Body)
		}
	}
	return bufs, batch
}

func drainQueue(q chan []byte, bufs net.Buffers, taken, budget int) (int, net.Buffers) {
	for taken < budget {
		select {
		case f := <-q:
			bufs = append(bufs, f)
			taken += len(f)
			continue
		default:
		}
		break
	}
	return taken, bufs
}

// serve is the send round's turn at this client: one non-blocking writev of
// what waits. What the socket does not take, and every client the round
// cannot write for, goes to the client's goroutine.
func (c *Client) serve(sc *scratch) {
	if !c.wmu.TryLock() {
		c.wakeWriter() // it is writing; it looks again when done
		return
	}
	defer c.wmu.Unlock()
	if c.gone {
		return
	}
	if c.slow {
		c.wakeWriter()
		return
	}
	var n int
	var err error
	for {
		sc.bufs, sc.batch = c.gather(sc.bufs[:0], sc.batch[:0], false, sc.now)
		if c.cur.KeyframeOverdue(c.cfg.KeyframeTimeout) {
			c.wakeWriter() // to close it
		}
		if len(sc.bufs) == 0 {
			return
		}
		taken := size(sc.bufs)
		n, err = c.direct.write(c.raw, sc.bufs)
		if err != nil || n != taken {
			break
		}
		c.hub.direct.Add(1)
		c.account(sc.batch, n)
		if taken < c.cfg.BatchBytes {
			return // all that waited
		}
		// The budget was used up and the socket took it all: more may wait.
		clear(sc.bufs)
		clear(sc.batch)
	}
	// A full socket (EAGAIN or a short write), or an error the goroutine's
	// blocking write meets again and ends the client with.
	c.slow = true
	c.hub.handovers.Add(1)
	c.hub.m.Handovers.Inc()
	c.rest = tail(sc.bufs, n)
	c.restBatch = append([]*Entry(nil), sc.batch...)
	if n > 0 {
		c.hub.bytesOut.Add(uint64(n))
		c.hub.m.BytesOut.Add(float64(n))
	}
	c.wakeWriter()
}

// size is the number of bytes bufs holds.
func size(bufs net.Buffers) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}

// tail returns a new slice of what bufs holds after its first n bytes.
func tail(bufs net.Buffers, n int) net.Buffers {
	var out net.Buffers
	for _, b := range bufs {
		if n >= len(b) {
			n -= len(b)
			continue
		}
		out = append(out, b[n:])
		n = 0
	}
	return out
}

// flush writes bufs, blocking, with the write deadline. Called with wmu
// held.
func (c *Client) flush(bufs net.Buffers, batch []*Entry) error {
	n := size(bufs)
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
	switch {
	case len(bufs) == 1:
		_, err = c.conn.Write(bufs[0]) // one write(2), no writev setup
	case c.vectored:
		c.wbuf = bufs // WriteTo consumes it; a field does not escape per call
		_, err = c.wbuf.WriteTo(c.conn)
		c.wbuf = nil
	default:
		err = writeCoalesced(c.conn, bufs)
	}
	if err != nil {
		return fmt.Errorf("writing %d bytes to client: %w", n, err)
	}
	c.account(batch, n)
	return nil
}

// coalesceSize is the most writeCoalesced gathers for one write: the
// plaintext of one full TLS record.
const coalesceSize = 16 << 10

// coalescers are writeCoalesced's buffers, shared by every client: one is
// taken only for the length of a write.
var coalescers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, coalesceSize) }}

// writeCoalesced writes bufs to a connection that would take each buffer
// in a write of its own (TLS, where each write makes at least one record
// and one system call; a pipe; a socket behind a wrapper), so that a
// frame's head never goes alone: it is copied into a pooled buffer with
// what follows it, up to coalesceSize, and the rest of a large payload is
// written from where it lies. The bytes written are bufs', in order.
func writeCoalesced(w io.Writer, bufs net.Buffers) error {
	bw := coalescers.Get().(*bufio.Writer)
	bw.Reset(w)
	defer func() {
		bw.Reset(nil) // no reference to the connection stays in the pool
		coalescers.Put(bw)
	}()
	for _, b := range bufs {
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// account counts one completed write of n bytes carrying batch.
func (c *Client) account(batch []*Entry, n int) {
	c.hub.writes.Add(1)
	if len(batch) > 0 {
		now := time.Now()
		for _, e := range batch {
			if c.cur.Live(e) {
				c.hub.m.Delivery.Observe(now.Sub(e.Arrived).Seconds())
			}
		}
		c.hub.framesOut.Add(uint64(len(batch)))
		c.hub.m.FramesOut.Add(float64(len(batch)))
	}
	c.hub.bytesOut.Add(uint64(n))
	c.hub.m.BytesOut.Add(float64(n))
}

// closeForRead turns the end of the reading goroutine into the close frame
// the writer sends.
func (c *Client) closeForRead(err error) {
	var (
		pe *wire.ProtocolError
		le *wire.LimitError
	)
	if errors.As(err, &le) {
		c.hub.limitCloses.Add(1)
		c.hub.m.Closes.WithLabelValues(le.Reason).Inc()
	}
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
