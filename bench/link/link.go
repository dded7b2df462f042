package main

// The shaped link, one model for both paths: a bottleneck of Rate bits/s
// (on the wire: IP, TCP or UDP headers count) with a queue of Queue in
// front of it, Delay each way, and random loss of Loss per packet.
//
// TCP (WebSocket, NATS) goes through Toxiproxy in this process, with the
// toxic "sdr_link" below in each direction. Toxiproxy carries bytes, not
// packets, and the built-in toxics cannot express this link: "latency"
// after "bandwidth" counts its delay from when Toxiproxy read the bytes,
// so time spent queued for bandwidth is taken off the latency, and
// "latency" before "bandwidth" holds 1024 chunks of up to 32 KiB in front
// of the rate limit (a 32 MiB queue). There is no loss toxic: TCP never
// loses bytes, it delivers them late. sdr_link cuts the bytes into
// 1448-byte segments, gives each a departure time at Rate behind the ones
// before it (and takes no more input while the queue holds more than
// Queue: the sender's socket then fills, as behind a full bottleneck), an
// arrival Delay later, and loses each with probability Loss. A lost
// segment is recovered by fast retransmit: the sender learns of it from
// duplicate acknowledgements one round trip plus three segments later,
// and the retransmission waits behind the queue of that moment. Bytes are
// delivered in order, so everything behind a lost segment waits for it,
// which is what loss does to a TCP stream. Not modelled: the congestion
// window's cut after a loss (at 1% loss and 40 ms, TCP's throughput is
// about the link's 4 Mbit/s anyway) and RTO timeouts.
//
// UDP (WebRTC) cannot go through Toxiproxy: the WebRTC viewer's socket is
// wrapped instead (shapedConn), with the same model per datagram: a
// datagram that finds the queue full is dropped (drop-tail), and a lost
// one is gone; NACK and retransmission are WebRTC's own.

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/stream"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/rs/zerolog"
)

// Link is one direction of the shaped link.
type Link struct {
	Rate  float64       // bits per second on the wire
	Delay time.Duration // one way
	Loss  float64       // probability that a packet is lost
	Queue time.Duration // the bottleneck's queue, in time at Rate
}

// Per-packet overheads on the wire and the TCP segment size.
const (
	tcpOverhead = 52 // IPv4 20, TCP 20, timestamps 12
	udpOverhead = 28 // IPv4 20, UDP 8
	mss         = 1448
)

// serialize is how long n bytes take on the wire at the link's rate.
func (l Link) serialize(n int) time.Duration {
	return time.Duration(float64(n) * 8 / l.Rate * float64(time.Second))
}

func (l Link) String() string {
	return fmt.Sprintf("%.1f Mbit/s, %v RTT, %.1f%% loss, %v queue", l.Rate/1e6, 2*l.Delay, 100*l.Loss, l.Queue)
}

// linkToxic is the Toxiproxy toxic "sdr_link": Link over a TCP byte stream
// (see the top of this file). Toxiproxy shares one per proxy direction; the
// state of a connection lives in Pipe.
type linkToxic struct {
	Rate    float64 `json:"rate"`     // bits per second
	DelayMS float64 `json:"delay_ms"` // one way
	Loss    float64 `json:"loss"`     // per segment
	QueueMS float64 `json:"queue_ms"`
}

func init() { toxics.Register("sdr_link", new(linkToxic)) }

func (t *linkToxic) link() Link {
	return Link{Rate: t.Rate, Delay: time.Duration(t.DelayMS * float64(time.Millisecond)),
		Loss: t.Loss, Queue: time.Duration(t.QueueMS * float64(time.Millisecond))}
}

// segment is a piece of the stream with the time it reaches the receiver.
type segment struct {
	data   []byte
	arrive time.Time
}

// Pipe runs one connection's direction through the link.
func (t *linkToxic) Pipe(stub *toxics.ToxicStub) {
	l := t.link()
	line := make(chan segment, 1<<14) // in flight, in order
	done := make(chan struct{})
	go deliver(stub.Output, line, done)
	free := time.Now() // when the bottleneck has sent what it holds
	for {
		select {
		case <-stub.Interrupt:
			close(line)
			<-done
			return
		case c := <-stub.Input:
			if c == nil {
				close(line)
				<-done
				stub.Close()
				return
			}
			for data := c.Data; len(data) > 0; {
				n := min(len(data), mss)
				seg := data[:n]
				data = data[n:]
				now := time.Now()
				if wait := free.Sub(now) - l.Queue; wait > 0 {
					time.Sleep(wait) // the queue is full: take nothing more until it has room
					now = time.Now()
				}
				backlog := max(0, free.Sub(now))
				free = now.Add(backlog + l.serialize(n+tcpOverhead))
				arrive := free.Add(l.Delay)
				if rand.Float64() < l.Loss {
					// Fast retransmit: duplicate acks reach the sender a
					// round trip and three segments later; the
					// retransmission queues behind the backlog, and takes
					// its own time on the wire.
					arrive = arrive.Add(2*l.Delay + 4*l.serialize(mss+tcpOverhead) + backlog)
					free = free.Add(l.serialize(n + tcpOverhead))
				}
				line <- segment{seg, arrive}
			}
		}
	}
}

// deliver hands each segment on at its arrival time, in order: a segment
// that arrives late holds back those behind it.
func deliver(out chan<- *stream.StreamChunk, line <-chan segment, done chan<- struct{}) {
	defer close(done)
	var last time.Time
	for s := range line {
		at := s.arrive
		if at.Before(last) {
			at = last
		}
		last = at
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		out <- &stream.StreamChunk{Data: s.data, Timestamp: at}
	}
}

// shaper is the in-process Toxiproxy: one proxy per shaped client, so that
// each has a link of its own, as each operator has his own Wi-Fi.
//
// The proxies run Toxiproxy's links and toxics, but accept and dial
// themselves (Toxiproxy's own accept loop dials the upstream with the
// kernel's default buffers): the socket to the server gets a small receive
// buffer (proxyRecvBuf), so that the server's bytes in flight are what a
// real path holds (its bandwidth-delay product, 20 KB at 4 Mbit/s and 40
// ms), not the megabytes that an autotuned loopback socket takes in. The
// queue of the link is the toxic's.
type shaper struct {
	server *toxiproxy.ApiServer
	link   Link
	mu     sync.Mutex
	n      int
}

// proxyRecvBuf is the receive buffer of a proxy's socket to the server
// (the kernel doubles it for its bookkeeping).
const proxyRecvBuf = 16 << 10

func newShaper(l Link) *shaper {
	zerolog.SetGlobalLevel(zerolog.WarnLevel)
	return &shaper{server: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop()), link: l}
}

// linkProxy is one shaped link: a listener whose connections go to the
// upstream through Toxiproxy's toxic links.
type linkProxy struct {
	Listen string
	p      *toxiproxy.Proxy
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn
}

// proxy starts a proxy to upstream (host:port) with the link in both
// directions.
func (s *shaper) proxy(upstream string) (*linkProxy, error) {
	s.mu.Lock()
	s.n++
	name := fmt.Sprintf("link%d", s.n)
	s.mu.Unlock()
	p := toxiproxy.NewProxy(s.server, name, "", upstream)
	for _, dir := range []string{"downstream", "upstream"} {
		attrs, _ := json.Marshal(linkToxic{Rate: s.link.Rate, DelayMS: float64(s.link.Delay) / 1e6,
			Loss: s.link.Loss, QueueMS: float64(s.link.Queue) / 1e6})
		body := fmt.Sprintf(`{"name":"link_%s","type":"sdr_link","stream":"%s","attributes":%s}`, dir, dir, attrs)
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
			return nil, fmt.Errorf("adding the %s link toxic: %w", dir, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for %s: %w", name, err)
	}
	lp := &linkProxy{Listen: ln.Addr().String(), p: p, ln: ln}
	dialer := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, proxyRecvBuf)
		})
		if err == nil {
			err = serr
		}
		return err
	}}
	go func() {
		for i := 0; ; i++ {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := dialer.Dial("tcp", upstream)
			if err != nil {
				client.Close()
				continue
			}
			lp.mu.Lock()
			lp.conns = append(lp.conns, client, up)
			lp.mu.Unlock()
			c := fmt.Sprintf("%s-%d", name, i)
			p.Toxics.StartLink(s.server, c+"upstream", segmentReader{client}, up, stream.Upstream)
			p.Toxics.StartLink(s.server, c+"downstream", segmentReader{up}, client, stream.Downstream)
		}
	}()
	return lp, nil
}

// segmentReader reads at most a segment at a time: Toxiproxy's link reads
// into 32 KiB chunks and holds one in its reader and one in its first
// stage, 64 KiB (130 ms at 4 Mbit/s) of queue that no real path has.
type segmentReader struct{ r io.Reader }

func (s segmentReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), mss)]) }

// Stop closes the listener and every connection through it.
func (lp *linkProxy) Stop() {
	lp.ln.Close()
	lp.mu.Lock()
	defer lp.mu.Unlock()
	for _, c := range lp.conns {
		c.Close()
	}
}

// shapedConn is a UDP socket behind the link: what arrives from the
// network passes the downstream link before ReadFrom returns it, what is
// written passes the upstream link before it is sent.
type shapedConn struct {
	net.PacketConn
	down, up *udpLink
	in       chan datagram
	closed   chan struct{}
	once     sync.Once
}

type datagram struct {
	data   []byte
	addr   net.Addr
	arrive time.Time
}

// udpLink is one direction of Link for datagrams.
type udpLink struct {
	Link
	mu   sync.Mutex
	free time.Time
	line chan datagram

	passed, dropped, lost atomic.Int64
}

// admit gives a datagram of n bytes its arrival time, or reports that the
// queue dropped it or the link lost it.
func (u *udpLink) admit(n int) (time.Time, bool) {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	backlog := max(0, u.free.Sub(now))
	if backlog > u.Queue {
		u.dropped.Add(1)
		return time.Time{}, false
	}
	u.free = now.Add(backlog + u.serialize(n+udpOverhead))
	if rand.Float64() < u.Loss {
		u.lost.Add(1)
		return time.Time{}, false
	}
	u.passed.Add(1)
	return u.free.Add(u.Delay), true
}

// shape wraps conn with the link in both directions.
func shape(conn net.PacketConn, l Link) *shapedConn {
	c := &shapedConn{PacketConn: conn,
		down:   &udpLink{Link: l, line: make(chan datagram, 1<<14)},
		up:     &udpLink{Link: l, line: make(chan datagram, 1<<14)},
		in:     make(chan datagram, 1<<14),
		closed: make(chan struct{})}
	go c.readLoop()
	go c.hold(c.down.line, func(d datagram) {
		select {
		case c.in <- d:
		case <-c.closed:
		}
	})
	go c.hold(c.up.line, func(d datagram) { _, _ = c.PacketConn.WriteTo(d.data, d.addr) })
	return c
}

func (c *shapedConn) readLoop() {
	defer close(c.down.line)
	for {
		buf := make([]byte, 1600)
		n, addr, err := c.PacketConn.ReadFrom(buf)
		if err != nil {
			return
		}
		if at, ok := c.down.admit(n); ok {
			c.down.line <- datagram{buf[:n], addr, at}
		}
	}
}

// hold passes each datagram on at its arrival time, until the line ends
// or the socket is closed.
func (c *shapedConn) hold(line <-chan datagram, pass func(datagram)) {
	for {
		var d datagram
		select {
		case v, ok := <-line:
			if !ok {
				return
			}
			d = v
		case <-c.closed:
			return
		}
		if w := time.Until(d.arrive); w > 0 {
			select {
			case <-time.After(w):
			case <-c.closed:
				return
			}
		}
		pass(d)
	}
}

func (c *shapedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-c.in:
		return copy(b, d.data), d.addr, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *shapedConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	if at, ok := c.up.admit(len(b)); ok {
		select {
		case c.up.line <- datagram{append([]byte(nil), b...), addr, at}:
		default: // more in flight than the line holds: lost
		}
	}
	return len(b), nil
}

func (c *shapedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.PacketConn.Close()
}
