package benchstream

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Load is what a load generator does: Clients WebSocket clients spread
// round robin over URLs, reading a stream of FPS frames a second; it
// measures during Window, after Warmup.
type Load struct {
	URLs           []string
	Clients        int
	Warmup, Window time.Duration
	FPS            int
}

// LoadResult is what a load generator measured over its window: the
// delivery latency of the video messages (when the whole message was read
// minus the frame_id commit time, Unix ns), in ms, how many there were,
// their bytes, and the clients' errors.
type LoadResult struct {
	P50, P99, P999 float64
	Samples        int
	Bytes          uint64
	Errors         int
	FirstErr       string
}

// Lines the load generator prints around its window and after it.
const (
	lineStart  = "START"
	lineEnd    = "END"
	lineResult = "RESULT "
)

// Args is the command line RunLoadgen reads back into l.
func (l Load) Args() []string {
	return []string{"-urls", strings.Join(l.URLs, ","), "-clients", strconv.Itoa(l.Clients),
		"-warmup", l.Warmup.String(), "-window", l.Window.String(), "-fps", strconv.Itoa(l.FPS)}
}

// RunLoadgen is a load generator child's main: it reads a Load from args
// (Load.Args), runs it and prints START and END around the window, then
// RESULT and the LoadResult as JSON, to w.
func RunLoadgen(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	urls := fs.String("urls", "", "comma-separated ws:// URLs")
	var l Load
	fs.IntVar(&l.Clients, "clients", 100, "clients")
	fs.DurationVar(&l.Warmup, "warmup", 3*time.Second, "warm-up before the window")
	fs.DurationVar(&l.Window, "window", 10*time.Second, "measurement window")
	fs.IntVar(&l.FPS, "fps", 60, "frames per second of the stream (sizes the latency buffers)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *urls == "" || l.Clients < 1 || l.FPS < 1 || l.Window <= 0 {
		return errors.New("loadgen: -urls, -clients, -fps and -window must be given and positive")
	}
	l.URLs = strings.Split(*urls, ",")
	res := l.Run(func(line string) { fmt.Fprintln(w, line) })
	out, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, lineResult+string(out))
	return err
}

// Run holds l's clients until the window ends and returns their figures;
// mark is called with START and END at the window's edges.
func (l Load) Run(mark func(string)) LoadResult {
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
	capacity := int(float64(l.FPS)*l.Window.Seconds()*1.2) + 64
	for i := range l.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]int32, 0, capacity)
			defer func() {
				mu.Lock()
				all = append(all, lat)
				mu.Unlock()
			}()
			if err := client(l.URLs[i%len(l.URLs)], &on, &bytes, &lat, stop); err != nil {
				fail(err)
			}
		}()
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond) // do not flood the accept queue
		}
	}
	time.Sleep(l.Warmup)
	mark(lineStart)
	on.Store(true)
	time.Sleep(l.Window)
	on.Store(false)
	mark(lineEnd)
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
	res := LoadResult{P50: pct(0.50), P99: pct(0.99), P999: pct(0.999), Samples: len(lats), Bytes: bytes.Load(), Errors: int(errs.Load())}
	if p := firstErr.Load(); p != nil {
		res.FirstErr = *p
	}
	return res
}

// headerSize is the frame header's size (frame.HeaderSize, which this
// package does not import).
const headerSize = 32

// client reads each message's header, discards the rest and records the
// latency of each video message while on is set, until stop is closed.
func client(target string, on *atomic.Bool, bytes *atomic.Uint64, lat *[]int32, stop <-chan struct{}) error {
	conn, br, err := Dial(target, 30*time.Second)
	if err != nil {
		return err
	}
	go func() { <-stop; conn.Close() }()
	return readStream(conn, br, on, bytes, lat)
}

func readStream(conn net.Conn, br *bufio.Reader, on *atomic.Bool, bytes *atomic.Uint64, lat *[]int32) error {
	var hdr [1 + headerSize]byte
	for {
		op, n, err := ReadFrameHeader(br)
		if err != nil {
			return err
		}
		if op == OpPing && n <= 125 {
			ping := make([]byte, n)
			if _, err := io.ReadFull(br, ping); err != nil {
				return err
			}
			if err := Pong(conn, ping); err != nil {
				return err
			}
			continue
		}
		if op != OpBinary || n < uint64(len(hdr)) {
			if _, err := br.Discard(int(n)); err != nil {
				return err
			}
			if op == OpClose {
				return errors.New("server closed the connection")
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

// Measure runs cmd, a load generator child (RunLoadgen), and calls start
// and end (when not nil) as it reaches the window's edges; it returns the
// child's result, and ends the child.
func Measure(cmd *exec.Cmd, start, end func() error) (LoadResult, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return LoadResult{}, err
	}
	if err := cmd.Start(); err != nil {
		return LoadResult{}, fmt.Errorf("starting the load generator: %w", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var fn func() error
		switch {
		case line == lineStart:
			fn = start
		case line == lineEnd:
			fn = end
		case strings.HasPrefix(line, lineResult):
			var r LoadResult
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, lineResult)), &r); err != nil {
				return LoadResult{}, fmt.Errorf("load generator result: %w", err)
			}
			return r, nil
		}
		if fn != nil {
			if err := fn(); err != nil {
				return LoadResult{}, err
			}
		}
	}
	return LoadResult{}, errors.New("load generator ended without a result")
}
