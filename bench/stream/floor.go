package main

// The floor: the least a WebSocket fan-out of this stream can cost on this
// machine. A child process (this binary re-executed) accepts the clients,
// completes their WebSocket handshake, and from then on writes every frame
// to every client with one writev, from memory: no hub, no Caddy, no ring.
// The frames are those the bench commits to the ring, with the same header
// (frame_id is the commit time the bench stamped): the bench hands each
// header to the floor through a pipe as it commits the frame, and the floor
// frames it once with a payload of the same size held in memory. Its CPU
// and the clients' latency are then what the kernel and the load generator
// cost on this machine, the physical limit of a WebSocket fan-out here.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/sdr-os/sdr-caddy/internal/hub"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
)

const floorEnv = "SDR_STREAM_BENCH_FLOOR"

// floorCountersPath answers the floor's counters as a JSON object: frames
// (written to clients), partial (writes the socket did not take whole),
// dropped (clients gone).
const floorCountersPath = "/floor/counters"

// floorMaxRest is how many bytes a client's socket may leave unwritten
// (carried over to the next frame's writev) before the floor drops it.
const floorMaxRest = 64 << 20

// runFloor serves /stream/ws on -listen and streams the frames whose
// headers come on stdin, 32 bytes each, until stdin ends.
func runFloor(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve /stream/ws on")
	ring := fs.String("ring", "", "read the frames from this ring with the ring reader instead of stdin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	f := newFloor(runtime.GOMAXPROCS(0))
	mux := http.NewServeMux()
	mux.HandleFunc("/stream/health", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/stream/ws", func(w http.ResponseWriter, r *http.Request) {
		conn, err := hub.Upgrade(w, r)
		if err != nil {
			return
		}
		if err := f.join(conn); err != nil {
			log.Printf("floor: %v", err)
			conn.Close()
		}
	})
	mux.HandleFunc(floorCountersPath, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]uint64{
			"frames": f.frames.Load(), "partial": f.partial.Load(), "dropped": f.dropped.Load()})
	})
	go func() { _ = http.Serve(ln, mux) }()
	if *ring != "" {
		return f.produceRing(*ring)
	}
	// Read the pipe through the runtime's poller, as sdr_stream's ring
	// reader sleeps on a timerfd: a thread blocked in read(2) would keep
	// the runtime's monitor polling every 20 µs to take its processor back.
	if err := syscall.SetNonblock(0, true); err != nil {
		return fmt.Errorf("floor: stdin: %w", err)
	}
	return f.produce(os.NewFile(0, "stdin"))
}

// floor is the fan-out: one writer goroutine per CPU, each with its share
// of the clients, like the hub's send round.
type floor struct {
	writers []*floorWriter
	next    atomic.Uint64 // round-robin of joining clients over the writers
	key     []byte
	delta   []byte
	gop     [][]byte // the frames since the last keyframe, for joining clients

	frames  atomic.Uint64 // frames written to clients
	partial atomic.Uint64 // writes the socket did not take whole
	dropped atomic.Uint64 // clients gone (closed, or too far behind)
}

// floorFrame is one frame, framed once for every client, with the frames
// of its GOP before it (for clients that join at it).
type floorFrame struct {
	wire []byte
	key  bool
	gop  [][]byte // nil for a keyframe; nil before the first keyframe
}

func newFloor(n int) *floor {
	f := &floor{key: make([]byte, keyBytes), delta: make([]byte, deltaBytes)}
	_, _ = rand.Read(f.key)
	_, _ = rand.Read(f.delta)
	for range n {
		w := &floorWriter{f: f, frames: make(chan *floorFrame, 256)}
		f.writers = append(f.writers, w)
		go w.run()
	}
	return f
}

// join gives a connection whose handshake is done to one of the writers.
func (f *floor) join(conn net.Conn) error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return fmt.Errorf("connection %T has no descriptor", conn)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("descriptor of %s: %w", conn.RemoteAddr(), err)
	}
	var fd uintptr
	if err := rc.Control(func(d uintptr) { fd = d }); err != nil {
		return fmt.Errorf("descriptor of %s: %w", conn.RemoteAddr(), err)
	}
	w := f.writers[f.next.Add(1)%uint64(len(f.writers))]
	w.mu.Lock()
	w.joining = append(w.joining, &floorClient{conn: conn, fd: fd})
	w.mu.Unlock()
	return nil
}

// produce reads the frame headers the bench commits and hands each frame
// to every writer.
func (f *floor) produce(in io.Reader) error {
	br := bufio.NewReader(in)
	var hb [shmring.HeaderSize]byte
	for {
		if _, err := io.ReadFull(br, hb[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("floor: reading a frame header: %w", err)
		}
		h, err := shmring.ParseHeader(hb[:])
		if err != nil {
			return fmt.Errorf("floor: %w", err)
		}
		payload := f.delta
		if h.Keyframe() {
			payload = f.key
		}
		f.publish(h, payload[:h.Size])
	}
}

// produceRing reads the frames from the ring at path with sdr_stream's
// ring reader instead (the floor with the ring reader's cost added: the
// system ringfloor), until the process is stopped.
func (f *floor) produceRing(path string) error {
	r, err := shmring.NewReader(shmring.ReaderConfig{Path: path, Size: ringSize})
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	r.Watch() // sdr_stream watches its ring while clients are connected
	return r.Run(context.Background(), func(fr shmring.Frame) { f.publish(fr.Header, fr.Payload) })
}

// publish frames one frame once, as the hub does, and hands it to every
// writer.
func (f *floor) publish(h shmring.Header, payload []byte) {
	fr := &floorFrame{key: h.Keyframe(), wire: wire.VideoFrame(h, payload)}
	if fr.key {
		f.gop = [][]byte{fr.wire}
	} else if f.gop != nil {
		fr.gop = f.gop // appends below never touch what it holds
		f.gop = append(f.gop, fr.wire)
	}
	for _, w := range f.writers {
		w.frames <- fr
	}
}

// floorWriter writes each frame to its clients, one writev each.
type floorWriter struct {
	f       *floor
	frames  chan *floorFrame
	mu      sync.Mutex
	joining []*floorClient
	clients []*floorClient
}

type floorClient struct {
	conn net.Conn // kept so that the descriptor stays open
	fd   uintptr
	rest [][]byte // what the socket did not take of the last write
	iov  []syscall.Iovec
}

func (w *floorWriter) run() {
	var bufs [][]byte
	for fr := range w.frames {
		w.admit(fr)
		live := w.clients[:0]
		for _, c := range w.clients {
			bufs = append(append(bufs[:0], c.rest...), fr.wire)
			if c.write(w.f, bufs) {
				live = append(live, c)
			} else {
				w.f.dropped.Add(1)
				c.conn.Close()
			}
		}
		clear(w.clients[len(live):])
		w.clients = live
		w.f.frames.Add(uint64(len(live)))
		clear(bufs)
	}
}

// admit adds the joining clients at fr: from fr when it is a keyframe,
// from the GOP's keyframe before it otherwise; a client that joins before
// the first keyframe waits for it.
func (w *floorWriter) admit(fr *floorFrame) {
	if !fr.key && fr.gop == nil {
		return
	}
	w.mu.Lock()
	js := w.joining
	w.joining = nil
	w.mu.Unlock()
	for _, c := range js {
		if !fr.key {
			c.rest = fr.gop
		}
		w.clients = append(w.clients, c)
	}
}

// write does one writev of bufs and keeps what the socket did not take
// for the next one; false: the client is gone or too far behind.
func (c *floorClient) write(f *floor, bufs [][]byte) bool {
	c.iov = c.iov[:0]
	total := 0
	for _, b := range bufs {
		v := syscall.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		c.iov = append(c.iov, v)
		total += len(b)
	}
	var n int
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, c.fd, uintptr(unsafe.Pointer(&c.iov[0])), uintptr(len(c.iov)))
		switch e {
		case 0:
			n = int(r)
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
		default:
			return false
		}
		break
	}
	clear(c.iov)
	c.rest = nil // it may be a GOP shared with other clients: never appended to
	if n == total {
		return true
	}
	f.partial.Add(1)
	var rest [][]byte
	left := 0
	for _, b := range bufs {
		if n >= len(b) {
			n -= len(b)
			continue
		}
		rest = append(rest, b[n:])
		left += len(b) - n
		n = 0
	}
	c.rest = rest
	return left <= floorMaxRest
}
