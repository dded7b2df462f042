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

// encoderShare is one running session with the resources it holds.
type encoderShare struct {
	name    string
	session *nvenc.Session
	writer  *shmring.Writer
	cancel  context.CancelFunc
	done    chan struct{}
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
	s := &encoderShare{name: name, done: make(chan struct{})}
	if ec.Output != nil {
		path, size := ec.Output.Path, ec.Output.Size
		if path == "" {
			path = shmring.DefaultPath
		}
		if size == 0 {
			size = shmring.DefaultSize
		}
		w, err := shmring.CreateWriter(path, size, shmring.WithCRC(!ec.Output.DisableCRC))
		if err != nil {
			return nil, fmt.Errorf("opening output ring: %w", err)
		}
		s.writer = w
		sc.Output = w
	}
	sc.Logger = log
	sc.OnFrame = func(fs nvenc.FrameStats) { m.observe(name, fs) }
	sc.OnOpen = func(backend string, att []nvenc.Attempt) { m.opened(name, backend, att) }
	sess, err := nvenc.NewSession(sc, in)
	if err != nil {
		if s.writer != nil {
			_ = s.writer.Close()
		}
		return nil, err
	}
	s.session = sess
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		defer func() {
			if r := recover(); r != nil {
				log.Error("encoder session panicked", "panic", fmt.Sprint(r))
			}
		}()
		if err := sess.Run(ctx); err != nil {
			log.Error("encoder session ended", "error", err)
		}
	}()
	runningEncoders.Lock()
	runningEncoders.m[name] = s
	runningEncoders.Unlock()
	return s, nil
}

// rawRingReader creates the reader of an encoder's raw-frame ring. Frames
// over max_frame_size (default: the whole default raw ring) are dropped
// before any copy and counted as invalid raw frames.
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
		Logger: log.With("ring", path)})
}

// Destruct stops the session and closes the output ring.
func (s *encoderShare) Destruct() error {
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
