package stream

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/natsvideo"
)

// Scale-out glue of sdr_stream: an origin publishes a stream on a NATS
// subject (`publish`), an edge takes a subject as its source (`source nats`).
// The cores are in internal/natsvideo; this file maps the configuration
// onto them and shares them across config reloads.

// NATSSource is a video subject that an origin's sdr_stream publishes
// (`publish`), received through the sdr_nats app's connection.
type NATSSource struct {
	// Subject is the video subject, e.g. "video.front" (the origin's
	// default for a stream named front). Required.
	Subject string `json:"subject"`
	// KeyframeGating holds back the deltas that follow a gap in frame_seq
	// (frames lost while NATS reconnected, or dropped as a slow consumer)
	// or an origin restart, until the next keyframe, which the edge asks
	// the origin for at once. Default: true.
	KeyframeGating *bool `json:"keyframe_gating,omitempty"`
	// DisableCRC skips the check of each frame's payload against the CRC-32
	// in its header (frames whose header carries CRC 0 are never checked).
	// Default: false (checked).
	DisableCRC bool `json:"disable_crc,omitempty"`
}

// StreamPublish puts every frame of the stream on a NATS subject, as the
// 32-byte header followed by the payload, for edges to fan out. Frames
// larger than the server's max_payload go in parts. Keyframe requests from
// edges arrive on <subject>.force_idr and reach the stream's producer
// coalesced: an sdr_encoder stream directly, a ring's writer (the simulator)
// as command.genesis.force_idr.
type StreamPublish struct {
	// Subject to publish on. Default: "video.<stream name>".
	Subject string `json:"subject,omitempty"`
}

// The process's NATS video sources and publishers, shared by handlers and
// across config reloads like the ring readers.
var (
	natsSourcePool = caddy.NewUsagePool()
	publisherPool  = caddy.NewUsagePool()
)

type natsSourceShare struct{ *natsvideo.Source }

func (n natsSourceShare) Destruct() error { return n.Close() }

type publisherShare struct{ *natsvideo.Publisher }

func (p publisherShare) Destruct() error { return p.Close() }

// publishSubject is the subject the stream publishes on.
func (s *Stream) publishSubject() string {
	if s.Publish == nil {
		return ""
	}
	if s.Publish.Subject != "" {
		return s.Publish.Subject
	}
	name := s.Name
	if name == "" {
		name = "default"
	}
	return natsvideo.DefaultSubject(name)
}

// validatePublish checks the publish settings.
func (s *Stream) validatePublish() error {
	if s.Publish == nil {
		return nil
	}
	subj := s.publishSubject()
	if err := natsvideo.ValidateSubject(subj); err != nil {
		return fmt.Errorf("sdr_stream %s: publish: %w", s.name, err)
	}
	if s.Source != nil && s.Source.NATS != nil && s.Source.NATS.Subject == subj {
		return fmt.Errorf("sdr_stream %s: publish subject %q is the stream's own nats source", s.name, subj)
	}
	return nil
}

// natsAppConn returns the sdr_nats app's connection; who and what name the
// handler and what needs it, in errors.
func natsAppConn(ctx caddy.Context, who, what string) (*nats.Conn, error) {
	app, err := ctx.AppIfConfigured("sdr_nats")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, fmt.Errorf("%s: %s needs the sdr_nats app (the sdr_nats global option)", who, what)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %s: loading the sdr_nats app: %w", who, what, err)
	}
	c, ok := app.(interface{ Conn() *nats.Conn })
	if !ok {
		return nil, fmt.Errorf("%s: %s: the sdr_nats app (%T) offers no connection", who, what, app)
	}
	nc := c.Conn()
	if nc == nil {
		return nil, fmt.Errorf("%s: %s: the sdr_nats app has no connection", who, what)
	}
	return nc, nil
}

// openNATSSource takes the shared subscription to a video subject.
func openNATSSource(ctx caddy.Context, ns *NATSSource, set sourceSettings) (*sourceHandle, error) {
	what := "source nats " + ns.Subject
	nc, err := natsAppConn(ctx, set.who, what)
	if err != nil {
		return nil, err
	}
	registerScaleMetrics(ctx.GetMetricsRegistry(), set.log)
	cfg := natsvideo.SourceConfig{
		Subject:          ns.Subject,
		NoKeyframeGating: ns.KeyframeGating != nil && !*ns.KeyframeGating,
		DisableCRC:       ns.DisableCRC,
		MaxGOPBytes:      set.maxGOPBytes,
		IDRCoalesce:      set.idrCoalesce,
	}
	key := fmt.Sprintf("%p|%s|gating=%t|crc=%t|gop=%d|idr=%d", nc, cfg.Subject, !cfg.NoKeyframeGating, !cfg.DisableCRC, cfg.MaxGOPBytes, cfg.IDRCoalesce)
	v, _, err := natsSourcePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		// The source outlives this config: log through the process logger.
		cfg.Logger = slog.New(zapslog.NewHandler(caddy.Log().Named("sdr_stream.nats").Core()))
		src, err := natsvideo.OpenSource(nc, cfg)
		if err != nil {
			return nil, err
		}
		return natsSourceShare{src}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", set.who, what, err)
	}
	src := v.(natsSourceShare).Source
	return &sourceHandle{src: src, desc: "nats " + ns.Subject, nats: src, natsKey: key}, nil
}

// idrCoalesce resolves a handler's idr_coalesce: 0 takes the default.
func idrCoalesce(d caddy.Duration) time.Duration {
	if d > 0 {
		return time.Duration(d)
	}
	return natsvideo.DefaultIDRCoalesce
}

// startPublish takes the shared publisher of the stream's source on its
// subject, when publish is set.
func (s *Stream) startPublish(ctx caddy.Context) error {
	if s.Publish == nil {
		return nil
	}
	subj := s.publishSubject()
	what := "publish " + subj
	nc, err := natsAppConn(ctx, "sdr_stream "+s.name, what)
	if err != nil {
		return err
	}
	registerScaleMetrics(ctx.GetMetricsRegistry(), s.log)
	src := s.source.src
	cfg := natsvideo.PublisherConfig{Subject: subj, IDRCoalesce: idrCoalesce(s.IDRCoalesce)}
	if kr, ok := src.(frame.KeyframeRequester); ok {
		// An in-process encoder (or an upstream origin): ask it directly.
		cfg.Requester = kr
	}
	key := fmt.Sprintf("%p|%s|%s|idr=%d", nc, subj, sourceIdentity(src), cfg.IDRCoalesce)
	v, _, err := publisherPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		cfg.Logger = slog.New(zapslog.NewHandler(caddy.Log().Named("sdr_stream.publish").Core()))
		p, err := natsvideo.NewPublisher(nc, src, cfg)
		if err != nil {
			return nil, err
		}
		return publisherShare{p}, nil
	})
	if err != nil {
		return fmt.Errorf("sdr_stream %s: %s: %w", s.name, what, err)
	}
	s.pubKey, s.pub = key, v.(publisherShare).Publisher
	s.log.Info("publishing stream on nats", zap.String("stream", s.name), zap.String("subject", subj),
		zap.String("keyframe_requests", natsvideo.IDRSubject(subj)))
	return nil
}

// sourceIdentity names the object behind a source, so that a publisher is
// shared exactly as long as its source is.
func sourceIdentity(src frame.Source) string {
	switch v := src.(type) {
	case ringShare:
		return fmt.Sprintf("ring:%p", v.Ring)
	case *ringShare:
		return fmt.Sprintf("ring:%p", v.Ring)
	}
	if rv := reflect.ValueOf(src); rv.Kind() == reflect.Pointer {
		return fmt.Sprintf("%T:%#x", src, rv.Pointer())
	}
	return fmt.Sprintf("%T:%v", src, src)
}

// stopPublish gives the publisher back, if startPublish took it.
func (s *Stream) stopPublish() error {
	if s.pub == nil {
		return nil
	}
	s.pub = nil
	if _, err := publisherPool.Delete(s.pubKey); err != nil {
		return fmt.Errorf("sdr_stream %s: releasing publisher %s: %w", s.name, s.pubKey, err)
	}
	return nil
}
