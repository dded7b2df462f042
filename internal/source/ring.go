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

// StopWait is how long Ring.Close waits for its reader to stop.
const StopWait = 5 * time.Second

// Ring is a frame.Source reading one ring file. It runs one shmring.Reader
// for all its subscribers, and keeps the current GOP (the latest keyframe
// and the frames since) so that a subscriber that comes later, such as the
// hub of a reloaded configuration, starts with a decodable picture at once.
type Ring struct {
	reader   *shmring.Reader
	fan      *Fanout
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	log      *slog.Logger
	stopWait time.Duration // how long Close waits for the reader

	mu      sync.Mutex
	started bool
	runErr  error
}

// OpenRing is NewRing and Start.
func OpenRing(cfg shmring.ReaderConfig, maxGOPBytes int) (*Ring, error) {
	s, err := NewRing(cfg, maxGOPBytes)
	if err != nil {
		return nil, err
	}
	s.Start()
	return s, nil
}

// NewRing creates the reader for cfg; it opens nothing until Start.
// maxGOPBytes <= 0 takes DefaultMaxGOPBytes. Close stops it. The reader
// runs with RestartGating, and its breaks go to NotifyBreaks (cfg's OnBreak
// is replaced).
func NewRing(cfg shmring.ReaderConfig, maxGOPBytes int) (*Ring, error) {
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Ring{fan: NewFanout(maxGOPBytes, lg.With("ring", cfg.Path)), ctx: ctx, cancel: cancel,
		done: make(chan struct{}), log: lg, stopWait: StopWait}
	// The deltas of a new writer run do not continue the old run's
	// pictures: after a restart nothing is forwarded until the new run's
	// keyframe, and the kept GOP goes at once (Fanout.Break).
	cfg.RestartGating = true
	cfg.OnBreak = func(restart bool) { s.fan.Break(frame.Break{Restart: restart}) }
	r, err := shmring.NewReader(cfg)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("opening ring source %s: %w", cfg.Path, err)
	}
	s.reader = r
	return s, nil
}

// Start starts reading: the reader maps the ring file, or waits for it.
// Calls after the first, and calls after Close, do nothing.
func (s *Ring) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.ctx.Err() != nil {
		return
	}
	s.started = true
	go s.run(s.ctx)
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
	// A delta after a gap stays in the GOP: connected subscribers get it too
	// (keyframe gating, when on, holds such deltas back in the reader), and a
	// new one still starts at the keyframe. After a restart the reader
	// delivers nothing before the new run's keyframe.
	s.fan.Publish(frame.Frame{Header: rf.Header, Payload: rf.Payload, Arrived: rf.Arrived,
		Discontinuity: rf.Gap > 0 || rf.Restart}, false)
}

// Subscribe calls fn with the current GOP at once, then with every new
// frame, in order and never concurrently, until cancel is called. fn must
// not block.
func (s *Ring) Subscribe(fn func(frame.Frame)) (cancel func()) { return s.fan.Subscribe(fn) }

// NotifyBreaks calls fn as soon as the reader detects a writer restart or
// missed frames, in order with the frames, until cancel is called. fn must
// not block.
func (s *Ring) NotifyBreaks(fn func(frame.Break)) (cancel func()) { return s.fan.NotifyBreaks(fn) }

// Watch tells the reader that the frames are watched live: until unwatch is
// called, a paused writer is polled often enough that the frame ending the
// pause is not lost (shmring.Reader.Watch).
func (s *Ring) Watch() (unwatch func()) { return s.reader.Watch() }

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

// Close stops the reader and waits until it has released its mapping, for
// at most StopWait: a reader held up by something that blocks (a
// subscriber that breaks its promise not to, a system call that hangs)
// must not hold up a config unload or the process's shutdown. Such a reader
// is left to stop, and unmap the ring, when what holds it up returns;
// Close then returns an error that says so.
func (s *Ring) Close() error {
	s.mu.Lock()
	s.cancel()
	started := s.started
	s.mu.Unlock()
	if !started {
		s.fan.Close()
		return nil
	}
	t := time.NewTimer(s.stopWait)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		path := s.reader.Config().Path
		s.log.Error("ring reader did not stop; left to stop on its own", "ring", path, "waited", s.stopWait)
		// The blocked reader may hold the fan-out's lock: close it after.
		go func() {
			<-s.done
			s.fan.Close()
		}()
		return fmt.Errorf("closing ring source %s: the reader did not stop within %s; it stops when what holds it up returns", path, s.stopWait)
	}
	s.fan.Close()
	return nil
}

var (
	_ frame.Source        = (*Ring)(nil)
	_ frame.BreakNotifier = (*Ring)(nil)
)
