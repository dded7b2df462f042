package main

// The load generator: a child process that holds N clients, spread round
// robin over the URLs, and records delivery latency (receive time of the
// whole message minus the frame_id commit time) during the window.

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/shmring"
)

func runLoadgen(args []string) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	urls := fs.String("urls", "", "comma-separated ws:// URLs")
	n := fs.Int("clients", 100, "clients")
	warmup := fs.Duration("warmup", 3*time.Second, "")
	window := fs.Duration("window", 10*time.Second, "")
	fps := fs.Int("fps", 60, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	targets := strings.Split(*urls, ",")
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
	var conns []*websocket.Conn
	for i := range *n {
		c, _, err := websocket.DefaultDialer.Dial(targets[i%len(targets)], nil)
		if err != nil {
			fail(fmt.Errorf("dialing %s: %w", targets[i%len(targets)], err))
			continue
		}
		conns = append(conns, c)
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]int32, 0, capacity)
			defer func() {
				mu.Lock()
				all = append(all, lat)
				mu.Unlock()
			}()
			buf := make([]byte, 32<<10)
			var hdr [1 + shmring.HeaderSize]byte
			for {
				_, r, err := c.NextReader()
				if err != nil {
					fail(err)
					return
				}
				if _, err := io.ReadFull(r, hdr[:]); err != nil {
					fail(err)
					return
				}
				m, err := io.CopyBuffer(io.Discard, r, buf)
				if err != nil {
					fail(err)
					return
				}
				if hdr[0] != 0x01 || !on.Load() {
					continue
				}
				now := time.Now().UnixNano()
				sent := int64(binary.LittleEndian.Uint64(hdr[1:9]))
				lat = append(lat, int32((now-sent)/1000))
				bytes.Add(uint64(m) + uint64(len(hdr)))
			}
		}()
	}
	time.Sleep(*warmup)
	fmt.Println("START")
	on.Store(true)
	time.Sleep(*window)
	on.Store(false)
	fmt.Println("END")
	close(stop)
	for _, c := range conns {
		c.Close()
	}
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
	res := result{P50: pct(0.50), P99: pct(0.99), P999: pct(0.999), Samples: len(lats), Bytes: bytes.Load(), Errors: int(errs.Load())}
	if p := firstErr.Load(); p != nil {
		res.FirstErr = *p
	}
	out, _ := json.Marshal(res)
	fmt.Println("RESULT " + string(out))
	return nil
}
