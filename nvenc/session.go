package nvenc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// FrameEncoder is what a Session drives; *Encoder implements it.
type FrameEncoder interface {
	Encode(p Picture, keyframe bool) ([]Packet, error)
	Backend() string
	Attempts() []Attempt
	Config() Config
	SPSPatched() bool
	Close()
}

// FrameWriter takes encoded frames for an encoded-frame ring;
// *shmring.Writer implements it.
type FrameWriter interface {
	WriteFrame(h frame.Header, payload []byte) (frame.Header, error)
}

// FrameStats describes one encoded frame; it is also the JSON body of
// telemetry.frame.stats.
type FrameStats struct {
	FrameID    uint64  `json:"frame_id"`
	EncodeMS   float64 `json:"encode_ms"`
	Codec      string  `json:"codec"`
	FrameBytes int     `json:"frame_bytes"`
	// Not part of the telemetry message.
	Keyframe bool          `json:"-"`
	Encode   time.Duration `json:"-"`
	Backend  string        `json:"-"`
}

// SessionConfig configures a Session.
type SessionConfig struct {
	// Name of the stream, for logs.
	Name string
	// Encoder settings; Width, Height and Input are taken from each raw
	// picture.
	Encoder Config
	// MaxFPS, when above 0, encodes at most that many pictures per second;
	// the others are skipped (counted).
	MaxFPS int
	// Output, when set, receives every encoded frame (an encoded ring).
	Output FrameWriter
	// Logger; nil discards.
	Logger *slog.Logger
	// OnFrame, when set, is called after each encoded frame (metrics).
	OnFrame func(FrameStats)
	// OnOpen, when set, is called with every backend selection: the
	// backend used and all attempts (metrics of fallbacks).
	OnOpen func(backend string, attempts []Attempt)
	// Open opens encoders; default Open.
	Open func(Config) (FrameEncoder, error)
}

// SessionStats is a snapshot of a Session's state and counters.
type SessionStats struct {
	Name       string    `json:"name"`
	Backend    string    `json:"backend"`
	Attempts   []Attempt `json:"attempts,omitempty"`
	SPSPatched bool      `json:"sps_patched"`
	Config     Config    `json:"config"`
	Frames     uint64    `json:"frames"`
	Keyframes  uint64    `json:"keyframes"`
	Bytes      uint64    `json:"bytes"`
	// Skipped counts raw pictures never encoded because a newer one
	// arrived first (encoding fell behind) or MaxFPS held them back.
	Skipped uint64 `json:"skipped"`
	// Errors counts failed encodes and failed encoder openings.
	Errors        uint64    `json:"errors"`
	Reopens       uint64    `json:"reopens"`
	RingErrors    uint64    `json:"ring_errors"`
	LastError     string    `json:"last_error,omitempty"`
	LastFrameID   uint64    `json:"last_frame_id"`
	LastEncodeMS  float64   `json:"last_encode_ms"`
	LastArrival   time.Time `json:"last_arrival"`
	KeyframeAsked uint64    `json:"keyframe_requests"`
	// FPS is the encoded frame rate over the last second or so.
	FPS float64 `json:"fps"`
}

// Session encodes the newest picture of an Input whenever the encoder is
// free, and hands each encoded frame to its subscribers (it is a
// frame.Source and a frame.KeyframeRequester) and, optionally, to an
// encoded ring. The input is never blocked: pictures that arrive while the
// encoder is busy replace the waiting one and are counted as skipped.
type Session struct {
	cfg SessionConfig
	in  Input
	log *slog.Logger

	mu      sync.Mutex
	pending *RawFrame // newest picture not yet taken
	wake    chan struct{}
	enc     Config // wanted encoder settings (without picture geometry)
	reopen  bool   // settings changed: open a new encoder at the next picture
	stats   SessionStats
	last    FrameStats

	fpsStart time.Time
	fpsCount int

	keyframe atomic.Bool
	lastArr  atomic.Int64

	subMu  sync.Mutex
	subs   map[uint64]func(frame.Frame)
	nextID uint64

	running atomic.Bool
}

// NewSession returns a session; Run starts it.
func NewSession(cfg SessionConfig, in Input) (*Session, error) {
	if in == nil {
		return nil, errors.New("encoder session: no input")
	}
	enc := cfg.Encoder
	enc.Width, enc.Height = 0, 0
	if err := checkSettings(enc); err != nil {
		return nil, fmt.Errorf("encoder session %q: %w", cfg.Name, err)
	}
	if cfg.Open == nil {
		cfg.Open = func(c Config) (FrameEncoder, error) {
			e, err := Open(c)
			if err != nil {
				return nil, err
			}
			return e, nil
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Session{cfg: cfg, in: in, log: log, wake: make(chan struct{}, 1), enc: enc, subs: map[uint64]func(frame.Frame){}}
	s.stats.Name = cfg.Name
	s.stats.Config = enc.WithDefaults()
	return s, nil
}

// checkSettings validates everything but the picture geometry.
func checkSettings(c Config) error {
	c.Width, c.Height = 16, 16
	if c.Input == 0 {
		c.Input = frame.CodecI420
	}
	return c.WithDefaults().Validate()
}

// Subscribe calls fn for every encoded frame, in order, from the encoding
// goroutine, until cancel is called. fn must not block.
func (s *Session) Subscribe(fn func(frame.Frame)) (cancel func()) {
	s.subMu.Lock()
	id := s.nextID
	s.nextID++
	s.subs[id] = fn
	s.subMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.subMu.Lock()
			delete(s.subs, id)
			s.subMu.Unlock()
		})
	}
}

// LastArrival is when the session last produced a frame.
func (s *Session) LastArrival() time.Time {
	if ns := s.lastArr.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// RequestKeyframe makes the next encoded frame an IDR. Requests before it
// is encoded coalesce into one.
func (s *Session) RequestKeyframe() {
	s.keyframe.Store(true)
	s.mu.Lock()
	s.stats.KeyframeAsked++
	s.mu.Unlock()
}

// Settings are run-time changes; nil fields stay as they are.
type Settings struct {
	Codec       *frame.Codec
	BitrateKbps *int
	FPS         *int
	Preset      *string
	JPEGQuality *int
	GOP         *int
}

// Reconfigure applies settings; the next picture opens a new encoder with
// them, so the next frame is a keyframe. Viewers keep their connection: the
// stream goes on with that keyframe. Invalid settings change nothing.
func (s *Session) Reconfigure(st Settings) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.enc
	if st.Codec != nil {
		c.Codec = *st.Codec
		// Keep the configured backends where they fit the new codec.
		c.Backends = nil
		fit := len(s.cfg.Encoder.Backends) > 0
		for _, b := range s.cfg.Encoder.Backends {
			fit = fit && backendFor(c.Codec, b)
		}
		if fit {
			c.Backends = s.cfg.Encoder.Backends
		}
	}
	if st.BitrateKbps != nil {
		c.BitrateKbps = *st.BitrateKbps
	}
	if st.FPS != nil {
		c.FPS = *st.FPS
	}
	if st.Preset != nil {
		c.Preset = *st.Preset
	}
	if st.JPEGQuality != nil {
		c.JPEGQuality = *st.JPEGQuality
	}
	if st.GOP != nil {
		c.GOP = *st.GOP
	}
	if err := checkSettings(c); err != nil {
		return fmt.Errorf("reconfiguring encoder %q: %w", s.cfg.Name, err)
	}
	s.enc = c
	s.reopen = true
	s.stats.Config = c.WithDefaults()
	return nil
}

// Stats returns a snapshot of the session.
func (s *Session) Stats() SessionStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Attempts = append([]Attempt(nil), st.Attempts...)
	st.LastArrival = s.LastArrival()
	if time.Since(st.LastArrival) > 2*time.Second {
		st.FPS = 0
	}
	return st
}

// LastFrame describes the last encoded frame (telemetry.frame.stats); ok
// is false before the first.
func (s *Session) LastFrame() (FrameStats, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.stats.Frames > 0
}

// Run reads the input and encodes until ctx is done. It returns the input's
// error, or nil when ctx ended it.
func (s *Session) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return fmt.Errorf("encoder session %q is already running", s.cfg.Name)
	}
	defer s.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	inputErr := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				inputErr <- fmt.Errorf("encoder session %q: input panicked: %v\n%s", s.cfg.Name, r, debug.Stack())
			}
			cancel()
		}()
		inputErr <- s.in.Run(ctx, s.offer)
	}()
	var enc FrameEncoder
	defer func() {
		if enc != nil {
			enc.Close()
		}
		s.mu.Lock()
		if s.pending != nil && s.pending.Release != nil {
			s.pending.Release()
		}
		s.pending = nil
		s.mu.Unlock()
	}()
	var (
		seq          uint64
		lastEncode   time.Time
		nextOpenTry  time.Time
		openFailures int
	)
	for {
		select {
		case <-ctx.Done():
			return <-inputErr
		case <-s.wake:
		}
		// A wake can find no picture (offer raced an earlier wake); it
		// must leave a pending reopen for the next picture.
		s.mu.Lock()
		rf := s.pending
		if rf == nil {
			s.mu.Unlock()
			continue
		}
		s.pending = nil
		reopen := s.reopen
		s.reopen = false
		want := s.enc
		s.mu.Unlock()
		release := func() {
			if rf.Release != nil {
				rf.Release()
			}
		}
		if s.cfg.MaxFPS > 0 && !lastEncode.IsZero() && time.Since(lastEncode) < time.Second/time.Duration(s.cfg.MaxFPS)*9/10 {
			release()
			s.count(func(st *SessionStats) { st.Skipped++ })
			if reopen {
				s.mu.Lock()
				s.reopen = true
				s.mu.Unlock()
			}
			continue
		}
		p := rf.Picture
		want.Width, want.Height, want.Input = p.Width, p.Height, p.Format
		if enc != nil && (reopen || enc.Config().Width != p.Width || enc.Config().Height != p.Height || enc.Config().Input != p.Format) {
			enc.Close()
			enc = nil
			s.count(func(st *SessionStats) { st.Reopens++ })
		}
		if enc == nil {
			if time.Now().Before(nextOpenTry) {
				release()
				s.count(func(st *SessionStats) { st.Skipped++ })
				continue
			}
			e, err := s.cfg.Open(want)
			if err != nil {
				openFailures++
				nextOpenTry = time.Now().Add(min(time.Duration(openFailures)*time.Second, 10*time.Second))
				release()
				s.count(func(st *SessionStats) { st.Errors++; st.Skipped++; st.LastError = err.Error() })
				s.log.Error("opening encoder", "stream", s.cfg.Name, "error", err)
				continue
			}
			openFailures = 0
			enc = e
			s.keyframe.Store(true)
			att := e.Attempts()
			s.mu.Lock()
			s.stats.Backend, s.stats.Attempts, s.stats.Config = e.Backend(), att, e.Config()
			s.mu.Unlock()
			for _, a := range att {
				if a.Error != "" {
					s.log.Warn("encoder backend not used", "stream", s.cfg.Name, "backend", a.Backend, "reason", a.Reason())
				}
			}
			s.log.Info("encoder opened", "stream", s.cfg.Name, "backend", e.Backend(), "codec", e.Config().Codec.String(),
				"width", p.Width, "height", p.Height, "input", p.Format.String())
			if s.cfg.OnOpen != nil {
				s.cfg.OnOpen(e.Backend(), att)
			}
		}
		key := s.keyframe.Swap(false)
		t0 := time.Now()
		pkts, err := enc.Encode(p, key)
		dur := time.Since(t0)
		release()
		lastEncode = t0
		if err != nil {
			if key {
				s.keyframe.Store(true)
			}
			s.count(func(st *SessionStats) { st.Errors++; st.LastError = err.Error() })
			s.log.Error("encoding", "stream", s.cfg.Name, "error", err)
			enc.Close()
			enc = nil
			continue
		}
		codec := enc.Config().Codec
		for _, pk := range pkts {
			seq++
			h := frame.Header{FrameID: rf.FrameID, FrameSeq: seq, Size: uint32(len(pk.Data)), Codec: codec, CRC32: frame.Checksum(pk.Data)}
			if pk.Keyframe {
				h.Flags |= frame.FlagKeyframe
			}
			now := time.Now()
			s.lastArr.Store(now.UnixNano())
			s.publish(frame.Frame{Header: h, Payload: pk.Data, Arrived: now})
			if s.cfg.Output != nil {
				if _, err := s.cfg.Output.WriteFrame(h, pk.Data); err != nil {
					s.count(func(st *SessionStats) { st.RingErrors++; st.LastError = err.Error() })
				}
			}
			fs := FrameStats{FrameID: h.FrameID, EncodeMS: float64(dur.Microseconds()) / 1000, Codec: codec.String(),
				FrameBytes: len(pk.Data), Keyframe: pk.Keyframe, Encode: dur, Backend: enc.Backend()}
			s.mu.Lock()
			s.stats.Frames++
			s.stats.Bytes += uint64(len(pk.Data))
			if pk.Keyframe {
				s.stats.Keyframes++
			}
			s.stats.LastFrameID = h.FrameID
			s.stats.LastEncodeMS = fs.EncodeMS
			s.stats.SPSPatched = enc.SPSPatched()
			s.last = fs
			s.fpsCount++
			if el := now.Sub(s.fpsStart); el >= time.Second {
				if !s.fpsStart.IsZero() {
					s.stats.FPS = float64(s.fpsCount) / el.Seconds()
				}
				s.fpsStart, s.fpsCount = now, 0
			}
			s.mu.Unlock()
			if s.cfg.OnFrame != nil {
				s.cfg.OnFrame(fs)
			}
		}
	}
}

// offer takes a picture from the input without blocking: it replaces the
// one waiting, which is counted as skipped.
func (s *Session) offer(rf RawFrame) {
	s.mu.Lock()
	old := s.pending
	s.pending = &rf
	if old != nil {
		s.stats.Skipped++
	}
	s.mu.Unlock()
	if old != nil && old.Release != nil {
		old.Release()
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Session) count(fn func(*SessionStats)) {
	s.mu.Lock()
	fn(&s.stats)
	s.mu.Unlock()
}

func (s *Session) publish(f frame.Frame) {
	s.subMu.Lock()
	fns := make([]func(frame.Frame), 0, len(s.subs))
	for _, fn := range s.subs {
		fns = append(fns, fn)
	}
	s.subMu.Unlock()
	for _, fn := range fns {
		fn(f)
	}
}

// Interface guards.
var (
	_ frame.Source            = (*Session)(nil)
	_ frame.KeyframeRequester = (*Session)(nil)
	_ FrameWriter             = (*shmring.Writer)(nil)
)
