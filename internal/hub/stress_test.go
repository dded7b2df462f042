package hub

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// stressPayload fills a frame's payload with bytes that depend on its
// sequence number, so that a reader can tell one frame's bytes from another's.
func stressPayload(seq uint64, size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte(seq*31 + uint64(i))
	}
	return p
}

// stressReader checks one client's stream message by message. Its counts
// are read by the test while the reader runs.
type stressReader struct {
	frames, telemetry atomic.Int64
	lastSeq           uint64
	lastTelemetry     int
}

// check returns what is wrong with msg, given what came before it.
func (r *stressReader) check(msg []byte) error {
	switch msg[0] {
	case wire.TypeVideo:
		hdr, payload, err := wire.ParseVideo(msg)
		if err != nil {
			return err
		}
		if int(hdr.Size) != len(payload) {
			return fmt.Errorf("frame %d: header says %d bytes, message carries %d", hdr.FrameSeq, hdr.Size, len(payload))
		}
		key := hdr.Keyframe()
		frames := r.frames.Load()
		switch {
		case frames == 0 && !key:
			return fmt.Errorf("first frame %d is a delta", hdr.FrameSeq)
		case hdr.FrameSeq <= r.lastSeq:
			return fmt.Errorf("frame %d after frame %d", hdr.FrameSeq, r.lastSeq)
		case frames > 0 && hdr.FrameSeq != r.lastSeq+1 && !key:
			return fmt.Errorf("skipped from frame %d to delta %d", r.lastSeq, hdr.FrameSeq)
		}
		for i, b := range payload {
			if b != byte(hdr.FrameSeq*31+uint64(i)) {
				return fmt.Errorf("frame %d: byte %d of %d is not its own", hdr.FrameSeq, i, len(payload))
			}
		}
		r.frames.Add(1)
		r.lastSeq = hdr.FrameSeq
	case wire.TypeTelemetry:
		subject, payload, err := wire.ParseTelemetry(msg)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(string(payload))
		if subject != "telemetry.stress" || err != nil {
			return fmt.Errorf("telemetry %q %q is not what was broadcast", subject, payload)
		}
		if n <= r.lastTelemetry {
			return fmt.Errorf("telemetry %d after %d", n, r.lastTelemetry)
		}
		r.telemetry.Add(1)
		r.lastTelemetry = n
	default:
		return fmt.Errorf("message of unknown type %#x", msg[0])
	}
	return nil
}

// stressFrames is how many frames the producer publishes before the test
// looks at the outcome: three seconds of video at 500 frames/s on an idle
// machine, longer on a busy one, so that a slow machine does the same work.
const stressFrames = 1500

// Under load, with readers too slow for the stream, telemetry, and clients
// that come and go, every client's stream stays whole: each message
// complete, the frames in order and carrying their own bytes, a keyframe
// first and after every skip, the telemetry in order. The send round hands
// full sockets to the clients' goroutines and takes them back, every client
// keeps receiving, and every client leaves the hub when it goes.
//
// The test waits on work done (frames published, connections churned, lag
// skips and handovers counted), never on a time span, and every client
// reads until the test closes its connection: a client that stopped reading
// while still connected would be closed by the hub's WriteTimeout, which is
// the hub doing its job, not a failure.
func TestSendRoundStress(t *testing.T) {
	sendRoundStress(t, Config{Capacity: 24, TelemetryHold: 2 * time.Millisecond})
}

// The same with the lag skips by age: a log of a second (500 frames) that
// the slow readers seldom fall out of, and a MaxLag of 10 frames, after
// which they skip to the newest keyframe (one every 16 frames).
func TestSendRoundStressMaxLag(t *testing.T) {
	sendRoundStress(t, Config{Capacity: 500, MaxLag: 20 * time.Millisecond, TelemetryHold: 2 * time.Millisecond})
}

func sendRoundStress(t *testing.T, cfg Config) {
	if testing.Short() {
		t.Skip("stress test")
	}
	h := New(cfg)
	t.Cleanup(h.Close)
	// A small send buffer on the server's side (and a small receive buffer
	// on the slow readers'), so that a slow reader's socket fills within a
	// few frames instead of holding megabytes.
	url, _, _ := serveWith(t, h, ClientConfig{KeyframeTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second},
		func(c net.Conn) { _ = c.(*net.TCPConn).SetWriteBuffer(64 << 10) })

	var (
		stopProducers = make(chan struct{})
		stopChurn     = make(chan struct{})
		ending        atomic.Bool // from here on, a read error is the test closing
		producers     sync.WaitGroup
		churners      sync.WaitGroup
		readers       sync.WaitGroup
		published     atomic.Int64
		churned       atomic.Int64
		mu            sync.Mutex
		failures      []string
		conns         []*websocket.Conn
	)
	fail := func(who string, err error) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf("%s: %v", who, err))
		mu.Unlock()
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(failures) > 0
	}
	// end stops everything in an order in which nothing waits out a
	// deadline: the churners first, while frames still come, then the
	// producers, then the connections of the ten clients.
	stopChurning := sync.OnceFunc(func() {
		close(stopChurn)
		churners.Wait()
	})
	end := sync.OnceFunc(func() {
		stopChurning()
		close(stopProducers)
		producers.Wait()
		ending.Store(true)
		for _, c := range conns {
			c.Close()
		}
		readers.Wait()
	})
	t.Cleanup(end)

	producers.Add(2)
	go func() { // video: 500 frames/s, a 120 kB keyframe every 16th
		defer producers.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for seq := uint64(1); ; seq++ {
			select {
			case <-stopProducers:
				return
			case <-tick.C:
			}
			key := seq%16 == 1
			size := 1000 + int(seq%20)*1000
			if key {
				size = 120_000
			}
			f := mkFrame(seq, key, size)
			f.Payload = stressPayload(seq, size)
			h.Publish(f)
			published.Add(1)
		}
	}()
	go func() { // telemetry: 2000 messages/s
		defer producers.Done()
		tick := time.NewTicker(500 * time.Microsecond)
		defer tick.Stop()
		for n := 1; ; n++ {
			select {
			case <-stopProducers:
				return
			case <-tick.C:
			}
			msg, err := wire.Telemetry("telemetry.stress", []byte(strconv.Itoa(n)))
			if err != nil {
				fail("telemetry producer", err)
				return
			}
			h.Broadcast(wire.AppendBinaryFrame(nil, msg))
		}
	}()

	// read reads c until its connection is closed (or max messages, when
	// max > 0), checking every message; slow readers pause between
	// messages. The read deadline only detects a hang.
	read := func(who string, c *websocket.Conn, r *stressReader, slow bool, max int) {
		for i := 0; max == 0 || i < max; i++ {
			_ = c.SetReadDeadline(testwait.Deadline(testwait.Default))
			_, msg, err := c.ReadMessage()
			if err != nil {
				if !ending.Load() {
					fail(who, err)
				}
				return
			}
			if err := r.check(msg); err != nil {
				fail(who, err)
				return
			}
			if slow {
				time.Sleep(3 * time.Millisecond) // the subject: a reader slower than the stream
			}
		}
	}
	clients := make([]*stressReader, 10)
	for i := range clients {
		slow := i >= 6
		who := fmt.Sprintf("client %d (slow %v)", i, slow)
		c := dial(t, url, nil)
		if slow {
			// A smaller receive buffer fills the server's socket sooner.
			_ = c.UnderlyingConn().(*net.TCPConn).SetReadBuffer(32 << 10)
		}
		conns = append(conns, c)
		r := new(stressReader)
		clients[i] = r
		readers.Add(1)
		go func() {
			defer readers.Done()
			read(who, c, r, slow, 0)
		}()
	}
	for i := range 4 {
		churners.Add(1)
		go func() {
			defer churners.Done()
			for j := 0; ; j++ {
				select {
				case <-stopChurn:
					return
				default:
				}
				c, _, err := websocket.DefaultDialer.Dial(url, nil)
				if err != nil {
					fail(fmt.Sprintf("churning client %d", i), err)
					return
				}
				read(fmt.Sprintf("churning client %d, connection %d", i, j), c, new(stressReader), false, 5+j%20)
				c.Close()
				churned.Add(1)
			}
		}()
	}

	// wait waits until cond holds or a reader failed; it reports what did
	// not happen in time (a hang: the deadline is generous and scaled).
	wait := func(what string, cond func() bool) {
		t.Helper()
		if !testwait.Until(testwait.Default, func() bool { return failed() || cond() }) {
			t.Errorf("timed out after %s waiting for %s; stats %+v, %d frames published, %d churned connections",
				testwait.Timeout(testwait.Default), what, h.Stats(), published.Load(), churned.Load())
		}
		if t.Failed() || failed() {
			end()
			for _, f := range failures {
				t.Error(f)
			}
			t.FailNow()
		}
	}
	wait("the stress to be done", func() bool {
		st := h.Stats()
		if published.Load() < stressFrames || churned.Load() < 40 || st.LagSkips == 0 {
			return false
		}
		if directSupported && (st.DirectWrites == 0 || st.Handovers == 0) {
			return false
		}
		for _, r := range clients {
			if r.frames.Load() < 20 || r.telemetry.Load() < 20 {
				return false
			}
		}
		return true
	})
	// Every client keeps receiving: none is stuck behind the others.
	seen := make([][2]int64, len(clients))
	for i, r := range clients {
		seen[i] = [2]int64{r.frames.Load(), r.telemetry.Load()}
	}
	wait("every client to receive more frames and telemetry", func() bool {
		for i, r := range clients {
			if r.frames.Load() <= seen[i][0] || r.telemetry.Load() <= seen[i][1] {
				return false
			}
		}
		return true
	})
	// Every churning client leaves the hub once its connection is gone;
	// the ten others, still reading, stay connected.
	stopChurning()
	wait("the churning clients to leave the hub, the ten others to stay", func() bool {
		return h.Stats().Clients == 10
	})
	t.Logf("stats: %+v, %d frames published, %d churned connections", h.Stats(), published.Load(), churned.Load())
	end()
	for _, f := range failures {
		t.Error(f)
	}
}
