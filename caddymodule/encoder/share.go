package encoder

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sdr-os/sdr-caddy/nvenc"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// encoderSessions shares running encoding sessions across config reloads:
// a reload with an unchanged encoder keeps its session (no second encoder,
// no forced keyframe for viewers). The key holds every parameter.
var encoderSessions = caddy.NewUsagePool()

func encoderKey(name string, ec *EncoderConfig) (string, error) {
	b, err := json.Marshal(ec)
	if err != nil {
		return "", fmt.Errorf("sdr_encoder %s: %w", name, err)
	}
	return name + "\x00" + string(b), nil
}

// encoderShare is one session with the resources it holds. It is made in
// Provision and runs from start, which the app's Start calls: `caddy
// validate` provisions the app but must not create the output ring or
// attach the raw one.
type encoderShare struct {
	name    string
	session *nvenc.Session
	out     *EncoderOutput // the output ring to create at start, or nil
	log     *slog.Logger

	mu      sync.Mutex
	started bool
	writer  *shmring.Writer
	cancel  context.CancelFunc
	done    chan struct{}
}

// WriteFrame hands an encoded frame to the output ring; the session calls
// it only once start has created the ring.
func (s *encoderShare) WriteFrame(h shmring.Header, payload []byte) (shmring.Header, error) {
	return s.writer.WriteFrame(h, payload)
}

// runningEncoders lists the live sessions by name, for the admin endpoint
// and the metrics collector. During a reload two sessions of one name can
// overlap; the newer one is listed.
var runningEncoders = struct {
	sync.Mutex
	m map[string]*encoderShare
}{m: map[string]*encoderShare{}}

func listEncoders() []*encoderShare {
	runningEncoders.Lock()
	defer runningEncoders.Unlock()
	out := make([]*encoderShare, 0, len(runningEncoders.m))
	for _, s := range runningEncoders.m {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// newEncoderShare builds the session of one encoder; it opens nothing
// until start.
func newEncoderShare(name string, ec *EncoderConfig, m *encoderMetrics, log *slog.Logger) (*encoderShare, error) {
	sc, err := ec.sessionConfig(name)
	if err != nil {
		return nil, err
	}
	var in nvenc.Input
	if ec.Input == "pattern" {
		in = nvenc.PatternInput{Width: sc.Encoder.Width, Height: sc.Encoder.Height, Format: sc.Encoder.Input, FPS: sc.Encoder.FPS}
	} else {
		r, err := rawRingReader(name, ec, m, log)
		if err != nil {
			return nil, err
		}
		// The encoder consumes every raw frame: a paused writer's next
		// frame must not be lost (the watch ends with the reader).
		r.Watch()
		in = nvenc.RingInput{Reader: r, OnInvalid: func(err error) {
			m.invalid.WithLabelValues(name).Inc()
			log.Warn("raw ring frame rejected", "error", err)
		}}
	}
	s := &encoderShare{name: name, out: ec.Output, log: log, done: make(chan struct{})}
	if ec.Output != nil {
		sc.Output = s
	}
	sc.Logger = log
	sc.OnFrame = func(fs nvenc.FrameStats) { m.observe(name, fs) }
	sc.OnOpen = func(backend string, att []nvenc.Attempt) { m.opened(name, backend, att) }
	sess, err := nvenc.NewSession(sc, in)
	if err != nil {
		return nil, err
	}
	s.session = sess
	return s, nil
}

// start creates the output ring and runs the session. Calls after the
// first (a reloaded config that keeps the session) do nothing.
func (s *encoderShare) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return nil
	}
	if s.out != nil {
		path, size := s.out.Path, s.out.Size
		if path == "" {
			path = shmring.DefaultPath
		}
		if size == 0 {
			size = shmring.DefaultSize
		}
		w, err := shmring.CreateWriter(path, size, shmring.WithCRC(!s.out.DisableCRC))
		if err != nil {
			return fmt.Errorf("opening output ring: %w", err)
		}
		s.writer = w
	}
	s.started = true
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	log := s.log
	go func() {
		defer close(s.done)
		defer func() {
			if r := recover(); r != nil {
				log.Error("encoder session panicked", "panic", fmt.Sprint(r))
			}
		}()
		if err := s.session.Run(ctx); err != nil {
			log.Error("encoder session ended", "error", err)
		}
	}()
	runningEncoders.Lock()
	runningEncoders.m[s.name] = s
	runningEncoders.Unlock()
	return nil
}

// rawRingReader creates the reader of an encoder's raw-frame ring. Frames
// over max_frame_size (default: the whole default raw ring) are dropped
// before any copy and counted as invalid raw frames. Pictures reach the
// session in the reader's own copy buffers (PooledPayloads), which the
// session gives back once each is encoded or skipped.
func rawRingReader(name string, ec *EncoderConfig, m *encoderMetrics, log *slog.Logger) (*shmring.Reader, error) {
	path := ec.Path
	if path == "" {
		path = shmring.DefaultRawPath
	}
	maxFrame := ec.MaxFrameSize
	if maxFrame == 0 {
		maxFrame = shmring.DefaultRawMaxFrameSize
	}
	return shmring.NewReader(shmring.ReaderConfig{Path: path, Size: ec.Size, DisableCRC: ec.DisableCRC,
		MaxFrameSize: maxFrame, OnOversize: func(uint64) { m.invalid.WithLabelValues(name).Inc() },
		PooledPayloads: true, Logger: log.With("ring", path)})
}

// Destruct stops the session and closes the output ring.
func (s *encoderShare) Destruct() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return nil
	}
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("encoder %s did not stop within 10s", s.name)
	}
	runningEncoders.Lock()
	if runningEncoders.m[s.name] == s {
		delete(runningEncoders.m, s.name)
	}
	runningEncoders.Unlock()
	if s.writer != nil {
		return s.writer.Close()
	}
	return nil
}
