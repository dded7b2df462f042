package stream

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrstart"
	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/natsvideo"
	"github.com/sdr-os/sdr-caddy/internal/source"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// ringPool holds one ring reader per ring file and reader setting in the
// process, shared by every sdr_stream and sdr_whep handler that reads it and
// kept across config reloads (the new config takes it before the old one
// gives it back).
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

// sourceHandle is what a handler (sdr_stream or sdr_whep) took to get its
// frames: a shared ring reader, a stream of the sdr_encoder app, or a shared
// subscription to a NATS video subject. openSource takes it; release gives
// back exactly what was taken.
type sourceHandle struct {
	src  frame.Source
	desc string // what the source is, for the log: "shm <path>", "encoder <name>", "nats <subject>"

	ring    *ringShare // the shared ring reader, when the source is a ring
	ringKey string
	nats    *natsvideo.Source // the shared subscription, when the source is nats
	natsKey string
}

// sourceSettings are a handler's settings that change how its source is
// built; who names the handler in errors ("sdr_stream front").
type sourceSettings struct {
	who         string
	log         *zap.Logger
	maxGOPBytes int
	idrCoalesce time.Duration
}

// shmSource returns the SHM source of cfg with defaults filled in.
func shmSource(cfg *StreamSource) SHMSource {
	var sh SHMSource
	if cfg != nil && cfg.SHM != nil {
		sh = *cfg.SHM
	}
	if sh.Path == "" {
		sh.Path = shmring.DefaultPath
		if sh.Size == 0 {
			sh.Size = shmring.DefaultSize
		}
	}
	return sh
}

// openSource takes the frame source cfg names (nil: the default ring).
func openSource(ctx caddy.Context, cfg *StreamSource, set sourceSettings) (*sourceHandle, error) {
	switch {
	case cfg != nil && cfg.NATS != nil:
		return openNATSSource(ctx, cfg.NATS, set)
	case cfg != nil && cfg.Encoder != "":
		return openEncoderSource(ctx, cfg.Encoder, set)
	}
	return openRingSource(ctx, shmSource(cfg), set)
}

// openEncoderSource takes a stream of the sdr_encoder app.
func openEncoderSource(ctx caddy.Context, name string, set sourceSettings) (*sourceHandle, error) {
	app, err := ctx.AppIfConfigured("sdr_encoder")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, fmt.Errorf("%s: source encoder %q: no sdr_encoder app is configured", set.who, name)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: source encoder %q: %w", set.who, name, err)
	}
	p, ok := app.(frame.Provider)
	if !ok {
		return nil, fmt.Errorf("%s: source encoder %q: the sdr_encoder app (%T) provides no streams", set.who, name, app)
	}
	src, err := p.Stream(name)
	if err != nil {
		return nil, fmt.Errorf("%s: source encoder %q: %w", set.who, name, err)
	}
	return &sourceHandle{src: src, desc: "encoder " + name}, nil
}

// openRingSource takes the shared reader of a ring file. The reader starts
// when Caddy starts the config (the sdr_start app), not for caddy validate.
func openRingSource(ctx caddy.Context, sh SHMSource, set sourceSettings) (*sourceHandle, error) {
	starter, err := sdrstart.Of(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", set.who, err)
	}
	repl := caddy.NewReplacer()
	cfg := shmring.ReaderConfig{
		Path:           repl.ReplaceKnown(sh.Path, ""),
		Size:           sh.Size,
		DisableCRC:     sh.DisableCRC,
		KeyframeGating: sh.KeyframeGating,
		MaxFrameSize:   sh.MaxFrameSize,
	}
	key := ringKey(cfg, set.maxGOPBytes)
	v, _, err := ringPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		// The reader outlives this config: log through the process logger.
		cfg.Logger = slog.New(zapslog.NewHandler(caddy.Log().Named("sdr_stream.ring").Core()))
		r, err := source.NewRing(cfg, set.maxGOPBytes)
		if err != nil {
			return nil, err
		}
		return ringShare{r}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", set.who, err)
	}
	rs := v.(ringShare)
	h := &sourceHandle{src: rs, desc: "shm " + sh.Path, ring: &rs, ringKey: key}
	if err := starter.OnStart(set.who+": ring "+cfg.Path, func() error { rs.Start(); return nil }); err != nil {
		return nil, errors.Join(err, h.release(set.who))
	}
	return h, nil
}

// release gives back what openSource took.
func (h *sourceHandle) release(who string) error {
	var errs []error
	if h.nats != nil {
		if _, err := natsSourcePool.Delete(h.natsKey); err != nil {
			errs = append(errs, fmt.Errorf("%s: releasing nats source %s: %w", who, h.natsKey, err))
		}
		h.nats = nil
	}
	if h.ring != nil {
		if _, err := ringPool.Delete(h.ringKey); err != nil {
			errs = append(errs, fmt.Errorf("%s: releasing ring reader %s: %w", who, h.ringKey, err))
		}
		h.ring = nil
	}
	return errors.Join(errs...)
}

// validate checks that exactly one source is set, and its settings.
func (c *StreamSource) validate() error {
	n := 0
	if c.SHM != nil {
		n++
	}
	if c.Encoder != "" {
		n++
	}
	if c.NATS != nil {
		n++
	}
	if n != 1 {
		return fmt.Errorf("source: set exactly one of shm, encoder and nats, got %d", n)
	}
	if sh := c.SHM; sh != nil && sh.Size != 0 && sh.Size < 48 {
		return fmt.Errorf("shm size %d: want 0 (the file's size) or at least 48 bytes", sh.Size)
	}
	if sh := c.SHM; sh != nil && sh.MaxFrameSize < 0 {
		return fmt.Errorf("shm max_frame_size %d is negative", sh.MaxFrameSize)
	}
	if c.NATS != nil {
		if err := natsvideo.ValidateSubject(c.NATS.Subject); err != nil {
			return fmt.Errorf("source nats: %w", err)
		}
	}
	return nil
}
