// Package encoder is the sdr_encoder app: named FFmpeg encoders (package
// nvenc) that turn raw frames into streams sdr_stream serves, its admin
// endpoint /sdr/encoders, and the sdr-nvenc-probe subcommand.
package encoder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/nvenc"
	"github.com/sdr-os/sdr-caddy/shmring"
)

func init() {
	caddy.RegisterModule(new(EncoderApp))
}

// NATS subjects the encoder app uses (docs/protocol.md, "NATS subjects").
const (
	subjectForceIDR   = "command.genesis.force_idr"
	subjectSettings   = "command.genesis.settings"
	subjectFrameStats = "telemetry.frame.stats"
)

// EncoderApp is the sdr_encoder app: named encoders, each reading raw
// frames (the raw-frame ring or the built-in test pattern), encoding them
// with FFmpeg (h264_nvenc, else libx264; hevc_nvenc, else libx265; mjpeg
// for JPEG) and offering the result as a named in-process stream that
// sdr_stream uses as its source (`source encoder <name>`), and optionally
// writing it to an encoded-frame ring for other readers.
//
// With the sdr_nats app configured, each encoder takes
// command.genesis.force_idr and command.genesis.settings and publishes
// telemetry.frame.stats once a second.
type EncoderApp struct {
	// Encoders by name. The name is what sdr_stream's `source encoder`
	// refers to and the `encoder` label of the metrics.
	Encoders map[string]*EncoderConfig `json:"encoders,omitempty"`

	ctx      caddy.Context
	log      *zap.Logger
	shares   map[string]*encoderShare // acquired in Provision
	keys     map[string]string
	natsConn *nats.Conn
	subs     []*nats.Subscription
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// EncoderConfig is one named encoder.
type EncoderConfig struct {
	// Input is where raw frames come from: "shm" (the raw-frame ring,
	// default) or "pattern" (the built-in moving test pattern).
	Input string `json:"input,omitempty"`
	// Path of the raw-frame ring; default /dev/shm/sdr_os_ipc/raw.
	Path string `json:"path,omitempty"`
	// Size of the raw-frame ring in bytes, control region included; 0 takes
	// the file's size.
	Size int64 `json:"size,omitempty"`
	// DisableCRC skips the CRC check of raw frames (for writers with CRC off).
	DisableCRC bool `json:"disable_crc,omitempty"`
	// MaxFrameSize is the largest raw frame payload, in bytes, the encoder
	// reads from the raw-frame ring; a larger frame is dropped before any
	// copy and counted in caddy_sdr_encoder_raw_invalid_total. 0 takes the
	// default: 67108864 (64 MiB, the whole default raw ring; 4K RGBA is
	// about 33 MB).
	MaxFrameSize int64 `json:"max_frame_size,omitempty"`
	// Width and Height of the test pattern; default 1280x720.
	Width  int `json:"width,omitempty"`
	Height int `json:"height,omitempty"`
	// PixelFormat of the test pattern: i420 (default), nv12, rgba, bgra, rgb24.
	PixelFormat string `json:"pixel_format,omitempty"`
	// Codec is h264 (default), hevc or jpeg.
	Codec string `json:"codec,omitempty"`
	// FPS is the nominal frame rate (rate control; the test pattern's
	// rate). Default 30.
	FPS int `json:"fps,omitempty"`
	// MaxFPS, when set, encodes at most that many frames per second; raw
	// frames in between are skipped (counted).
	MaxFPS int `json:"max_fps,omitempty"`
	// BitrateKbps is the constant bit rate in kbit/s; default 4000.
	BitrateKbps int `json:"bitrate_kbps,omitempty"`
	// GOP is the number of frames from one IDR to the next; default 60.
	GOP int `json:"gop,omitempty"`
	// Preset is p1 (fastest, default) .. p7, or an x264 preset name.
	Preset string `json:"preset,omitempty"`
	// Profile of H.264: constrained_baseline (default), main or high.
	Profile string `json:"profile,omitempty"`
	// IntraRefresh replaces periodic IDR frames by a moving intra column.
	IntraRefresh bool `json:"intra_refresh,omitempty"`
	// JPEGQuality is 1..100; default 80.
	JPEGQuality int `json:"jpeg_quality,omitempty"`
	// Threads of the software encoders; 0 lets FFmpeg choose.
	Threads int `json:"threads,omitempty"`
	// Backends replaces the preference order, e.g. ["libx264"].
	Backends []string `json:"backends,omitempty"`
	// Output, when set, also writes the encoded frames to an encoded-frame
	// ring (docs/protocol.md, "Encoded-frame ring") for other readers.
	Output *EncoderOutput `json:"output,omitempty"`
	// NATS turns the NATS commands and telemetry off when false; default
	// on when the sdr_nats app is configured.
	NATS *bool `json:"nats,omitempty"`
}

// EncoderOutput is an encoded-frame ring the encoder writes.
type EncoderOutput struct {
	// Path of the ring; default /dev/shm/sdr_os_ipc/frames.
	Path string `json:"path,omitempty"`
	// Size of the ring in bytes; default 4 MiB.
	Size int64 `json:"size,omitempty"`
	// DisableCRC writes 0 instead of the payload CRC.
	DisableCRC bool `json:"disable_crc,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (*EncoderApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "sdr_encoder",
		New: func() caddy.Module { return new(EncoderApp) },
	}
}

// Provision validates the encoders and takes (or shares, across config
// reloads) one encoding session per encoder; Start runs it, so that caddy
// validate opens no ring.
func (a *EncoderApp) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.log = ctx.Logger()
	a.shares = map[string]*encoderShare{}
	a.keys = map[string]string{}
	m := registerEncoderMetrics(ctx.GetMetricsRegistry(), a.log)
	if err := a.Validate(); err != nil {
		return err
	}
	if !nvenc.Compiled {
		a.log.Warn("sdr_encoder: " + nvenc.ErrNotCompiled.Error())
	}
	slogger := slog.New(zapslog.NewHandler(caddy.Log().Named("sdr_encoder").Core()))
	nvenc.SetLogger(slogger.With("component", "ffmpeg"))
	for _, name := range a.names() {
		ec := a.Encoders[name]
		key, err := encoderKey(name, ec)
		if err != nil {
			return err
		}
		v, _, err := encoderSessions.LoadOrNew(key, func() (caddy.Destructor, error) {
			return newEncoderShare(name, ec, m, slogger.With("encoder", name))
		})
		if err != nil {
			return fmt.Errorf("sdr_encoder %s: %w", name, err)
		}
		a.shares[name], a.keys[name] = v.(*encoderShare), key
	}
	if app, err := ctx.AppIfConfigured("sdr_nats"); err == nil {
		if c, ok := app.(interface{ Conn() *nats.Conn }); ok {
			a.natsConn = c.Conn()
		}
	} else if !errors.Is(err, caddy.ErrNotConfigured) {
		return fmt.Errorf("sdr_encoder: loading sdr_nats: %w", err)
	}
	return nil
}

// names returns the encoder names, sorted.
func (a *EncoderApp) names() []string {
	names := make([]string, 0, len(a.Encoders))
	for n := range a.Encoders {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Validate checks every encoder's configuration.
func (a *EncoderApp) Validate() error {
	for _, name := range a.names() {
		ec := a.Encoders[name]
		if name == "" {
			return errors.New("sdr_encoder: an encoder has an empty name")
		}
		if ec == nil {
			return fmt.Errorf("sdr_encoder %s: no configuration", name)
		}
		if _, err := ec.sessionConfig(name); err != nil {
			return fmt.Errorf("sdr_encoder %s: %w", name, err)
		}
	}
	return nil
}

// sessionConfig maps the JSON configuration onto nvenc's.
func (ec *EncoderConfig) sessionConfig(name string) (nvenc.SessionConfig, error) {
	sc := nvenc.SessionConfig{Name: name, MaxFPS: ec.MaxFPS}
	c := nvenc.Config{
		FPS: ec.FPS, BitrateKbps: ec.BitrateKbps, GOP: ec.GOP, Preset: ec.Preset, Profile: ec.Profile,
		IntraRefresh: ec.IntraRefresh, JPEGQuality: ec.JPEGQuality, Threads: ec.Threads, Backends: ec.Backends,
	}
	if ec.Codec != "" {
		codec, err := nvenc.ParseCodec(ec.Codec)
		if err != nil {
			return sc, err
		}
		c.Codec = codec
	}
	switch ec.Input {
	case "", "shm":
		if ec.Width != 0 || ec.Height != 0 || ec.PixelFormat != "" {
			return sc, errors.New("width, height and pixel_format apply to the pattern input; the raw ring says its own")
		}
		if ec.Size < 0 {
			return sc, fmt.Errorf("raw ring size %d is negative", ec.Size)
		}
		if ec.MaxFrameSize < 0 {
			return sc, fmt.Errorf("raw ring max_frame_size %d is negative", ec.MaxFrameSize)
		}
	case "pattern":
		if ec.Path != "" || ec.Size != 0 || ec.DisableCRC || ec.MaxFrameSize != 0 {
			return sc, errors.New("path, size, crc and max_frame_size apply to the shm input, not to the pattern")
		}
		w, h := ec.patternSize()
		pf, err := encoderPixelFormat(ec.PixelFormat)
		if err != nil {
			return sc, err
		}
		c.Width, c.Height, c.Input = w, h, pf
		if w < 192 || h < 64 || w%2 != 0 || h%2 != 0 || w > 8192 || h > 8192 {
			return sc, fmt.Errorf("pattern size %dx%d: want even sizes from 192x64 to 8192x8192", w, h)
		}
	default:
		return sc, fmt.Errorf("input %q: want shm or pattern", ec.Input)
	}
	if ec.MaxFPS < 0 || ec.MaxFPS > 240 {
		return sc, fmt.Errorf("max_fps %d: want 0..240", ec.MaxFPS)
	}
	if ec.Output != nil && ec.Output.Size != 0 && ec.Output.Size < shmring.OffPayload+1024 {
		return sc, fmt.Errorf("output ring size %d is too small", ec.Output.Size)
	}
	check := c
	if check.Width == 0 {
		check.Width, check.Height = 16, 16
	}
	if err := check.WithDefaults().Validate(); err != nil {
		return sc, err
	}
	sc.Encoder = c
	return sc, nil
}

func (ec *EncoderConfig) patternSize() (int, int) {
	w, h := ec.Width, ec.Height
	if w == 0 && h == 0 {
		w, h = 1280, 720
	}
	return w, h
}

// encoderPixelFormat names a raw pixel format.
func encoderPixelFormat(s string) (shmring.Codec, error) {
	switch s {
	case "", "i420", "yuv420p":
		return shmring.CodecI420, nil
	case "nv12":
		return shmring.CodecNV12, nil
	case "rgba":
		return shmring.CodecRGBA, nil
	case "bgra":
		return shmring.CodecBGRA, nil
	case "rgb24":
		return shmring.CodecRGB24, nil
	}
	return 0, fmt.Errorf("pixel format %q: want i420, nv12, rgba, bgra or rgb24", s)
}

// Start runs the encoding sessions (a session kept from the previous config
// already runs), subscribes to the NATS commands and starts the telemetry
// publisher.
func (a *EncoderApp) Start() error {
	for _, name := range a.names() {
		if err := a.shares[name].start(); err != nil {
			return fmt.Errorf("sdr_encoder %s: %w", name, err)
		}
	}
	if a.natsConn == nil {
		if len(a.Encoders) > 0 {
			a.log.Info("sdr_nats is not configured: no NATS force_idr/settings, no telemetry.frame.stats")
		}
		return nil
	}
	var ctx context.Context
	ctx, a.cancel = context.WithCancel(context.Background())
	var natsShares []*encoderShare
	for _, name := range a.names() {
		if n := a.Encoders[name].NATS; n != nil && !*n {
			continue
		}
		natsShares = append(natsShares, a.shares[name])
	}
	if len(natsShares) == 0 {
		return nil
	}
	log := a.log.Named("nats")
	sub, err := a.natsConn.Subscribe(subjectForceIDR, func(*nats.Msg) {
		for _, s := range natsShares {
			s.session.RequestKeyframe()
		}
	})
	if err != nil {
		return fmt.Errorf("sdr_encoder: subscribing to %s: %w", subjectForceIDR, err)
	}
	a.subs = append(a.subs, sub)
	sub, err = a.natsConn.Subscribe(subjectSettings, func(m *nats.Msg) {
		st, err := nvenc.ParseSettings(m.Data)
		if err != nil {
			log.Warn("ignoring settings", zap.Error(err))
			return
		}
		for _, s := range natsShares {
			if err := s.session.Reconfigure(st); err != nil {
				log.Warn("ignoring settings", zap.String("encoder", s.name), zap.Error(err))
				continue
			}
			log.Info("settings applied", zap.String("encoder", s.name), zap.ByteString("settings", m.Data))
		}
	})
	if err != nil {
		a.unsubscribe()
		return fmt.Errorf("sdr_encoder: subscribing to %s: %w", subjectSettings, err)
	}
	a.subs = append(a.subs, sub)
	a.wg.Add(1)
	go a.publishStats(ctx, natsShares, log)
	return nil
}

// publishStats publishes telemetry.frame.stats for each encoder once a
// second, while it has encoded something new.
func (a *EncoderApp) publishStats(ctx context.Context, shares []*encoderShare, log *zap.Logger) {
	defer a.wg.Done()
	defer func() {
		if r := recover(); r != nil {
			log.Error("telemetry publisher panicked", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := map[string]uint64{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, s := range shares {
			fs, ok := s.session.LastFrame()
			if !ok || last[s.name] == fs.FrameID {
				continue
			}
			last[s.name] = fs.FrameID
			body, err := json.Marshal(fs)
			if err != nil {
				continue
			}
			if err := a.natsConn.Publish(subjectFrameStats, body); err != nil && log.Core().Enabled(zap.DebugLevel) {
				log.Debug("publishing frame stats", zap.Error(err))
			}
		}
	}
}

func (a *EncoderApp) unsubscribe() {
	for _, s := range a.subs {
		_ = s.Unsubscribe()
	}
	a.subs = nil
}

// Stop ends the NATS subscriptions and the telemetry publisher.
func (a *EncoderApp) Stop() error {
	a.unsubscribe()
	if a.cancel != nil {
		a.cancel()
		a.wg.Wait()
		a.cancel = nil
	}
	return nil
}

// Cleanup releases the encoding sessions this config took; the last user
// of a session stops it.
func (a *EncoderApp) Cleanup() error {
	var errs []error
	for name, key := range a.keys {
		if _, err := encoderSessions.Delete(key); err != nil {
			errs = append(errs, fmt.Errorf("sdr_encoder %s: releasing session: %w", name, err))
		}
	}
	a.keys, a.shares = nil, nil
	return errors.Join(errs...)
}

// Stream returns the named encoder's output as a frame source; it also
// takes keyframe requests (frame.KeyframeRequester).
func (a *EncoderApp) Stream(name string) (frame.Source, error) {
	s, ok := a.shares[name]
	if !ok {
		return nil, fmt.Errorf("no encoder named %q in sdr_encoder (have %v)", name, a.names())
	}
	return s.session, nil
}

// Interface guards.
var (
	_ caddy.App          = (*EncoderApp)(nil)
	_ caddy.Provisioner  = (*EncoderApp)(nil)
	_ caddy.Validator    = (*EncoderApp)(nil)
	_ caddy.CleanerUpper = (*EncoderApp)(nil)
	_ frame.Provider     = (*EncoderApp)(nil)
)
