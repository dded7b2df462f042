// Package scale holds the live tests of the scale-out: a real 3-node NATS
// cluster (.tools/bin/nats-server processes joined by routes, one with a
// leaf node listener), an origin sdr-caddy that reads a ring written by
// shmring.Writer and publishes it, and edge sdr-caddy processes (one a
// plain cluster client, one whose embedded server is a leaf of the
// cluster) whose WebSocket clients must receive the ring's frames byte for
// byte.
package scale

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// node is one nats-server process of the cluster.
type node struct {
	t                            *testing.T
	name                         string
	port, cluster, leaf, monitor int
	conf                         string
	proc                         *harness.Process
}

// cluster is three nats-server processes with routes between them; the
// last one also accepts leaf node connections. Clients are not told about
// the other nodes (no_advertise), so a client given one node's URL stays
// with that node, and killing it leaves that client disconnected until the
// node is back: the gap is the node's downtime.
type cluster struct{ nodes []*node }

func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{}
	for i := range 3 {
		c.nodes = append(c.nodes, &node{t: t, name: fmt.Sprintf("n%d", i), port: testenv.FreePort(t),
			cluster: testenv.FreePort(t), leaf: testenv.FreePort(t), monitor: testenv.FreePort(t)})
	}
	var routes []string
	for _, n := range c.nodes {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", n.cluster))
	}
	dir := t.TempDir()
	for i, n := range c.nodes {
		leaf := ""
		if i == 2 {
			leaf = fmt.Sprintf("leafnodes { listen: \"127.0.0.1:%d\" }\n", n.leaf)
		}
		conf := fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
http: "127.0.0.1:%d"
cluster {
  name: sdr
  listen: "127.0.0.1:%d"
  no_advertise: true
  routes: [%s]
}
%s`, n.name, n.port, n.monitor, n.cluster, strings.Join(routes, ", "), leaf)
		n.conf = filepath.Join(dir, n.name+".conf")
		if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		n.Start()
		t.Cleanup(n.Kill)
	}
	for _, n := range c.nodes {
		n.waitRoutes(2)
	}
	return c
}

func (n *node) URL() string     { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }
func (n *node) LeafURL() string { return fmt.Sprintf("nats-leaf://127.0.0.1:%d", n.leaf) }

func (n *node) Start() {
	n.t.Helper()
	n.proc = testenv.StartNATSProcess(n.t, "nats-server "+n.name, fmt.Sprintf("127.0.0.1:%d", n.port), 15*time.Second,
		"-c", n.conf)
}

// Kill stops the node at once, as a crash would.
func (n *node) Kill() {
	if n.proc == nil {
		return
	}
	n.proc.Kill()
	n.proc = nil
}

// varz reads a number from the node's /varz monitoring endpoint.
func (n *node) varz(key string) int {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/varz", n.monitor))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, `"`+key+`":`) {
			v, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(strings.TrimPrefix(l, `"`+key+`":`)), ","))
			return v
		}
	}
	return -1
}

func (n *node) waitRoutes(want int) {
	n.t.Helper()
	if !testwait.Until(20*time.Second, func() bool { return n.varz("routes") >= want }) {
		n.t.Fatalf("nats-server %s has %d routes after %s, want %d", n.name, n.varz("routes"), testwait.Timeout(20*time.Second), want)
	}
}

// sim plays the simulator: it writes frames into a ring at a fixed rate, a
// keyframe every gop frames or at once after command.genesis.force_idr,
// and remembers what it wrote so that clients can compare byte for byte.
type sim struct {
	t        *testing.T
	w        *shmring.Writer
	path     string
	period   time.Duration
	gop      int
	keyBytes int
	nc       *nats.Conn

	mu       sync.Mutex
	written  map[uint64][]byte // frame_seq -> the 0x01 message a client must receive
	order    []uint64
	forceKey bool
	count    int // frames written
	idrs     []time.Time
	stop     chan struct{}
	done     chan struct{}
}

func startSim(t *testing.T, natsURL string, fps, gop, keyBytes int) *sim {
	t.Helper()
	path := filepath.Join(t.TempDir(), "frames")
	w, err := shmring.CreateWriter(path, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{t: t, w: w, path: path, period: time.Second / time.Duration(fps), gop: gop, keyBytes: keyBytes,
		written: map[uint64][]byte{}, stop: make(chan struct{}), done: make(chan struct{})}
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	s.nc = nc
	if _, err := nc.Subscribe("command.genesis.force_idr", func(*nats.Msg) {
		s.mu.Lock()
		s.forceKey = true
		s.idrs = append(s.idrs, time.Now())
		s.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	go s.run()
	t.Cleanup(func() {
		close(s.stop)
		<-s.done
		nc.Close()
		_ = w.Close()
	})
	return s
}

func (s *sim) run() {
	defer close(s.done)
	tk := time.NewTicker(s.period)
	defer tk.Stop()
	for i := 0; ; i++ {
		s.mu.Lock()
		key := i%s.gop == 0 || s.forceKey
		s.forceKey = false
		s.mu.Unlock()
		n := 2000 + i%7*1500
		var h shmring.Header
		h.Codec = shmring.CodecH264
		if key {
			h.Flags = shmring.FlagKeyframe
			n = s.keyBytes
		}
		payload := make([]byte, n)
		_, _ = rand.Read(payload)
		stored, err := s.w.WriteFrame(h, payload)
		if err != nil {
			s.t.Errorf("writing frame: %v", err)
			return
		}
		s.mu.Lock()
		s.count++
		s.written[stored.FrameSeq] = wire.AppendVideo(nil, stored, payload)
		s.order = append(s.order, stored.FrameSeq)
		if len(s.order) > 600 {
			delete(s.written, s.order[0])
			s.order = s.order[1:]
		}
		s.mu.Unlock()
		select {
		case <-s.stop:
			return
		case <-tk.C:
		}
	}
}

// expected returns the message written with frame_seq seq, if still kept.
// A client can receive a frame before the writer's goroutine has recorded
// it: a frame newer than the last recorded one is waited for.
func (s *sim) expected(seq uint64) ([]byte, bool) {
	var (
		m  []byte
		ok bool
	)
	testwait.Until(10*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		m, ok = s.written[seq]
		newer := len(s.order) == 0 || seq > s.order[len(s.order)-1]
		return ok || !newer
	})
	return m, ok
}

// frames returns how many frames the sim has written.
func (s *sim) frames() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// idrsSince counts the force_idr requests received since from.
func (s *sim) idrsSince(from time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, at := range s.idrs {
		if !at.Before(from) {
			n++
		}
	}
	return n
}

// video is one frame as a client received it.
type video struct {
	seq  uint64
	key  bool
	at   time.Time
	same bool // byte-identical to what the sim wrote
}

// viewer is a /stream/ws client that checks every video message against
// what the sim wrote. With redial it reconnects after the connection ends.
type viewer struct {
	t      *testing.T
	url    string
	sim    *sim
	redial bool

	mu       sync.Mutex
	videos   []video
	sessions []int // index into videos where each connection started
	ended    int   // connections that ended
	unknown  int   // frames no longer kept by the sim
	stop     chan struct{}
	done     chan struct{}
	conn     *websocket.Conn
}

func watch(t *testing.T, url string, s *sim, redial bool) *viewer {
	t.Helper()
	v := &viewer{t: t, url: url, sim: s, redial: redial, stop: make(chan struct{}), done: make(chan struct{})}
	c, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dialing %s: %v (%v)", url, err, resp)
	}
	go v.run(c)
	t.Cleanup(v.Close)
	return v
}

func (v *viewer) Close() {
	select {
	case <-v.stop:
		return
	default:
	}
	close(v.stop)
	v.mu.Lock()
	if v.conn != nil {
		v.conn.Close()
	}
	v.mu.Unlock()
	<-v.done
}

func (v *viewer) run(c *websocket.Conn) {
	defer close(v.done)
	for {
		v.mu.Lock()
		v.conn = c
		v.sessions = append(v.sessions, len(v.videos))
		v.mu.Unlock()
		v.read(c)
		c.Close()
		v.mu.Lock()
		v.ended++
		v.mu.Unlock()
		if !v.redial {
			return
		}
		for {
			select {
			case <-v.stop:
				return
			case <-time.After(100 * time.Millisecond): // the subject: a client that redials every 100 ms
			}
			var err error
			c, _, err = websocket.DefaultDialer.Dial(v.url, nil)
			if err == nil {
				break
			}
		}
	}
}

func (v *viewer) read(c *websocket.Conn) {
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if len(msg) == 0 || msg[0] != wire.TypeVideo {
			continue
		}
		h, _, err := wire.ParseVideo(msg)
		if err != nil {
			v.t.Errorf("client of %s: %v", v.url, err)
			return
		}
		want, ok := v.sim.expected(h.FrameSeq)
		v.mu.Lock()
		if !ok {
			v.unknown++
		}
		v.videos = append(v.videos, video{seq: h.FrameSeq, key: h.Keyframe(), at: time.Now(), same: ok && bytes.Equal(msg, want)})
		v.mu.Unlock()
	}
}

// snapshot returns what the viewer received so far.
func (v *viewer) snapshot() ([]video, []int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]video(nil), v.videos...), append([]int(nil), v.sessions...)
}

// waitFrames waits until the viewer has n frames received after from,
// failing the test after testwait.Timeout(timeout).
func (v *viewer) waitFrames(n int, from time.Time, timeout time.Duration) {
	v.t.Helper()
	got := 0
	if !testwait.Until(timeout, func() bool {
		got = 0
		vs, _ := v.snapshot()
		for _, f := range vs {
			if !f.at.Before(from) {
				got++
			}
		}
		return got >= n
	}) {
		v.t.Fatalf("client of %s: %d frames since %s, want %d within %s", v.url, got, from.Format("15:04:05.000"), n, testwait.Timeout(timeout))
	}
}

// waitEnded waits until n of the viewer's connections have ended.
func (v *viewer) waitEnded(n int) {
	v.t.Helper()
	testwait.For(v.t, fmt.Sprintf("%d connections of a client of %s to end", n, v.url), func() bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.ended >= n
	})
}

// check verifies the viewer's invariants: every frame byte-identical to
// what the sim wrote, every connection starts at a keyframe, and after any
// jump in frame_seq the first frame is a keyframe (nothing undecodable
// reached the client). It returns the number of jumps.
func (v *viewer) check() int {
	v.t.Helper()
	vs, sessions := v.snapshot()
	starts := map[int]bool{}
	for _, s := range sessions {
		starts[s] = true
	}
	jumps := 0
	for i, f := range vs {
		if !f.same {
			v.t.Errorf("client of %s: frame_seq %d differs from what the ring writer wrote (or is no longer known)", v.url, f.seq)
		}
		switch {
		case starts[i]:
			if !f.key {
				v.t.Errorf("client of %s: a connection started at frame_seq %d, not a keyframe", v.url, f.seq)
			}
		case f.seq != vs[i-1].seq+1:
			jumps++
			if !f.key {
				v.t.Errorf("client of %s: frame_seq %d -> %d, and the frame after the jump is not a keyframe", v.url, vs[i-1].seq, f.seq)
			}
		}
	}
	return jumps
}

// caddy is a running sdr-caddy with one site serving /stream/ws.
type caddy struct {
	*testenv.Caddy
	ws, base string
	port     int
	file     string
}

func caddyfile(port int, natsOpts, source string) string {
	return testenv.Caddyfile(port, "\tsdr_nats {\n"+natsOpts+"\n\t}", `	handle /stream/ws {
		sdr_stream front {
`+source+`
		}
	}`)
}

func startCaddy(t *testing.T, file string, port int) *caddy {
	t.Helper()
	base := fmt.Sprintf("127.0.0.1:%d", port)
	c := testenv.StartCaddy(t, file, nil, func() error {
		resp, err := http.Get("http://" + base + "/stream/ws")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("health: %s", resp.Status)
		}
		return nil
	})
	return &caddy{Caddy: c, ws: "ws://" + base + "/stream/ws", base: "http://" + base, port: port, file: file}
}

// metric reads one sample from the admin endpoint's Prometheus metrics; 0
// when absent.
func metric(t *testing.T, admin, sample string) float64 {
	t.Helper()
	samples, err := testenv.Metrics(admin)
	if err != nil {
		t.Fatalf("reading metrics: %v", err)
	}
	rest, ok := samples[sample]
	if !ok {
		return 0
	}
	v, err := strconv.ParseFloat(rest, 64)
	if err != nil {
		t.Fatalf("metric %s: %q", sample, rest)
	}
	return v
}

// waitMetric waits until ok holds for the sample's value, failing the test
// after testwait.Timeout(timeout).
func waitMetric(t *testing.T, admin, sample string, ok func(float64) bool, timeout time.Duration) float64 {
	t.Helper()
	var v float64
	if !testwait.Until(timeout, func() bool { v = metric(t, admin, sample); return ok(v) }) {
		t.Fatalf("metric %s = %g after %s", sample, v, testwait.Timeout(timeout))
	}
	return v
}
