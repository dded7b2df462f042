package main

// The clients and what each saw: every frame is judged as a decoder would
// judge it (a delta after a gap, before the next keyframe, cannot be
// decoded), and the decodable ones are kept with their age (arrival minus
// the send time the writer stamped in frame_id and in the NAL unit).

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/benchstream"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// obs is one decodable frame at a client.
type obs struct {
	at  time.Time     // complete at the client
	age time.Duration // at minus the send time
}

// flow is what one client saw while recording.
type flow struct {
	mu          sync.Mutex
	on          bool
	from, to    time.Time
	frames      []obs
	undecodable int // frames that arrived but could not be decoded
	reconnects  int
	bytes       int64

	// The decoder's state.
	needKey bool
	lastSeq uint64
	haveSeq bool
}

func newFlow() *flow { return &flow{needKey: true} }

// start begins recording at t; stop ends it.
func (f *flow) start(t time.Time) {
	f.mu.Lock()
	f.on, f.from, f.frames, f.undecodable, f.reconnects, f.bytes = true, t, nil, 0, 0, 0
	f.mu.Unlock()
}

func (f *flow) stop(t time.Time) {
	f.mu.Lock()
	f.on, f.to = false, t
	f.mu.Unlock()
}

// seqFrame takes a 0x01 message's frame header fields (WebSocket, NATS):
// a gap in frame_seq needs a keyframe before anything decodes again.
func (f *flow) seqFrame(now time.Time, sent int64, seq uint64, key bool, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.haveSeq && seq != f.lastSeq+1 {
		f.needKey = true
	}
	f.lastSeq, f.haveSeq = seq, true
	if key {
		f.needKey = false
	}
	if !f.on {
		return
	}
	f.bytes += int64(n)
	if f.needKey {
		f.undecodable++
		return
	}
	f.frames = append(f.frames, obs{now, now.Sub(time.Unix(0, sent))})
}

// decoded takes a frame the WebRTC viewer judged decodable.
func (f *flow) decoded(now, sent time.Time, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.on {
		f.bytes += int64(n)
		f.frames = append(f.frames, obs{now, now.Sub(sent)})
	}
}

// broken counts a frame that arrived but cannot be decoded.
func (f *flow) broken() {
	f.mu.Lock()
	if f.on {
		f.undecodable++
	}
	f.mu.Unlock()
}

// reconnected: the decoder starts again at a keyframe.
func (f *flow) reconnected() {
	f.mu.Lock()
	f.needKey, f.haveSeq = true, false
	if f.on {
		f.reconnects++
	}
	f.mu.Unlock()
}

// flowStats summarise one client, or several pooled.
type flowStats struct {
	frames                 int
	p50, p95, p99          float64 // age, ms
	p95Early, p95Late      float64 // age p95 in the first and the second half of the window
	maxStall               float64 // longest time without a decodable frame, ms
	fps                    float64
	undecodable, reconnect int
	mbps                   float64
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(s []float64, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func (f *flow) stats() flowStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	var st flowStats
	win := f.to.Sub(f.from)
	mid := f.from.Add(win / 2)
	var ages, early, late []float64
	prev := f.from
	for _, o := range f.frames {
		a := ms(o.age)
		ages = append(ages, a)
		if o.at.Before(mid) {
			early = append(early, a)
		} else {
			late = append(late, a)
		}
		st.maxStall = max(st.maxStall, ms(o.at.Sub(prev)))
		prev = o.at
	}
	st.maxStall = max(st.maxStall, ms(f.to.Sub(prev)))
	for _, s := range [][]float64{ages, early, late} {
		slices.Sort(s)
	}
	st.frames = len(ages)
	st.p50, st.p95, st.p99 = pct(ages, 0.5), pct(ages, 0.95), pct(ages, 0.99)
	st.p95Early, st.p95Late = pct(early, 0.95), pct(late, 0.95)
	if win > 0 {
		st.fps = float64(len(ages)) / win.Seconds()
		st.mbps = float64(f.bytes) * 8 / win.Seconds() / 1e6
	}
	st.undecodable, st.reconnect = f.undecodable, f.reconnects
	return st
}

// pooledAges returns the ages (ms) of every decodable frame of the flows,
// sorted.
func pooledAges(fs []*flow) []float64 {
	var all []float64
	for _, f := range fs {
		f.mu.Lock()
		for _, o := range f.frames {
			all = append(all, ms(o.age))
		}
		f.mu.Unlock()
	}
	slices.Sort(all)
	return all
}

// frameHeader reads the fields the flows need from a 0x01 message's start
// (the type byte and the 32-byte frame header).
func frameHeader(b []byte) (sent int64, seq uint64, key bool, ok bool) {
	if len(b) < 1+shmring.HeaderSize || b[0] != 0x01 {
		return 0, 0, false, false
	}
	sent = int64(binary.LittleEndian.Uint64(b[1:9]))
	seq = binary.LittleEndian.Uint64(b[9:17])
	key = binary.LittleEndian.Uint16(b[21:23])&shmring.FlagKeyframe != 0
	return sent, seq, key, true
}

// wsClient watches /stream/ws at target (the server, or a proxy in front of
// it) until stop is closed, reconnecting after a second when the
// connection ends, as the player does. It reports the first connection's
// outcome on connected and each connection's local address on conns.
func wsClient(target string, f *flow, stop <-chan struct{}, connected chan<- error, conns chan<- net.Addr) {
	first := true
	for {
		conn, br, err := benchstream.Dial(target, 10*time.Second)
		if first {
			connected <- err
			first = false
		}
		if err == nil {
			if conns != nil {
				conns <- conn.LocalAddr()
			}
			done := make(chan struct{})
			go func() {
				select {
				case <-stop:
				case <-done:
				}
				conn.Close()
			}()
			err = readVideo(conn, br, f)
			close(done)
		}
		select {
		case <-stop:
			return
		case <-time.After(time.Second):
		}
		f.reconnected()
	}
}

// readVideo reads a /stream/ws connection: each 0x01 message's header is
// judged, its payload discarded; pings are answered.
func readVideo(conn net.Conn, br *bufio.Reader, f *flow) error {
	var hdr [1 + shmring.HeaderSize]byte
	for {
		op, n, err := benchstream.ReadFrameHeader(br)
		if err != nil {
			return err
		}
		switch {
		case op == benchstream.OpBinary && n >= uint64(len(hdr)):
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				return err
			}
			if _, err := br.Discard(int(n) - len(hdr)); err != nil {
				return err
			}
			if sent, seq, key, ok := frameHeader(hdr[:]); ok {
				f.seqFrame(time.Now(), sent, seq, key, int(n))
			}
		case op == benchstream.OpPing && n <= 125:
			data := make([]byte, n)
			if _, err := io.ReadFull(br, data); err != nil {
				return err
			}
			if err := benchstream.Pong(conn, data); err != nil {
				return err
			}
		case op == benchstream.OpClose:
			return errors.New("server closed the connection")
		default:
			if _, err := br.Discard(int(n)); err != nil {
				return err
			}
		}
	}
}

// natsClient subscribes to the video subject over nats-server's WebSocket
// listener at url until stop is closed, reconnecting as nats.go does.
func natsClient(url string, f *flow, stop <-chan struct{}, connected chan<- error) {
	nc, err := nats.Connect(url, nats.NoEcho(), nats.Timeout(10*time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { f.reconnected() }))
	if err != nil {
		connected <- fmt.Errorf("connecting to %s: %w", url, err)
		return
	}
	defer nc.Close()
	sub, err := nc.Subscribe(natsSubject, func(m *nats.Msg) {
		if sent, seq, key, ok := frameHeader(m.Data); ok {
			f.seqFrame(time.Now(), sent, seq, key, len(m.Data))
		}
	})
	if err == nil {
		err = sub.SetPendingLimits(-1, -1) // the link is the bottleneck, not this process
	}
	if err == nil {
		err = nc.Flush()
	}
	connected <- err
	if err != nil {
		return
	}
	<-stop
}
