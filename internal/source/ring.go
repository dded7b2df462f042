// Package source turns the places frames come from into frame.Source: an
// SHM ring read by one shmring.Reader shared by every stream that shows it.
// (The sdr_encoder app hands out its streams as frame.Source itself; a NATS
// subject source comes later and fits the same interface.)
package source

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// DefaultMaxGOPBytes bounds the GOP a Ring keeps for new subscribers.
const DefaultMaxGOPBytes = 32 << 20

// Ring is a frame.Source reading one ring file. It runs one shmring.Reader
// for all its subscribers, and keeps the current GOP (the latest keyframe
// and the frames since) so that a subscriber that comes later, such as the
// hub of a reloaded configuration, starts with a decodable picture at once.
type Ring struct {
	reader *shmring.Reader
	maxGOP int
	cancel context.CancelFunc
	done   chan struct{}
	log    *slog.Logger

	mu       sync.Mutex
	subs     map[uint64]func(frame.Frame)
	nextID   uint64
	gop      []frame.Frame
	gopBytes int
	runErr   error
}

// OpenRing creates the reader for cfg and starts reading. maxGOPBytes <= 0
// takes DefaultMaxGOPBytes. Close stops it.
func OpenRing(cfg shmring.ReaderConfig, maxGOPBytes int) (*Ring, error) {
	r, err := shmring.NewReader(cfg)
	if err != nil {
		return nil, fmt.Errorf("opening ring source %s: %w", cfg.Path, err)
	}
	if maxGOPBytes <= 0 {
		maxGOPBytes = DefaultMaxGOPBytes
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Ring{reader: r, maxGOP: maxGOPBytes, cancel: cancel, done: make(chan struct{}),
		log: lg, subs: make(map[uint64]func(frame.Frame))}
	go s.run(ctx)
	return s, nil
}

func (s *Ring) run(ctx context.Context) {
	defer close(s.done)
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("ring source stopped by a panic", "ring", s.reader.Config().Path, "panic", fmt.Sprint(v))
			s.mu.Lock()
			s.runErr = fmt.Errorf("ring source %s: panic: %v", s.reader.Config().Path, v)
			s.mu.Unlock()
		}
	}()
	err := s.reader.Run(ctx, s.deliver)
	if err != nil {
		s.log.Error("ring source stopped", "ring", s.reader.Config().Path, "error", err)
		s.mu.Lock()
		s.runErr = err
		s.mu.Unlock()
	}
}

func (s *Ring) deliver(rf shmring.Frame) {
	f := frame.Frame{Header: rf.Header, Payload: rf.Payload, Arrived: rf.Arrived,
		Discontinuity: rf.Gap > 0 || rf.Restart}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case f.Header.Keyframe():
		clear(s.gop)
		s.gop = append(s.gop[:0], f)
		s.gopBytes = len(f.Payload)
	case len(s.gop) == 0:
		// No keyframe yet: nothing a new subscriber could start from.
	default:
		// A delta after a gap stays in the GOP: connected subscribers get
		// it too (keyframe gating, when on, holds such deltas back in the
		// reader), and a new one still starts at the keyframe.
		s.gopBytes += len(f.Payload)
		if s.gopBytes > s.maxGOP {
			s.dropGOP()
		} else {
			s.gop = append(s.gop, f)
		}
	}
	for _, fn := range s.subs {
		s.call(fn, f)
	}
}

// call hands f to one subscriber. A subscriber that panics loses that frame
// and is logged; the reader, every other subscriber and the video age that
// feeds the safety gate go on.
func (s *Ring) call(fn func(frame.Frame), f frame.Frame) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("ring subscriber panicked; frame dropped for it", "ring", s.reader.Config().Path,
				"frame_seq", f.Header.FrameSeq, "panic", fmt.Sprint(v))
		}
	}()
	fn(f)
}

func (s *Ring) dropGOP() {
	clear(s.gop)
	s.gop = s.gop[:0]
	s.gopBytes = 0
}

// Subscribe calls fn with the current GOP at once, then with every new
// frame, in order and never concurrently, until cancel is called. fn must
// not block.
func (s *Ring) Subscribe(fn func(frame.Frame)) (cancel func()) {
	s.mu.Lock()
	id := s.nextID
	s.nextID++
	for _, f := range s.gop {
		fn(f)
	}
	s.subs[id] = fn
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.subs, id)
			s.mu.Unlock()
		})
	}
}

// LastArrival is when the reader last read a frame, including frames held
// back by keyframe gating.
func (s *Ring) LastArrival() time.Time { return s.reader.LastArrival() }

// Reader returns the ring reader, for its Stats and Sequence.
func (s *Ring) Reader() *shmring.Reader { return s.reader }

// Err returns why the reader stopped before Close, or nil.
func (s *Ring) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runErr
}

// Close stops the reader and waits until it has released its mapping.
func (s *Ring) Close() error {
	s.cancel()
	<-s.done
	s.mu.Lock()
	clear(s.subs)
	s.dropGOP()
	s.mu.Unlock()
	return nil
}

var _ frame.Source = (*Ring)(nil)
