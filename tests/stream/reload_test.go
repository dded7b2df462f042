package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// reloadingClient reads video and reconnects whenever the server closes it
// with 1012 (service restart). It checks that every connection starts with
// a keyframe and that frames never go backwards within a connection.
type reloadingClient struct {
	url       string
	restarts  atomic.Int64
	frames    atomic.Int64
	badStarts atomic.Int64
	redials   atomic.Int64
	errs      chan error
}

func (c *reloadingClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		// Caddy may reset a connection accepted in the instant its old
		// server lets go of the shared listener; a browser retries, and so
		// do we, for a while.
		var conn *websocket.Conn
		var err error
		for try := 0; ; try++ {
			conn, _, err = websocket.DefaultDialer.DialContext(ctx, c.url, nil)
			if err == nil || ctx.Err() != nil || try == 50 {
				break
			}
			c.redials.Add(1)
			time.Sleep(100 * time.Millisecond) // a browser's back-off before it retries
		}
		if err != nil {
			if ctx.Err() == nil {
				c.errs <- fmt.Errorf("dialing for 5s: %w", err)
			}
			return
		}
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		first := true
		var last uint64
		for {
			_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
			_, msg, err := conn.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) && ce.Code == int(wire.CloseServiceRestart) {
					c.restarts.Add(1)
				} else if ctx.Err() == nil {
					c.errs <- fmt.Errorf("reading: %w", err)
					stop()
					conn.Close()
					return
				}
				break
			}
			h, _, err := wire.ParseVideo(msg)
			if err != nil {
				continue
			}
			if first && !h.Keyframe() {
				c.badStarts.Add(1)
			}
			if !first && h.FrameSeq <= last {
				c.errs <- fmt.Errorf("frame %d after %d", h.FrameSeq, last)
			}
			first, last = false, h.FrameSeq
			c.frames.Add(1)
		}
		stop()
		conn.Close()
	}
}

func TestReloadUnderLoadLeavesNothingBehind(t *testing.T) {
	w := shmringtest.NewWriter(t, "", 1<<20)
	path := w.Path
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopWriter := w.Start(t, shmringtest.Cadence{Period: 10 * time.Millisecond, GOP: 20, Size: 4000})

	body := func(i int) string {
		// Every reload changes the handler; every 10th also the reader's
		// settings, so a new reader replaces the shared one.
		crc := "on"
		if (i/10)%2 == 1 {
			crc = "off"
		}
		return fmt.Sprintf(`	handle /stream/* {
		sdr_stream cam {
			source shm %s
			crc %s
			queue_depth %d
		}
	}`, path, crc, 60+i%2)
	}
	s := startServer(t, "", body(0))
	s.waitHealth(t, "/stream/health", "frames", func(h map[string]any) bool { return h["shm_seq"].(float64) > 5 })

	// Warm up with one reload and one client, then take the baseline with
	// no client.
	s.caddy.Load(t, testenv.Caddyfile(s.port, "", body(1)))
	warm := dial(t, s.ws+"/stream/ws")
	shmringtest.ReadVideo(t, warm)
	warm.Close()
	s.waitHealth(t, "/stream/health", "no clients", func(h map[string]any) bool { return h["clients"] == float64(0) })
	// The baseline, once the warm-up client's goroutines have ended: the
	// count no longer falls between two looks.
	prev := -1
	testwait.For(t, "the goroutine count to settle", func() bool {
		g := s.goroutines(t)
		settled := g == prev
		prev = g
		return settled
	})
	g0, f0, m0 := s.goroutines(t), s.fds(t), s.mappings(t, path)
	if m0 != 1 {
		t.Fatalf("%d mappings of the ring before the reloads, want 1", m0)
	}

	const nClients, reloads = 16, 50
	cctx, ccancel := context.WithCancel(ctx)
	clients := make([]*reloadingClient, nClients)
	errs := make(chan error, 1000)
	var cwg sync.WaitGroup
	for i := range clients {
		clients[i] = &reloadingClient{url: s.ws + "/stream/ws", errs: errs}
		cwg.Add(1)
		go func() { defer cwg.Done(); clients[i].run(cctx) }()
	}
	s.waitHealth(t, "/stream/health", "clients", func(h map[string]any) bool { return h["clients"] == float64(nClients) })
	for i := 2; i < reloads+2; i++ {
		s.caddy.Load(t, testenv.Caddyfile(s.port, "", body(i)))
		time.Sleep(60 * time.Millisecond) // the pace of the reloads
	}
	// Let the clients reconnect and see video after the last reload.
	total := func() (n int64) {
		for _, c := range clients {
			n += c.frames.Load()
		}
		return n
	}
	before := total()
	testwait.Until(15*time.Second, func() bool { return total() >= before+int64(nClients)*5 })
	after := total()
	var restarts, badStarts, redials int64
	for _, c := range clients {
		redials += c.redials.Load()
		restarts += c.restarts.Load()
		badStarts += c.badStarts.Load()
	}
	ccancel()
	cwg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if after < before+int64(nClients)*5 {
		t.Errorf("little video within 15s of the last reload (%d frames before, %d after); health %v", before, after, s.health(t, "/stream/health"))
	}
	if restarts < nClients*reloads/2 {
		t.Errorf("%d restarts (code 1012) for %d clients and %d reloads", restarts, nClients, reloads)
	}
	if badStarts != 0 {
		t.Errorf("%d connections started with a delta", badStarts)
	}
	t.Logf("%d clients, %d reloads: %d restarts seen, %d redials, %d frames", nClients, reloads, restarts, redials, after)

	s.waitHealth(t, "/stream/health", "no clients", func(h map[string]any) bool { return h["clients"] == float64(0) })
	// Leftovers: wait for closing connections and timers to end, then
	// compare.
	var g1, f1, m1 int
	testwait.Until(10*time.Second, func() bool {
		g1, f1, m1 = s.goroutines(t), s.fds(t), s.mappings(t, path)
		return g1 <= g0+2 && f1 <= f0+1 && m1 == 1
	})
	t.Logf("goroutines %d -> %d, fds %d -> %d, ring mappings %d -> %d", g0, g1, f0, f1, m0, m1)
	if g1 > g0+2 {
		t.Errorf("goroutines grew from %d to %d over %d reloads", g0, g1, reloads)
	}
	if f1 > f0+1 {
		t.Errorf("file descriptors grew from %d to %d over %d reloads", f0, f1, reloads)
	}
	if m1 != 1 {
		t.Errorf("%d mappings of the ring after %d reloads, want 1", m1, reloads)
	}
	cancel()
	stopWriter()
}
