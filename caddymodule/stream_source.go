package caddymodule

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap/exp/zapslog"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/source"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// ringPool holds one ring reader per ring file and reader setting in the
// process, shared by every sdr_stream handler that reads it and kept across
// config reloads (the new config takes it before the old one gives it back).
var ringPool = caddy.NewUsagePool()

// ringShare is a pooled ring source.
type ringShare struct{ *source.Ring }

// Destruct stops the reader and unmaps the ring, when its last handler is
// gone.
func (r ringShare) Destruct() error { return r.Close() }

// ringKey names a ring reader by everything that changes its construction.
func ringKey(c shmring.ReaderConfig, maxGOP int) string {
	return fmt.Sprintf("%s|size=%d|crc=%t|gating=%t|maxframe=%d|gop=%d", c.Path, c.Size, !c.DisableCRC, c.KeyframeGating, c.MaxFrameSize, maxGOP)
}

// shm returns the SHM source with defaults filled in.
func (s *Stream) shm() SHMSource {
	var sh SHMSource
	if s.Source != nil && s.Source.SHM != nil {
		sh = *s.Source.SHM
	}
	if sh.Path == "" {
		sh.Path = shmring.DefaultPath
		if sh.Size == 0 {
			sh.Size = shmring.DefaultSize
		}
	}
	return sh
}

// openSource takes the stream's frame source: a shared ring reader, a
// stream of the sdr_encoder app, or a shared subscription to a NATS video
// subject.
func (s *Stream) openSource(ctx caddy.Context) error {
	if s.Source != nil && s.Source.NATS != nil {
		return s.openNATSSource(ctx)
	}
	if s.Source != nil && s.Source.Encoder != "" {
		app, err := ctx.AppIfConfigured("sdr_encoder")
		if errors.Is(err, caddy.ErrNotConfigured) {
			return fmt.Errorf("sdr_stream %s: source encoder %q: no sdr_encoder app is configured", s.name, s.Source.Encoder)
		}
		if err != nil {
			return fmt.Errorf("sdr_stream %s: source encoder %q: %w", s.name, s.Source.Encoder, err)
		}
		p, ok := app.(frame.Provider)
		if !ok {
			return fmt.Errorf("sdr_stream %s: source encoder %q: the sdr_encoder app (%T) provides no streams", s.name, s.Source.Encoder, app)
		}
		src, err := p.Stream(s.Source.Encoder)
		if err != nil {
			return fmt.Errorf("sdr_stream %s: source encoder %q: %w", s.name, s.Source.Encoder, err)
		}
		s.src = src
		return nil
	}
	sh := s.shm()
	repl := caddy.NewReplacer()
	cfg := shmring.ReaderConfig{
		Path:           repl.ReplaceKnown(sh.Path, ""),
		Size:           sh.Size,
		DisableCRC:     sh.DisableCRC,
		KeyframeGating: sh.KeyframeGating,
		MaxFrameSize:   sh.MaxFrameSize,
	}
	key := ringKey(cfg, s.MaxGOPBytes)
	v, _, err := ringPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		// The reader outlives this config: log through the process logger.
		cfg.Logger = slog.New(zapslog.NewHandler(caddy.Log().Named("sdr_stream.ring").Core()))
		r, err := source.OpenRing(cfg, s.MaxGOPBytes)
		if err != nil {
			return nil, err
		}
		return ringShare{r}, nil
	})
	if err != nil {
		return fmt.Errorf("sdr_stream %s: %w", s.name, err)
	}
	rs := v.(ringShare)
	s.ring, s.ringKey, s.src = &rs, key, rs
	return nil
}
