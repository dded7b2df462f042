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

// stressReader checks one client's stream message by message.
type stressReader struct {
	frames, telemetry int
	lastSeq           uint64
	lastTelemetry     int
	lastAt            time.Time // when the last message came
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
		switch {
		case r.frames == 0 && !key:
			return fmt.Errorf("first frame %d is a delta", hdr.FrameSeq)
		case hdr.FrameSeq <= r.lastSeq:
			return fmt.Errorf("frame %d after frame %d", hdr.FrameSeq, r.lastSeq)
		case r.frames > 0 && hdr.FrameSeq != r.lastSeq+1 && !key:
			return fmt.Errorf("skipped from frame %d to delta %d", r.lastSeq, hdr.FrameSeq)
		}
		for i, b := range payload {
			if b != byte(hdr.FrameSeq*31+uint64(i)) {
				return fmt.Errorf("frame %d: byte %d of %d is not its own", hdr.FrameSeq, i, len(payload))
			}
		}
		r.frames++
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
		r.telemetry++
		r.lastTelemetry = n
	default:
		return fmt.Errorf("message of unknown type %#x", msg[0])
	}
	return nil
}

// Under load, with readers too slow for the stream, telemetry, and clients
// that come and go, every client's stream stays whole: each message
// complete, the frames in order and carrying their own bytes, a keyframe
// first and after every skip, the telemetry in order. The send round hands
// full sockets to the clients' goroutines and takes them back, and every
// client leaves the hub when it goes.
func TestSendRoundStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress test")
	}
	h := New(Config{Capacity: 24, TelemetryHold: 2 * time.Millisecond})
	t.Cleanup(h.Close)
	// A small send buffer on the server's side (and a small receive buffer
	// on the slow readers'), so that a slow reader's socket fills within a
	// few frames instead of holding megabytes.
	url, _, _ := serveWith(t, h, ClientConfig{KeyframeTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second},
		func(c net.Conn) { _ = c.(*net.TCPConn).SetWriteBuffer(64 << 10) })

	stop := make(chan struct{})
	var producers sync.WaitGroup
	producers.Add(2)
	go func() { // video: 500 frames/s, a 120 kB keyframe every 16th
		defer producers.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for seq := uint64(1); ; seq++ {
			select {
			case <-stop:
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
		}
	}()
	go func() { // telemetry: 2000 messages/s
		defer producers.Done()
		tick := time.NewTicker(500 * time.Microsecond)
		defer tick.Stop()
		for n := 1; ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			msg, err := wire.Telemetry("telemetry.stress", []byte(strconv.Itoa(n)))
			if err != nil {
				t.Error(err)
				return
			}
			h.Broadcast(wire.AppendBinaryFrame(nil, msg))
		}
	}()

	var (
		readers  sync.WaitGroup
		mu       sync.Mutex
		failures []string
		counts   = map[string]*stressReader{}
		churned  atomic.Int64
	)
	fail := func(who string, err error) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf("%s: %v", who, err))
		mu.Unlock()
	}
	// read reads c until stop (or max messages, when max > 0), checking
	// every message; slow readers pause between messages.
	read := func(who string, c *websocket.Conn, slow bool, max int) *stressReader {
		r := new(stressReader)
		for i := 0; max == 0 || i < max; i++ {
			select {
			case <-stop:
				return r
			default:
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, msg, err := c.ReadMessage()
			if err != nil {
				select {
				case <-stop:
				default:
					fail(who, err)
				}
				return r
			}
			if err := r.check(msg); err != nil {
				fail(who, err)
				return r
			}
			r.lastAt = time.Now()
			if slow {
				time.Sleep(3 * time.Millisecond)
			}
		}
		return r
	}
	for i := range 10 {
		slow := i >= 6
		who := fmt.Sprintf("client %d (slow %v)", i, slow)
		c := dial(t, url, nil)
		if slow {
			// A smaller receive buffer fills the server's socket sooner.
			_ = c.UnderlyingConn().(*net.TCPConn).SetReadBuffer(32 << 10)
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			r := read(who, c, slow, 0)
			mu.Lock()
			counts[who] = r
			mu.Unlock()
		}()
	}
	for i := range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				c, _, err := websocket.DefaultDialer.Dial(url, nil)
				if err != nil {
					fail(fmt.Sprintf("churning client %d", i), err)
					return
				}
				read(fmt.Sprintf("churning client %d, connection %d", i, j), c, false, 5+j%20)
				c.Close()
				churned.Add(1)
			}
		}()
	}

	time.Sleep(3 * time.Second)
	stopped := time.Now()
	close(stop)
	producers.Wait()
	readers.Wait() // from here on, nothing writes failures or counts

	for _, f := range failures {
		t.Error(f)
	}
	for who, r := range counts {
		if r.frames < 20 || r.telemetry < 20 {
			t.Errorf("%s got %d frames and %d telemetry messages in 3s", who, r.frames, r.telemetry)
		}
		if idle := stopped.Sub(r.lastAt); idle > 2*time.Second {
			t.Errorf("%s got nothing in the last %v", who, idle.Round(time.Millisecond))
		}
	}
	if churned.Load() < 8 {
		t.Errorf("only %d connections came and went", churned.Load())
	}
	st := h.Stats()
	t.Logf("stats: %+v, %d churned connections", st, churned.Load())
	if st.LagSkips == 0 {
		t.Error("no client fell behind: the slow readers did not slow down")
	}
	if directSupported && (st.DirectWrites == 0 || st.Handovers == 0) {
		t.Errorf("send round: %d direct writes, %d handovers; want both", st.DirectWrites, st.Handovers)
	}
	// Every churning client leaves the hub once its connection is gone;
	// the ten others are still connected.
	deadline := time.Now().Add(10 * time.Second)
	for h.Stats().Clients > 10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.Stats().Clients; n != 10 {
		t.Errorf("%d clients in the hub after the churning ones left, want 10", n)
	}
}
