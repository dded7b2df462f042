package natsvideo

import (
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/keyreq"
	"github.com/sdr-os/sdr-caddy/internal/source"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// PendingMessages is how many received messages may wait for a Source
// before the client library drops new ones (NATS slow consumer).
const PendingMessages = 256

// SourceConfig sets up a Source. Zero fields take the defaults.
type SourceConfig struct {
	// Subject is the video subject; required.
	Subject string
	// NoKeyframeGating forwards the deltas that follow a gap or a restart
	// (marked Discontinuity). By default they are held back until the next
	// keyframe, which the source asks for at once.
	NoKeyframeGating bool
	// DisableCRC skips the payload CRC-32 check. By default a frame whose
	// header carries a CRC (not 0) that does not match is discarded.
	DisableCRC bool
	// MaxGOPBytes bounds the current GOP kept for late subscribers;
	// default source.DefaultMaxGOPBytes.
	MaxGOPBytes int
	// MaxFrameBytes bounds the payload of one frame; larger claims are
	// discarded as malformed. Default DefaultMaxFrameBytes.
	MaxFrameBytes int
	// IDRCoalesce is the shortest interval between two keyframe requests
	// this edge sends to the origin.
	IDRCoalesce time.Duration
	// Logger receives the source's logs; nil discards them.
	Logger *slog.Logger
}

// SourceStats are a Source's counters.
type SourceStats struct {
	Messages      uint64 // messages received on the subject
	Frames        uint64 // whole frames received (parts reassembled)
	Bytes         uint64 // payload bytes of those frames
	Gaps          uint64 // frames missed: forward frame_seq gaps, summed
	Restarts      uint64 // frame_seq going backwards (the writer restarted)
	KeyframeWaits uint64 // frames held back waiting for a keyframe
	Malformed     uint64 // messages that are not a header and a payload of its size, or whose payload is empty
	CRCFailures   uint64 // frames whose payload does not match the header's CRC
	PartsDropped  uint64 // parts of split frames that could not be reassembled
	IDRRequests   uint64 // keyframe requests sent to the origin, after coalescing
	LastSeq       uint64 // frame_seq of the last frame received
	Upstream      uint64 // discontinuities the origin announced (its own gaps and restarts), passed on
}

// Source is a frame.Source fed by a NATS subscription to a video subject.
// It keeps the current GOP (the latest keyframe and the frames since) for
// late subscribers, such as the hub of a reloaded configuration.
type Source struct {
	nc   *nats.Conn
	cfg  SourceConfig
	log  *slog.Logger
	sub  *nats.Subscription
	idr  *keyreq.Coalescer
	last atomic.Int64 // LastArrival, Unix ns

	fan *source.Fanout // subscribers and the current GOP

	mu      sync.Mutex
	closed  bool
	asm     assembly
	begun   bool // a whole frame or a first part came: parts missing from now on are losses
	lastSeq uint64
	started bool
	waitKey bool // gating: hold deltas until a keyframe
	discont bool // a gap or restart since the last delivered frame

	msgs, frames, bytes, gaps, restarts, keyWaits, malformed, crcFails, partsDropped, idrSent, upstream atomic.Uint64
	lastSeqStat                                                                                         atomic.Uint64
}

// assembly is a split frame being put back together.
type assembly struct {
	active bool
	header shmring.Header
	buf    []byte
	next   int
	prev   string // HeaderPrev of the first part
}

// OpenSource subscribes to the video subject on nc. Close unsubscribes.
func OpenSource(nc *nats.Conn, cfg SourceConfig) (*Source, error) {
	if nc == nil {
		return nil, fmt.Errorf("receiving video on %q: no nats connection", cfg.Subject)
	}
	if err := ValidateSubject(cfg.Subject); err != nil {
		return nil, fmt.Errorf("receiving video: %w", err)
	}
	if cfg.MaxFrameBytes <= 0 {
		cfg.MaxFrameBytes = DefaultMaxFrameBytes
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	s := &Source{nc: nc, cfg: cfg, log: lg, fan: source.NewFanout(cfg.MaxGOPBytes, lg.With("subject", cfg.Subject)),
		waitKey: !cfg.NoKeyframeGating}
	idrSubject := IDRSubject(cfg.Subject)
	s.idr = keyreq.New(cfg.IDRCoalesce, func() {
		s.idrSent.Add(1)
		if err := nc.Publish(idrSubject, []byte(IDRBody)); err != nil {
			s.log.Warn("sending a keyframe request", "subject", idrSubject, "error", err)
		}
	})
	sub, err := nc.Subscribe(cfg.Subject, s.onMsg)
	if err != nil {
		s.idr.Close()
		return nil, fmt.Errorf("subscribing to video on %q: %w", cfg.Subject, err)
	}
	// An edge that falls behind drops (a gap: it resumes at a keyframe)
	// rather than deliver seconds-old video: at most PendingMessages
	// messages (about 4 s at 60 fps) or 64 MiB wait.
	if err := sub.SetPendingLimits(PendingMessages, 64<<20); err != nil {
		_ = sub.Unsubscribe()
		s.idr.Close()
		return nil, fmt.Errorf("setting pending limits on %q: %w", cfg.Subject, err)
	}
	s.sub = sub
	return s, nil
}

// onMsg runs on the subscription's goroutine, one message at a time, in
// the order the publisher sent them.
func (s *Source) onMsg(m *nats.Msg) {
	now := time.Now()
	s.msgs.Add(1)
	h, err := shmring.ParseHeader(m.Data)
	if err != nil {
		s.malformed.Add(1)
		return
	}
	body := m.Data[shmring.HeaderSize:]
	if int(h.Size) > s.cfg.MaxFrameBytes || h.Size == 0 {
		// too large, or empty: a frame with no payload carries no picture
		s.malformed.Add(1)
		return
	}
	part, prev := "", ""
	if m.Header != nil {
		part, prev = m.Header.Get(HeaderPart), m.Header.Get(HeaderPrev)
	}
	if part == "" {
		if len(body) != int(h.Size) {
			s.malformed.Add(1)
			return
		}
		s.begun = true
		s.frame(h, body, prev, now)
		return
	}
	off, err := strconv.Atoi(part)
	if err != nil || off < 0 || off+len(body) > int(h.Size) || len(body) == 0 {
		s.malformed.Add(1)
		return
	}
	// Only the subscription goroutine touches the assembly.
	a := &s.asm
	if off == 0 {
		if a.active {
			s.partsDropped.Add(1)
		}
		s.begun = true
		*a = assembly{active: true, header: h, buf: make([]byte, h.Size), prev: prev}
	} else if !a.active || a.header != h || a.next != off {
		if a.active {
			s.partsDropped.Add(1)
		}
		// The rest of a frame whose start came before the subscription
		// is no loss: this edge never had that frame.
		if s.begun {
			s.partsDropped.Add(1)
		}
		*a = assembly{}
		return
	}
	copy(a.buf[off:], body)
	a.next = off + len(body)
	if a.next == int(h.Size) {
		payload, prev := a.buf, a.prev
		*a = assembly{}
		s.frame(h, payload, prev, now)
	}
}

// frame takes one whole frame: checks, sequencing, gating, GOP, delivery.
// prev is the frame's HeaderPrev, "" when it has none.
func (s *Source) frame(h shmring.Header, payload []byte, prev string, now time.Time) {
	if !s.cfg.DisableCRC && h.CRC32 != 0 && shmring.Checksum(payload) != h.CRC32 {
		s.crcFails.Add(1)
		return
	}
	s.frames.Add(1)
	s.bytes.Add(uint64(len(payload)))
	s.lastSeqStat.Store(h.FrameSeq)
	s.last.Store(now.UnixNano())

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	// A discontinuity the origin announces, with nothing lost since the
	// frame before it, is passed on as the origin's clients get it.
	upstream := false
	if prev != "" && s.started {
		n, err := strconv.ParseUint(prev, 10, 64)
		upstream = err == nil && n == s.lastSeq
	}
	switch {
	case !s.started:
		s.started = true
	case h.FrameSeq == s.lastSeq+1:
	case h.FrameSeq > s.lastSeq+1:
		s.gaps.Add(h.FrameSeq - s.lastSeq - 1)
		s.discont = true
	default:
		s.restarts.Add(1)
		s.discont = true
	}
	s.lastSeq = h.FrameSeq
	key := h.Keyframe()
	if upstream {
		s.upstream.Add(1)
		s.discont = true
	}
	if s.discont && !s.cfg.NoKeyframeGating && !upstream {
		s.waitKey = true
	}
	if s.waitKey && !key {
		s.keyWaits.Add(1)
		s.fan.DropGOP()
		s.mu.Unlock()
		s.RequestKeyframe()
		return
	}
	// After a gap, deltas forwarded without gating decode badly until the
	// next keyframe: ask for one now.
	ask := s.discont && !key && !upstream
	s.waitKey = false
	f := frame.Frame{Header: h, Payload: payload, Arrived: now, Discontinuity: s.discont}
	s.discont = false
	// A delta after a gap that gating let through drops the GOP: a new
	// subscriber must not start from frames that no longer decode together.
	s.fan.Publish(f, true)
	s.mu.Unlock()
	if ask {
		s.RequestKeyframe()
	}
}

// Subscribe calls fn with the current GOP at once, then with every new
// frame, in order and never concurrently, until cancel is called. fn must
// not block.
func (s *Source) Subscribe(fn func(frame.Frame)) (cancel func()) { return s.fan.Subscribe(fn) }

// LastArrival is when the last whole frame was received, including frames
// held back waiting for a keyframe; zero before the first.
func (s *Source) LastArrival() time.Time {
	ns := s.last.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// RequestKeyframe asks the origin for a keyframe on <subject>.force_idr,
// at most once per IDRCoalesce.
func (s *Source) RequestKeyframe() { s.idr.RequestKeyframe() }

// Subject returns the video subject.
func (s *Source) Subject() string { return s.cfg.Subject }

// Stats returns the source's counters.
func (s *Source) Stats() SourceStats {
	return SourceStats{
		Messages: s.msgs.Load(), Frames: s.frames.Load(), Bytes: s.bytes.Load(), Gaps: s.gaps.Load(),
		Restarts: s.restarts.Load(), KeyframeWaits: s.keyWaits.Load(), Malformed: s.malformed.Load(),
		CRCFailures: s.crcFails.Load(), PartsDropped: s.partsDropped.Load(), IDRRequests: s.idrSent.Load(),
		LastSeq: s.lastSeqStat.Load(), Upstream: s.upstream.Load(),
	}
}

// Close unsubscribes; subscribers get no frame after it returns.
func (s *Source) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.fan.Close()
	s.mu.Unlock()
	s.idr.Close()
	if err := s.sub.Unsubscribe(); err != nil && s.nc.Status() != nats.CLOSED {
		return fmt.Errorf("unsubscribing from video on %q: %w", s.cfg.Subject, err)
	}
	return nil
}

// Interface guards.
var (
	_ frame.Source            = (*Source)(nil)
	_ frame.KeyframeRequester = (*Source)(nil)
	_ frame.KeyframeRequester = (*Publisher)(nil)
)
