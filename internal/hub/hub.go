// Package hub fans one stream of encoded frames out to many WebSocket
// clients. It is the core of sdr_stream and imports nothing from Caddy.
//
// Every frame is framed once for every client and appended to a bounded
// log: the log holds the head of the frame's WebSocket message (at most
// wire.MaxVideoFrameHead bytes) and the frame's payload as the source handed
// it on, shared with the source's own GOP and never copied; a write sends
// the two with the same writev. The log keeps the current GOP (the latest
// keyframe and the deltas since) so that a joining client starts decoding
// at once, plus the last Capacity frames so that a client a little behind
// can catch up.
// Each client holds a Cursor into the log. After each frame a send round
// writes to every client what lies between its cursor and the head, with
// one non-blocking writev per client; a client whose socket is full is
// finished by its own goroutine, batched, with a write deadline. A client
// that falls further behind than Capacity frames skips to the newest
// keyframe (or waits for the next one), and the skip is counted; with
// MaxLag set, so does one whose next frame is older than MaxLag. The
// producer never waits for a client.
package hub

import (
	"bytes"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdr-os/sdr-caddy/internal/cow"
	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/keyreq"
	"github.com/sdr-os/sdr-caddy/internal/source"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// Defaults, the old transport-server's values where it had one.
const (
	DefaultCapacity    = 64                     // SDR_BROADCAST_CAPACITY
	DefaultIDRCoalesce = keyreq.DefaultInterval // SDR_IDR_COALESCE_MS
	// DefaultTelemetryHold is how long queued telemetry waits for a frame
	// to share its write with: a frame interval at 50 fps.
	DefaultTelemetryHold = 20 * time.Millisecond
	// DefaultJoinMaxAge is the oldest frame a joining client is sent: the
	// safety gate's default hold (sdr_nats gate hold, SDR_VIDEO_GATE_HOLD_MS).
	DefaultJoinMaxAge = time.Second
	// DefaultJoinMaxReplay and DefaultJoinMaxReplayBytes bound the GOP
	// replayed to a joining client: about what a browser decoder takes at
	// once without dropping frames.
	DefaultJoinMaxReplay      = time.Second
	DefaultJoinMaxReplayBytes = 2 << 20
)

// Config sets up a Hub. Zero fields take the defaults above.
type Config struct {
	// Capacity is how many frames a client may fall behind the head before
	// it skips to a keyframe.
	Capacity int
	// MaxLag, when positive, bounds the age of the frames a client is sent
	// by their arrival (Entry.Arrived): when the next frame for a client
	// is older than MaxLag and a newer keyframe is in the log, the client
	// skips to the newest keyframe; without a newer keyframe, when that
	// frame is a live delta, the client drops the rest of the GOP and
	// waits for the next keyframe (which is requested). Either counts as a
	// lag skip like one by Capacity. The newest keyframe is sent however
	// old, and so is the GOP a joining client catches up through. Zero: no
	// age limit, only Capacity.
	MaxLag time.Duration
	// MaxGOPBytes bounds the current GOP kept for joining clients
	// (default source.DefaultMaxGOPBytes, the bound of the source's GOP). A
	// GOP that grows beyond it is dropped, and joining clients wait for the
	// next keyframe.
	MaxGOPBytes int
	// IDRCoalesce is the shortest interval between two keyframe requests
	// sent to the producer.
	IDRCoalesce time.Duration
	// TelemetryHold is the longest time a message given to Broadcast
	// waits for the next frame, so that it reaches each client in the same
	// write as the frame instead of one of its own. Negative: none,
	// Broadcast starts a send round at once.
	TelemetryHold time.Duration
	// JoinMaxAge is the oldest a frame may be, by the time the source read
	// it, to be sent to a joining client: when the kept keyframe is older
	// (the writer stopped, or the GOP is long), the client waits for the
	// next keyframe, which is requested.
	JoinMaxAge time.Duration
	// JoinMaxReplay bounds the GOP a joining client is replayed at once, by
	// the arrival times of its first and last frames, and JoinMaxReplayBytes
	// by its bytes: an intra-refresh stream has one keyframe per writer run,
	// and replaying seconds of it in one burst makes a browser's decoder
	// drop frames. A longer GOP is not replayed: the client waits for the
	// next keyframe, which is requested.
	JoinMaxReplay      time.Duration
	JoinMaxReplayBytes int
	// Logger receives the hub's logs; nil discards them.
	Logger *slog.Logger
	// Metrics receives the hub's counters; nil fields are replaced by
	// unregistered collectors.
	Metrics Metrics
}

// Metrics are the collectors a hub updates, already bound to its stream's
// labels.
type Metrics struct {
	Clients          prometheus.Gauge
	FramesIn         prometheus.Counter
	FramesOut        prometheus.Counter
	BytesOut         prometheus.Counter
	LagSkips         prometheus.Counter
	KeyframeWaits    prometheus.Counter
	KeyframeTimeouts prometheus.Counter
	IDRRequests      prometheus.Counter // requests sent to the producer, after coalescing
	MessagesIgnored  prometheus.Counter // client messages of unknown or unsupported type
	TelemetryDropped prometheus.Counter // telemetry and replies dropped for a full client queue
	Handovers        prometheus.Counter // full sockets the send round left to a client's goroutine
	Delivery         prometheus.Observer
	// Closes counts clients closed by a limit, by the label "reason":
	// fragments, frame_rate (wire.LimitError) and ping_timeout.
	Closes *prometheus.CounterVec
}

func (m *Metrics) fill() {
	c := func(p *prometheus.Counter) {
		if *p == nil {
			*p = prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"})
		}
	}
	if m.Clients == nil {
		m.Clients = prometheus.NewGauge(prometheus.GaugeOpts{Name: "unregistered"})
	}
	for _, p := range []*prometheus.Counter{&m.FramesIn, &m.FramesOut, &m.BytesOut, &m.LagSkips,
		&m.KeyframeWaits, &m.KeyframeTimeouts, &m.IDRRequests, &m.MessagesIgnored, &m.TelemetryDropped, &m.Handovers} {
		c(p)
	}
	if m.Delivery == nil {
		m.Delivery = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "unregistered"})
	}
	if m.Closes == nil {
		m.Closes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "unregistered"}, []string{"reason"})
	}
}

// Entry is one frame in the log, framed once for every client: the
// complete WebSocket frame carrying its 0x01 message is Head followed by
// Body.
type Entry struct {
	Seq      uint64    // position in the hub's log
	Keyframe bool      // the frame is a KEYFRAME
	Arrived  time.Time // when the source read the frame
	// Head is the WebSocket frame header, the type byte and the frame
	// header (wire.AppendVideoFrameHead), in head.
	Head []byte
	// Body is the frame's payload: the source's own bytes, which the
	// source's GOP and its other subscribers share (frame.Frame's payload
	// is never modified once handed on).
	Body []byte
	head [wire.MaxVideoFrameHead]byte
}

// Size is the length of the entry's WebSocket frame: what a write of it
// sends, and what it counts for in the GOP's and a write's byte bounds.
func (e *Entry) Size() int { return len(e.Head) + len(e.Body) }

// Hub is the fan-out of one stream.
//
// After each frame (and when held telemetry is due) a send round visits
// every client: a few worker goroutines, one per CPU, each take a share of
// the clients and write to each what waits for it with one non-blocking
// writev, so that no goroutine per client wakes for a frame. A client
// whose socket is full, or that has no socket of its own, is handed to its
// own goroutine (see Client).
type Hub struct {
	cfg Config
	log *slog.Logger
	m   Metrics

	mu       sync.RWMutex
	entries  []*Entry // entries[i].Seq == start+i
	start    uint64
	head     uint64 // Seq of the next entry
	key      uint64 // Seq of the latest keyframe a joining client may start at
	hasKey   bool
	gopBytes int
	closed   bool

	// The send round.
	regMu     sync.Mutex
	members   cow.List[*Client] // the clients a round visits
	workers   []chan struct{}   // one wake-up channel per worker
	workDone  chan struct{}     // closed by Close: the workers end
	rounds    atomic.Uint64
	holdTimer *time.Timer // the round for held telemetry, when no frame comes first
	holdArmed bool

	// Broadcast telemetry: what came since the last round, and the batches
	// sealed by the rounds, which each client takes from by its own cursor.
	tmu      sync.Mutex
	tpending [][]byte
	tlog     atomic.Pointer[telemetryLog]

	requester atomic.Pointer[requesterBox]
	idr       *keyreq.Coalescer

	clients      atomic.Int64
	framesIn     atomic.Uint64
	bytesIn      atomic.Uint64
	lagTotal     atomic.Uint64
	keyWaits     atomic.Uint64
	keyTimeouts  atomic.Uint64
	pingTimeouts atomic.Uint64
	limitCloses  atomic.Uint64
	idrAsked     atomic.Uint64
	idrSent      atomic.Uint64
	framesOut    atomic.Uint64
	bytesOut     atomic.Uint64
	writes       atomic.Uint64
	direct       atomic.Uint64
	handovers    atomic.Uint64
	ignored      atomic.Uint64
	telemDropped atomic.Uint64
}

type requesterBox struct{ r frame.KeyframeRequester }

// New returns an empty hub.
func New(cfg Config) *Hub {
	if cfg.Capacity <= 0 {
		cfg.Capacity = DefaultCapacity
	}
	if cfg.MaxGOPBytes <= 0 {
		cfg.MaxGOPBytes = source.DefaultMaxGOPBytes
	}
	if cfg.IDRCoalesce <= 0 {
		cfg.IDRCoalesce = DefaultIDRCoalesce
	}
	if cfg.JoinMaxAge <= 0 {
		cfg.JoinMaxAge = DefaultJoinMaxAge
	}
	if cfg.JoinMaxReplay <= 0 {
		cfg.JoinMaxReplay = DefaultJoinMaxReplay
	}
	if cfg.JoinMaxReplayBytes <= 0 {
		cfg.JoinMaxReplayBytes = DefaultJoinMaxReplayBytes
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if cfg.TelemetryHold == 0 {
		cfg.TelemetryHold = DefaultTelemetryHold
	}
	cfg.Metrics.fill()
	h := &Hub{cfg: cfg, log: lg, m: cfg.Metrics, workDone: make(chan struct{})}
	h.idr = keyreq.New(cfg.IDRCoalesce, h.sendKeyframeRequest)
	h.tlog.Store(&telemetryLog{})
	return h
}

// SetKeyframeRequester sets where coalesced keyframe requests go (an
// in-process encoder or the NATS relay); nil counts them only.
func (h *Hub) SetKeyframeRequester(r frame.KeyframeRequester) {
	h.requester.Store(&requesterBox{r})
}

// Publish appends a frame to the log and starts a send round. It never waits
// for a client. The log keeps f.Payload itself, uncopied, for as long as the
// frame is in it: like every receiver of a frame.Frame, the caller must not
// modify the payload afterwards.
func (h *Hub) Publish(f frame.Frame) {
	e := &Entry{
		Keyframe: f.Header.Keyframe(),
		Body:     f.Payload,
		Arrived:  f.Arrived,
	}
	e.Head = wire.AppendVideoFrameHead(e.head[:0], f.Header, len(f.Payload))
	if e.Arrived.IsZero() {
		e.Arrived = time.Now()
	}
	h.framesIn.Add(1)
	h.bytesIn.Add(uint64(len(f.Payload)))
	h.m.FramesIn.Inc()

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	e.Seq = h.head
	h.head++
	h.entries = append(h.entries, e)
	// A delta after a gap (f.Discontinuity: the ring reader missed frames)
	// stays in the GOP: connected clients get it, as the reader's keyframe
	// gating chose, and a joining client still starts at the kept keyframe,
	// a picture at once. The keyframe request for the gap came with the
	// source's Break, when the gap was detected. After a writer restart the
	// GOP was dropped (Break) and the ring source delivers nothing before
	// the new run's keyframe.
	switch {
	case e.Keyframe:
		h.key, h.hasKey, h.gopBytes = e.Seq, true, e.Size()
	case h.hasKey:
		h.gopBytes += e.Size()
		if h.gopBytes > h.cfg.MaxGOPBytes {
			h.hasKey = false
			h.log.Warn("GOP larger than the log keeps; joining clients wait for the next keyframe",
				"max_gop_bytes", h.cfg.MaxGOPBytes)
		}
	}
	h.trimLocked()
	h.mu.Unlock()
	h.round()
}

// trimLocked drops entries that neither belong to the current GOP nor lie
// within Capacity of the head.
func (h *Hub) trimLocked() {
	keep := uint64(0)
	if h.head > uint64(h.cfg.Capacity) {
		keep = h.head - uint64(h.cfg.Capacity)
	}
	if h.hasKey && h.key < keep {
		keep = h.key
	}
	if keep <= h.start {
		return
	}
	n := int(keep - h.start)
	clear(h.entries[:n])
	h.entries = h.entries[n:]
	h.start = keep
}

// Cursor is a client's position in the log.
type Cursor struct {
	next    uint64
	needKey bool
	// liveFrom is the head when the client joined or skipped: the entries
	// before it are the GOP it catches up through, exempt from the lag
	// check and from the delivery histogram.
	liveFrom  uint64
	waitSince time.Time
	// flowSince and flowLast are when video first and last flowed past the
	// cursor while it waited for a keyframe (zero: none has since it began
	// waiting).
	flowSince, flowLast time.Time
}

// markFlow notes that frames passed the waiting cursor at now.
func (c *Cursor) markFlow(now time.Time) {
	if c.flowSince.IsZero() {
		c.flowSince = now
	}
	c.flowLast = now
}

// Live reports whether e reached the client as a live frame rather than
// as part of the GOP it caught up through when it joined or skipped.
func (c *Cursor) Live(e *Entry) bool { return e.Seq >= c.liveFrom }

// WaitingForKeyframe reports whether the client waits for a keyframe, and
// since when.
func (c *Cursor) WaitingForKeyframe() (bool, time.Time) { return c.needKey, c.waitSince }

// lagWait starts a wait for the next keyframe after a lag skip (by
// Capacity or MaxLag) with none to skip to: the cursor moves to head, and
// the wait counts as video flowing from now, so that only a source that
// stops sending keyframes makes it overdue.
func (c *Cursor) lagWait(head uint64, now time.Time) {
	c.next, c.needKey, c.waitSince = head, true, now
	c.flowSince, c.flowLast = time.Time{}, time.Time{}
	c.markFlow(now)
}

// KeyframeOverdue reports whether the client waits for a keyframe while
// video has flowed past it for longer than timeout: from the first frame
// that passed it while it waited to the latest one. Time without frames
// does not count until a frame comes, so that a client is never given up
// on while no video flows at all (its commands still work), as the old
// transport-server checked its IDR timeout only when a frame arrived.
func (c *Cursor) KeyframeOverdue(timeout time.Duration) bool {
	return c.needKey && !c.flowSince.IsZero() && c.flowLast.Sub(c.flowSince) > timeout
}

// Join returns the cursor of a new client: at the latest keyframe when the
// hub has one that may be replayed (replayableLocked), else waiting for the
// next one. Either way it asks the producer for a keyframe (coalesced), as
// the old service did.
func (h *Hub) Join() Cursor {
	h.clients.Add(1)
	h.m.Clients.Inc()
	h.mu.RLock()
	c := Cursor{liveFrom: h.head}
	if h.hasKey && h.replayableLocked(time.Now()) {
		c.next = h.key
	} else {
		c.next, c.needKey, c.waitSince = h.head, true, time.Now()
	}
	h.mu.RUnlock()
	if c.needKey {
		h.keyWaits.Add(1)
		h.m.KeyframeWaits.Inc()
	}
	h.RequestKeyframe()
	return c
}

// replayableLocked reports whether a client joining at now may be sent the
// kept GOP: its keyframe arrived within JoinMaxAge (every frame after it is
// younger), and it spans at most JoinMaxReplay and JoinMaxReplayBytes.
// Called with mu held and hasKey set.
func (h *Hub) replayableLocked(now time.Time) bool {
	key := h.entries[h.key-h.start]
	last := h.entries[h.head-1-h.start]
	return now.Sub(key.Arrived) <= h.cfg.JoinMaxAge &&
		last.Arrived.Sub(key.Arrived) <= h.cfg.JoinMaxReplay &&
		h.gopBytes <= h.cfg.JoinMaxReplayBytes
}

// Break takes a break the source detected (frame.BreakNotifier): after a
// writer restart the kept GOP is dropped, so that no joining client gets
// the old run's pictures before the new run's; for a restart and for a
// gap, a keyframe is requested (coalesced). Clients already streaming are
// not touched: what they were sent stays sent.
func (h *Hub) Break(b frame.Break) {
	if b.Restart {
		h.mu.Lock()
		h.hasKey = false
		h.trimLocked()
		h.mu.Unlock()
	}
	h.RequestKeyframe()
}

// Leave undoes Join.
func (h *Hub) Leave() {
	h.clients.Add(-1)
	h.m.Clients.Dec()
}

// Next moves the cursor over the entries waiting for this client, appending
// them to dst until maxBytes of frames are taken (at least one); with
// nothing to send it returns dst unchanged. Each Publish is followed by a
// send round, which does the same for every client. Frame ages (MaxLag)
// are judged at the time of the call.
func (h *Hub) Next(c *Cursor, dst []*Entry, maxBytes int) []*Entry {
	return h.next(c, dst, maxBytes, h.lagClock())
}

// lagClock returns the time by which frame ages are judged: now when
// MaxLag is set, else the zero time, which no age is judged by (and no
// clock is read for).
func (h *Hub) lagClock() time.Time {
	if h.cfg.MaxLag <= 0 {
		return time.Time{}
	}
	return time.Now()
}

// next is Next with the ages judged at now (lagClock's, taken once per
// send round).
func (h *Hub) next(c *Cursor, dst []*Entry, maxBytes int, now time.Time) []*Entry {
	h.mu.RLock()
	lagged := false
	catchingUp := c.next < c.liveFrom
	if c.next < h.start || (!catchingUp && h.head-c.next > uint64(h.cfg.Capacity)) {
		lagged = true
		c.liveFrom = h.head
		if h.hasKey && h.key > c.next && h.head-h.key <= uint64(h.cfg.Capacity) {
			c.next, c.needKey = h.key, false
		} else if !c.needKey {
			c.lagWait(h.head, time.Now())
		} else {
			c.next = h.head
			c.markFlow(time.Now())
		}
	}
	if c.needKey {
		passed := false
		for c.next < h.head && !h.entries[c.next-h.start].Keyframe {
			c.next++
			passed = true
		}
		if c.next < h.head {
			c.needKey = false
			c.flowSince, c.flowLast = time.Time{}, time.Time{}
		} else if passed {
			c.markFlow(time.Now())
		}
	}
	if h.cfg.MaxLag > 0 && !c.needKey && c.next < h.head &&
		now.Sub(h.entries[c.next-h.start].Arrived) > h.cfg.MaxLag {
		switch {
		case h.hasKey && h.key > c.next:
			// The next frame (a keyframe, when the client waited for
			// one) is older than MaxLag and a newer keyframe is kept:
			// skip to the newest, as a skip by Capacity does. (c.next
			// lies in the log, below that keyframe and so below the
			// head.)
			lagged = true
			c.liveFrom = h.head
			c.next = h.key
		case !h.entries[c.next-h.start].Keyframe && c.next >= c.liveFrom:
			// A live delta older than MaxLag and no newer keyframe: the
			// rest of this GOP is dropped and the client waits for the
			// next keyframe, as after a skip by Capacity with none to
			// skip to (the wait counts as video flowing, so that only a
			// source that stops sending keyframes times it out). The
			// newest keyframe itself is sent however old (it is the
			// newest picture there is), and so is the GOP a joining
			// client catches up through (Join bounds its age).
			lagged = true
			c.liveFrom = h.head
			c.lagWait(h.head, now)
		}
	}
	taken := 0
	for c.next < h.head && (taken == 0 || taken < maxBytes) {
		e := h.entries[c.next-h.start]
		dst = append(dst, e)
		taken += e.Size()
		c.next++
	}
	h.mu.RUnlock()
	if lagged {
		h.lagTotal.Add(1)
		h.m.LagSkips.Inc()
		if c.needKey {
			h.keyWaits.Add(1)
			h.m.KeyframeWaits.Inc()
			h.RequestKeyframe()
		}
	}
	return dst
}

// RequestKeyframe asks the producer for an IDR frame, at most once per
// IDRCoalesce: a request inside the interval is sent when it ends.
func (h *Hub) RequestKeyframe() {
	h.idrAsked.Add(1)
	h.idr.RequestKeyframe()
}

func (h *Hub) sendKeyframeRequest() {
	h.idrSent.Add(1)
	h.m.IDRRequests.Inc()
	if b := h.requester.Load(); b != nil && b.r != nil {
		b.r.RequestKeyframe()
	}
}

// register adds a running client to the send round, starting the workers
// with the first one.
func (h *Hub) register(c *Client) {
	h.regMu.Lock()
	defer h.regMu.Unlock()
	if h.workers == nil {
		select {
		case <-h.workDone:
		default:
			n := runtime.GOMAXPROCS(0)
			h.workers = make([]chan struct{}, n)
			for i := range h.workers {
				h.workers[i] = make(chan struct{}, 1)
				go h.work(i, n, h.workers[i])
			}
		}
	}
	c.tnext = h.tlog.Load().head()
	h.members.Add(c)
}

// unregister takes a client out of the send round.
func (h *Hub) unregister(c *Client) { h.members.Remove(c) }

// round wakes the workers for a send round; a worker still busy with the
// previous one starts another when done. The round takes the held
// telemetry along, so the hold timer stops: telemetry queued from now on
// waits for the next frame again, up to TelemetryHold.
func (h *Hub) round() {
	h.seal()
	h.regMu.Lock()
	ws := h.workers
	if h.holdArmed {
		h.holdArmed = false
		h.holdTimer.Stop()
	}
	h.regMu.Unlock()
	for _, w := range ws {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// work is worker i of the send round: it serves every len(workers)-th
// client, starting each round at a different one so that no client is
// always served last.
func (h *Hub) work(i, workers int, wake <-chan struct{}) {
	var sc scratch
	n := uint64(workers)
	for {
		select {
		case <-h.workDone:
			return
		case <-wake:
		}
		cs := h.members.Load()
		mine := (uint64(len(cs)) + n - 1 - uint64(i)) / n // clients i, i+n, ...
		if mine == 0 {
			continue
		}
		off := h.rounds.Add(1)
		sc.now = h.lagClock()
		for k := uint64(0); k < mine; k++ {
			cs[uint64(i)+n*((k+off)%mine)].serve(&sc)
		}
		sc.reset()
	}
}

// telemetryBacklog is how many sealed telemetry batches (about one per
// frame) the hub keeps for clients that have not taken them; a client
// further behind loses the oldest (telemetry is lossy).
const telemetryBacklog = 32

// telemetryLog is a snapshot of the sealed telemetry batches; a new one
// replaces it, it is never modified.
type telemetryLog struct {
	start uint64   // the sequence number of bufs[0]
	bufs  [][]byte // each batch one buffer of complete WebSocket frames
}

func (l *telemetryLog) head() uint64 { return l.start + uint64(len(l.bufs)) }

// Broadcast queues complete, already framed WebSocket messages (one, or
// several back to back) for every client: they go out with each client's
// next frame, in the same write, or in a send round of their own once
// TelemetryHold has passed (at once when it is negative). f must not be
// modified afterwards. It never waits for a client; one that has not
// taken the last telemetryBacklog batches loses the oldest, counted as
// telemetry dropped.
func (h *Hub) Broadcast(f []byte) {
	h.tmu.Lock()
	h.tpending = append(h.tpending, f)
	h.tmu.Unlock()
	if h.cfg.TelemetryHold < 0 {
		h.round()
		return
	}
	h.regMu.Lock()
	defer h.regMu.Unlock()
	if h.holdArmed {
		return
	}
	h.holdArmed = true
	if h.holdTimer == nil {
		h.holdTimer = time.AfterFunc(h.cfg.TelemetryHold, h.round)
	} else {
		h.holdTimer.Reset(h.cfg.TelemetryHold)
	}
}

// seal makes what was broadcast since the last round one batch, in one
// buffer, so that it costs each client one more iovec at most.
func (h *Hub) seal() {
	h.tmu.Lock()
	defer h.tmu.Unlock()
	if len(h.tpending) == 0 {
		return
	}
	batch := h.tpending[0] // one broadcast goes as it is, uncopied
	if len(h.tpending) > 1 {
		batch = bytes.Join(h.tpending, nil)
	}
	clear(h.tpending)
	h.tpending = h.tpending[:0]
	old := h.tlog.Load()
	keep := old.bufs
	start := old.start
	if len(keep) >= telemetryBacklog {
		drop := len(keep) - telemetryBacklog + 1
		keep, start = keep[drop:], start+uint64(drop)
	}
	bufs := make([][]byte, len(keep), len(keep)+1)
	copy(bufs, keep)
	h.tlog.Store(&telemetryLog{start: start, bufs: append(bufs, batch)})
}

// takeTelemetry appends to bufs the sealed batches after the client's
// cursor, while taken < budget, and counts the batches it lost.
func (h *Hub) takeTelemetry(next *uint64, bufs net.Buffers, taken, budget int) (int, net.Buffers) {
	l := h.tlog.Load()
	if *next < l.start {
		h.dropTelemetry(l.start - *next)
		*next = l.start
	}
	for ; *next < l.head() && taken < budget; *next++ {
		b := l.bufs[*next-l.start]
		bufs = append(bufs, b)
		taken += len(b)
	}
	return taken, bufs
}

// dropTelemetry counts n replies or telemetry batches a client lost.
func (h *Hub) dropTelemetry(n uint64) {
	h.telemDropped.Add(n)
	h.m.TelemetryDropped.Add(float64(n))
}

// Close stops the hub: pending keyframe requests are dropped and Publish
// does nothing more. Clients end through their own contexts.
func (h *Hub) Close() {
	h.regMu.Lock()
	select {
	case <-h.workDone:
	default:
		close(h.workDone)
	}
	h.workers = nil
	if h.holdTimer != nil {
		h.holdTimer.Stop()
	}
	h.regMu.Unlock()
	h.idr.Close()
	h.mu.Lock()
	h.closed = true
	clear(h.entries)
	h.entries = nil
	h.start = h.head
	h.hasKey = false
	h.mu.Unlock()
}

// Stats is a snapshot of a hub's counters.
type Stats struct {
	Clients          int64
	FramesIn         uint64 // frames published (the health JSON counts a stream with a Tally)
	BytesIn          uint64 // payload bytes published
	FramesOut        uint64 // frames written to clients
	BytesOut         uint64 // bytes written to clients
	Writes           uint64 // batched writes to clients (one write or writev each)
	DirectWrites     uint64 // of which written by the send round, no client goroutine woken
	Handovers        uint64 // full sockets the send round left to the client's goroutine
	LagSkips         uint64 // "client_lag_total"
	KeyframeWaits    uint64
	KeyframeTimeouts uint64
	PingTimeouts     uint64 // clients closed for not answering pings
	LimitCloses      uint64 // clients closed for too many fragments or frames
	IDRAsked         uint64 // keyframe requests before coalescing
	IDRSent          uint64 // after coalescing
	MessagesIgnored  uint64
	TelemetryDropped uint64 // replies and telemetry batches a client lost
	LogFrames        int    // frames held in the log
	HasKeyframe      bool   // a joining client starts at once
}

// AvgFrameSize is the mean payload size of the published frames.
func (s Stats) AvgFrameSize() uint64 {
	if s.FramesIn == 0 {
		return 0
	}
	return s.BytesIn / s.FramesIn
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.RLock()
	n, k := len(h.entries), h.hasKey
	h.mu.RUnlock()
	return Stats{
		Clients:          h.clients.Load(),
		FramesIn:         h.framesIn.Load(),
		BytesIn:          h.bytesIn.Load(),
		FramesOut:        h.framesOut.Load(),
		BytesOut:         h.bytesOut.Load(),
		Writes:           h.writes.Load(),
		DirectWrites:     h.direct.Load(),
		Handovers:        h.handovers.Load(),
		LagSkips:         h.lagTotal.Load(),
		KeyframeWaits:    h.keyWaits.Load(),
		KeyframeTimeouts: h.keyTimeouts.Load(),
		PingTimeouts:     h.pingTimeouts.Load(),
		LimitCloses:      h.limitCloses.Load(),
		IDRAsked:         h.idrAsked.Load(),
		IDRSent:          h.idrSent.Load(),
		MessagesIgnored:  h.ignored.Load(),
		TelemetryDropped: h.telemDropped.Load(),
		LogFrames:        n,
		HasKeyframe:      k,
	}
}
