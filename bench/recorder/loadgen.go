package main

// The load generator: a child process that holds N cheap WebSocket clients
// (internal/benchstream) and records delivery latency (receive time of the
// whole message minus the frame_id commit time) during the window. It
// prints START and END around the window, then RESULT with its figures.

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/benchstream"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// liveResult is what the load generator reports.
type liveResult struct {
	P50, P99, P999 float64 // ms
	Samples        int
	Bytes          uint64
	Errors         int
	FirstErr       string
	CPU            float64 // server seconds over the window, filled in by the parent
}

func runLoadgen(args []string) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	target := fs.String("url", "", "ws:// URL")
	n := fs.Int("clients", 100, "clients")
	warmup := fs.Duration("warmup", 5*time.Second, "")
	window := fs.Duration("window", 30*time.Second, "")
	fps := fs.Int("fps", 60, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var (
		on       atomic.Bool
		bytes    atomic.Uint64
		errs     atomic.Int64
		firstErr atomic.Pointer[string]
		mu       sync.Mutex
		all      [][]int32
		wg       sync.WaitGroup
	)
	stop := make(chan struct{})
	fail := func(err error) {
		select {
		case <-stop: // the window is over: connections are being closed
			return
		default:
		}
		errs.Add(1)
		s := err.Error()
		firstErr.CompareAndSwap(nil, &s)
	}
	capacity := int(float64(*fps)*window.Seconds()*1.2) + 64
	for i := range *n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]int32, 0, capacity)
			defer func() {
				mu.Lock()
				all = append(all, lat)
				mu.Unlock()
			}()
			if err := client(*target, &on, &bytes, &lat, stop); err != nil {
				fail(err)
			}
		}()
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond) // do not flood the accept queue
		}
	}
	time.Sleep(*warmup)
	fmt.Println("START")
	on.Store(true)
	time.Sleep(*window)
	on.Store(false)
	fmt.Println("END")
	close(stop)
	wg.Wait()
	var lats []int32
	for _, l := range all {
		lats = append(lats, l...)
	}
	slices.Sort(lats)
	pct := func(p float64) float64 {
		if len(lats) == 0 {
			return 0
		}
		return float64(lats[min(len(lats)-1, int(p*float64(len(lats))))]) / 1000
	}
	res := liveResult{P50: pct(0.50), P99: pct(0.99), P999: pct(0.999), Samples: len(lats), Bytes: bytes.Load(), Errors: int(errs.Load())}
	if p := firstErr.Load(); p != nil {
		res.FirstErr = *p
	}
	out, _ := json.Marshal(res)
	fmt.Println("RESULT " + string(out))
	return nil
}

// client reads each message's header, discards the rest and records the
// latency of each video message while on is set, until stop is closed.
func client(target string, on *atomic.Bool, bytes *atomic.Uint64, lat *[]int32, stop <-chan struct{}) error {
	conn, br, err := benchstream.Dial(target, 30*time.Second)
	if err != nil {
		return err
	}
	go func() { <-stop; conn.Close() }()
	var hdr [1 + shmring.HeaderSize]byte
	for {
		op, n, err := benchstream.ReadFrameHeader(br)
		if err != nil {
			return err
		}
		if op == benchstream.OpPing && n <= 125 {
			ping := make([]byte, n)
			if _, err := io.ReadFull(br, ping); err != nil {
				return err
			}
			if err := benchstream.Pong(conn, ping); err != nil {
				return err
			}
			continue
		}
		if op != benchstream.OpBinary || n < uint64(len(hdr)) {
			if _, err := br.Discard(int(n)); err != nil {
				return err
			}
			if op == benchstream.OpClose {
				return fmt.Errorf("server closed the connection")
			}
			continue
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return err
		}
		if _, err := br.Discard(int(n) - len(hdr)); err != nil {
			return err
		}
		if hdr[0] == 0x01 && on.Load() {
			now := time.Now().UnixNano()
			sent := int64(binary.LittleEndian.Uint64(hdr[1:9]))
			*lat = append(*lat, int32((now-sent)/1000))
			bytes.Add(n)
		}
	}
}
