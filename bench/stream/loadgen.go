package main

// The load generator: a child process that holds N cheap clients, records
// delivery latency (receive time minus the frame_id commit time) during the
// measurement window, and measures time to first frame of clients that
// join during the window.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/benchstream"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// loadResult is what the load generator reports on its last line.
type loadResult struct {
	LatUS    []int32 `json:"-"`
	P50, P99 float64
	P999     float64
	// Keyframes and deltas apart: a keyframe is about 7 times a delta,
	// and going to every client at once it sets the tail.
	KeyP50, KeyP99, DeltaP99 float64
	Samples                  int
	Bytes                    uint64
	TTFFms                   []float64
	HSms                     []float64 // of which the TCP connect and WebSocket handshake
	Errors                   int
	FirstErr                 string
	Connected                int
}

type recorder struct {
	on    atomic.Bool
	mu    sync.Mutex
	lats  [][]int32
	bytes atomic.Uint64
	errs  atomic.Int64
	first atomic.Pointer[string]
}

func (r *recorder) fail(err error) {
	r.errs.Add(1)
	s := err.Error()
	r.first.CompareAndSwap(nil, &s)
}

// client-local sample buffer, registered once.
func (r *recorder) buffer(capacity int) *[]int32 {
	b := make([]int32, 0, capacity)
	r.mu.Lock()
	r.lats = append(r.lats, b)
	i := len(r.lats) - 1
	r.mu.Unlock()
	return &r.lats[i]
}

func runLoadgen(args []string) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	kind := fs.String("kind", "ws", "ws or nats")
	target := fs.String("url", "", "ws:// URL")
	n := fs.Int("clients", 100, "clients")
	warmup := fs.Duration("warmup", 3*time.Second, "")
	window := fs.Duration("window", 20*time.Second, "")
	joins := fs.Int("joins", 20, "joining clients during the window (ttff)")
	fps := fs.Int("fps", 60, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var rec recorder
	rec.lats = make([][]int32, 0, *n)
	capacity := int(float64(*fps)*window.Seconds()*1.2) + 64
	// Pre-size the slice of buffers so the pointers stay valid.
	rec.lats = make([][]int32, 0, *n+1)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	connected := make(chan error, *n)
	for i := 0; i < *n; i++ {
		buf := rec.buffer(capacity)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if *kind == "nats" {
				err = natsClient(*target, &rec, buf, stop, connected)
			} else {
				err = wsClient(*target, &rec, buf, stop, connected)
			}
			if err != nil {
				select {
				case <-stop:
				default:
					rec.fail(err)
				}
			}
		}()
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond) // do not flood the accept queue
		}
	}
	ok := 0
	for range *n {
		if err := <-connected; err != nil {
			rec.fail(err)
		} else {
			ok++
		}
	}
	fmt.Println("READY")
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "GO" {
		return errors.New("loadgen: no GO on stdin")
	}
	time.Sleep(*warmup)
	fmt.Println("START")
	rec.on.Store(true)
	var ttff, hss []float64
	var tmu sync.Mutex
	var jwg sync.WaitGroup
	every := *window / time.Duration(*joins+1)
	end := time.After(*window)
	tick := time.NewTicker(every)
loop:
	for {
		select {
		case <-end:
			break loop
		case <-tick.C:
			jwg.Add(1)
			go func() {
				defer jwg.Done()
				d, hs, err := join(*kind, *target)
				if err != nil {
					rec.fail(fmt.Errorf("joining: %w", err))
					return
				}
				tmu.Lock()
				ttff = append(ttff, float64(d)/1e6)
				hss = append(hss, float64(hs)/1e6)
				tmu.Unlock()
			}()
		}
	}
	tick.Stop()
	rec.on.Store(false)
	fmt.Println("END")
	jwg.Wait()
	close(stop)
	wg.Wait()

	var all []int32
	rec.mu.Lock()
	for _, l := range rec.lats {
		all = append(all, l...)
	}
	rec.mu.Unlock()
	res := loadResult{Samples: len(all), Bytes: rec.bytes.Load(), TTFFms: ttff, HSms: hss, Errors: int(rec.errs.Load()), Connected: ok}
	if p := rec.first.Load(); p != nil {
		res.FirstErr = *p
	}
	var keys, deltas []int32
	for i, v := range all {
		if v < 0 { // a keyframe's sample, stored as -(latency+1)
			all[i] = -v - 1
			keys = append(keys, all[i])
		} else {
			deltas = append(deltas, v)
		}
	}
	res.P50, res.P99, res.P999 = percentiles(all)
	res.KeyP50, res.KeyP99, _ = percentiles(keys)
	_, res.DeltaP99, _ = percentiles(deltas)
	out, _ := json.Marshal(res)
	fmt.Println("RESULT " + string(out))
	return nil
}

// sample is one latency sample in microseconds; a keyframe's is stored as
// -(latency+1), so that one slice per client holds both kinds.
func sample(ns int64, flags uint16) int32 {
	us := int32(ns / 1000)
	if flags&shmring.FlagKeyframe != 0 {
		return -us - 1
	}
	return us
}

// wsClient is a cheap WebSocket client: it reads each message's header,
// discards the rest through one reused buffer and records the latency when
// the whole message is in.
func wsClient(target string, rec *recorder, lat *[]int32, stop <-chan struct{}, connected chan<- error) error {
	conn, br, err := benchstream.Dial(target, 30*time.Second)
	connected <- err
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
		if op != 0x2 || n < uint64(len(hdr)) {
			if _, err := br.Discard(int(n)); err != nil {
				return err
			}
			if op == 0x8 {
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
		if rec.on.Load() {
			now := time.Now().UnixNano()
			id := int64(binary.LittleEndian.Uint64(hdr[1:9]))
			*lat = append(*lat, sample(now-id, binary.LittleEndian.Uint16(hdr[1+20:])))
			rec.bytes.Add(n)
		}
	}
}

func natsClient(target string, rec *recorder, lat *[]int32, stop <-chan struct{}, connected chan<- error) error {
	nc, err := nats.Connect(target, nats.NoEcho(), nats.Timeout(30*time.Second), nats.MaxReconnects(0))
	if err != nil {
		connected <- err
		return err
	}
	defer nc.Close()
	_, err = nc.Subscribe(subject, func(m *nats.Msg) {
		if !rec.on.Load() || len(m.Data) < 1+shmring.HeaderSize {
			return
		}
		now := time.Now().UnixNano()
		id := int64(binary.LittleEndian.Uint64(m.Data[1:9]))
		// One subscription goroutine per client: no lock needed.
		*lat = append(*lat, sample(now-id, binary.LittleEndian.Uint16(m.Data[1+20:])))
		rec.bytes.Add(uint64(len(m.Data)))
	})
	if err == nil {
		err = nc.Flush()
	}
	connected <- err
	if err != nil {
		return err
	}
	<-stop
	return nil
}

// join connects one more client and returns the time to its first
// keyframe, and how much of it the connection and handshake took.
func join(kind, target string) (ttff, handshake time.Duration, err error) {
	start := time.Now()
	if kind == "nats" {
		nc, err := nats.Connect(target, nats.NoEcho(), nats.Timeout(30*time.Second))
		if err != nil {
			return 0, 0, err
		}
		defer nc.Close()
		handshake = time.Since(start)
		got := make(chan struct{}, 1)
		_, err = nc.Subscribe(subject, func(m *nats.Msg) {
			if len(m.Data) >= 33 && binary.LittleEndian.Uint16(m.Data[21:23])&shmring.FlagKeyframe != 0 {
				select {
				case got <- struct{}{}:
				default:
				}
			}
		})
		if err != nil {
			return 0, 0, err
		}
		select {
		case <-got:
			return time.Since(start), handshake, nil
		case <-time.After(10 * time.Second):
			return 0, 0, errors.New("no keyframe within 10s")
		}
	}
	conn, br, err := benchstream.Dial(target, 30*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	handshake = time.Since(start)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var hdr [1 + shmring.HeaderSize]byte
	for {
		op, n, err := benchstream.ReadFrameHeader(br)
		if err != nil {
			return 0, 0, err
		}
		if op != 0x2 || n < uint64(len(hdr)) {
			if _, err := br.Discard(int(n)); err != nil {
				return 0, 0, err
			}
			continue
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return 0, 0, err
		}
		if _, err := br.Discard(int(n) - len(hdr)); err != nil {
			return 0, 0, err
		}
		if binary.LittleEndian.Uint16(hdr[21:23])&shmring.FlagKeyframe != 0 {
			return time.Since(start), handshake, nil
		}
	}
}
