package stream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcaddyfile"
	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrstart"
	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/keyreq"
	"github.com/sdr-os/sdr-caddy/internal/origin"
	"github.com/sdr-os/sdr-caddy/internal/rtc"
)

func init() {
	caddy.RegisterModule(new(WHEP))
}

// whepMaxOffer bounds the SDP offer a client may POST.
const whepMaxOffer = 64 << 10

// WHEP serves a stream to WebRTC players with the WebRTC-HTTP Egress
// Protocol: a POST of an SDP offer (Content-Type application/sdp) creates a
// session and answers 201 Created with the SDP answer, every candidate
// included, and a Location naming the session; a DELETE of that location
// ends it. Standard players (GStreamer whepsrc, OBS, browsers) watch the
// stream's H.264 video; the browser's `control` and `commands`
// DataChannels, when opened, go to NATS through the stream's safety gate,
// from a browser whose POST passed the same Origin and Host rules as
// sdr_stream's WebSockets (package origin); every session gets the video.
//
// The handler takes its frames from the same shared source as sdr_stream
// (one ring reader per ring file in the process).
type WHEP struct {
	// Name of the stream: its label in metrics and the name of its safety
	// gate in the sdr_nats app. Default: "default".
	Name string `json:"name,omitempty"`

	// Source of the frames, as in sdr_stream. Default: the SHM ring at
	// /dev/shm/sdr_os_ipc/frames, 4 MiB.
	Source *StreamSource `json:"source,omitempty"`

	// MaxGOPBytes is the GOP kept by the source for joining sessions; it
	// is part of the shared source's identity, so set it as on the
	// sdr_stream handler of the same ring. Default: 32 MiB.
	MaxGOPBytes int `json:"max_gop_bytes,omitempty"`

	// IDRCoalesce is the shortest interval between two keyframe requests
	// sent to the producer. Default: 500ms.
	IDRCoalesce caddy.Duration `json:"idr_coalesce,omitempty"`

	// WebRTC is the ICE and DataChannel setup.
	WebRTC *RTCConfig `json:"webrtc,omitempty"`

	// CommandTrust holds the origins and hosts whose browsers' sessions
	// may send commands on their DataChannels (allowed_origins,
	// allowed_hosts), judged on the POST that creates the session, as
	// sdr_stream judges a WebSocket's upgrade. Players that send no Origin
	// header (GStreamer, OBS) are not browsers and are trusted.
	sdrcaddyfile.CommandTrust

	name      string
	source    *sourceHandle // the frames, taken as sdr_stream takes them
	log       *zap.Logger
	relay     frame.Relay
	starter   *sdrstart.App
	keyframes *keyreq.Coalescer
	base      rtc.SessionConfig
	origins   *origin.Policy // who may command
	recorder  frame.Recorder // records the sessions' commands; nil without sdr_recorder

	mu        sync.Mutex
	engine    *rtc.Engine // taken when Caddy starts the config
	engineKey string
	sessions  map[string]*rtc.Session
	stopped   bool
}

// CaddyModule returns the Caddy module information.
func (*WHEP) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sdr_whep",
		New: func() caddy.Module { return new(WHEP) },
	}
}

func (w *WHEP) rtcConfig() *RTCConfig {
	if w.WebRTC == nil {
		return &RTCConfig{}
	}
	return w.WebRTC
}

// Provision takes the source and, with the sdr_nats app, the stream's gate,
// relay and connection; the shared WebRTC engine is taken when Caddy starts
// the config (the sdr_start app).
func (w *WHEP) Provision(ctx caddy.Context) error {
	w.log = ctx.Logger()
	w.name = w.Name
	if w.name == "" {
		w.name = "default"
	}
	name := w.name
	w.sessions = make(map[string]*rtc.Session)
	if err := w.Validate(); err != nil {
		return err
	}
	origins, err := w.Policy()
	if err != nil {
		return fmt.Errorf("sdr_whep %s: %w", name, err)
	}
	w.origins = origins
	source, err := openSource(ctx, w.Source, sourceSettings{
		who: "sdr_whep " + name, log: w.log, maxGOPBytes: w.MaxGOPBytes, idrCoalesce: idrCoalesce(w.IDRCoalesce),
	})
	if err != nil {
		return err
	}
	w.source = source

	var requester frame.KeyframeRequester
	if kr, ok := w.source.src.(frame.KeyframeRequester); ok {
		requester = kr
	}
	gate, publish, err := rtcBus(ctx, name)
	if err != nil {
		return fmt.Errorf("sdr_whep %s: %w", name, err)
	}
	if gate != nil {
		app, _ := ctx.AppIfConfigured("sdr_nats")
		if bus, ok := app.(frame.Bus); ok {
			relay, err := bus.Attach(name, w.source.src)
			if err != nil {
				return fmt.Errorf("sdr_whep %s: attaching to sdr_nats: %w", name, err)
			}
			w.relay = relay
			if requester == nil {
				requester = relay
			}
		}
	}
	if app, err := ctx.AppIfConfigured("sdr_recorder"); err == nil {
		if rec, ok := app.(frame.Recorder); ok {
			w.recorder = rec
		}
	} else if !errors.Is(err, caddy.ErrNotConfigured) {
		return fmt.Errorf("sdr_whep %s: loading the sdr_recorder app: %w", name, err)
	}
	if requester != nil {
		w.keyframes = keyreq.New(time.Duration(w.IDRCoalesce), requester.RequestKeyframe)
	}
	w.base = rtc.SessionConfig{
		Source:  w.source.src,
		Gate:    gate,
		Publish: publish,
		Limits:  w.rtcConfig().limits(),
		Metrics: registerRTCMetrics(ctx.GetMetricsRegistry(), w.log).forStream(name),
		Logger:  ctx.Slogger().With("stream", name),
	}
	if w.keyframes != nil {
		w.base.Keyframes = w.keyframes
	}
	w.log.Info("whep ready", zap.String("stream", name), zap.String("source", w.source.desc),
		zap.Bool("nats", publish != nil))
	// The shared engine (which may bind the single-port UDP socket) is
	// taken when Caddy starts the config, never for caddy validate.
	starter, err := sdrstart.Of(ctx)
	if err != nil {
		return fmt.Errorf("sdr_whep %s: %w", name, err)
	}
	w.starter = starter
	return starter.OnStart("sdr_whep "+name+": webrtc", func() error {
		eng, key, err := w.rtcConfig().takeEngine()
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.engine, w.engineKey = eng, key
		w.mu.Unlock()
		return nil
	})
}

// Validate checks the configuration.
func (w *WHEP) Validate() error {
	if w.Source != nil {
		if err := w.Source.validate(); err != nil {
			return fmt.Errorf("sdr_whep %s: %w", w.name, err)
		}
	}
	if w.MaxGOPBytes < 0 || w.IDRCoalesce < 0 {
		return errors.New("sdr_whep: max_gop_bytes and idr_coalesce must not be negative")
	}
	if err := w.rtcConfig().Validate(); err != nil {
		return fmt.Errorf("sdr_whep: %w", err)
	}
	if err := w.ValidateTrust(); err != nil {
		return fmt.Errorf("sdr_whep %s: %w", w.name, err)
	}
	return nil
}

// Cleanup ends every session and gives back what Provision took.
func (w *WHEP) Cleanup() error {
	w.mu.Lock()
	w.stopped = true
	sessions := make([]*rtc.Session, 0, len(w.sessions))
	for _, s := range w.sessions {
		sessions = append(sessions, s)
	}
	w.mu.Unlock()
	for _, s := range sessions {
		_ = s.Close()
	}
	if w.keyframes != nil {
		w.keyframes.Close()
	}
	if w.relay != nil {
		w.relay.Release()
	}
	var errs []error
	w.mu.Lock()
	eng, key := w.engine, w.engineKey
	w.engine = nil
	w.mu.Unlock()
	if eng != nil {
		if _, err := rtcEngines.Delete(key); err != nil {
			errs = append(errs, fmt.Errorf("sdr_whep: releasing webrtc engine: %w", err))
		}
	}
	if w.source != nil {
		if err := w.source.release("sdr_whep " + w.name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ServeHTTP creates sessions on POST and ends them on DELETE.
func (w *WHEP) ServeHTTP(rw http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if err := w.starter.Wait(r.Context()); err != nil {
		return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("sdr_whep %s: not started: %w", w.name, err))
	}
	switch r.Method {
	case http.MethodPost:
		return w.create(rw, r)
	case http.MethodDelete:
		return w.remove(rw, r)
	case http.MethodOptions:
		rw.Header().Set("Allow", "OPTIONS, POST, DELETE")
		rw.Header().Set("Accept-Post", "application/sdp")
		rw.WriteHeader(http.StatusNoContent)
		return nil
	default:
		rw.Header().Set("Allow", "OPTIONS, POST, DELETE")
		return caddyhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("sdr_whep %s: method %s", w.name, r.Method))
	}
}

func (w *WHEP) create(rw http.ResponseWriter, r *http.Request) error {
	name := w.name
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/sdp" {
		return caddyhttp.Error(http.StatusUnsupportedMediaType,
			fmt.Errorf("sdr_whep %s: content type %q, want application/sdp", name, r.Header.Get("Content-Type")))
	}
	offer, err := io.ReadAll(io.LimitReader(r.Body, whepMaxOffer+1))
	if err != nil {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("sdr_whep %s: reading the offer: %w", name, err))
	}
	if len(offer) > whepMaxOffer {
		return caddyhttp.Error(http.StatusRequestEntityTooLarge,
			fmt.Errorf("sdr_whep %s: offer over %d bytes", name, whepMaxOffer))
	}
	var idb [16]byte
	_, _ = rand.Read(idb[:])
	id := hex.EncodeToString(idb[:])

	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("sdr_whep %s: stopping", name))
	}
	if limit := w.rtcConfig().MaxSessions; limit > 0 && len(w.sessions) >= limit {
		w.mu.Unlock()
		rw.Header().Set("Retry-After", "5")
		return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("sdr_whep %s: %d sessions, the maximum", name, limit))
	}
	if w.engine == nil {
		w.mu.Unlock()
		return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("sdr_whep %s: not started", name))
	}
	cfg := w.base
	// The verdict on the POST is the session's: viewing is open to every
	// page, commands only to the trusted (before the control lease).
	trust := w.origins.Judge(r)
	cfg.Verdict = &trust
	cfg.OnCommand = recordDataChannel(w.recorder, name, r.RemoteAddr)
	if w.relay != nil {
		if l := w.relay.Lease(); l != nil {
			// A session is a connection of its own in the control lease:
			// its commands channel takes and gives back control.
			cfg.Control = l.Conn()
		}
	}
	cfg.OnClose = func() {
		cfg.Control.Close()
		w.mu.Lock()
		delete(w.sessions, id)
		w.mu.Unlock()
	}
	sess, err := w.engine.NewSession(cfg)
	if err != nil {
		cfg.Control.Close()
		w.mu.Unlock()
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("sdr_whep %s: %w", name, err))
	}
	w.sessions[id] = sess
	w.mu.Unlock()

	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	answer, err := sess.Answer(ctx, string(offer))
	if err != nil {
		_ = sess.Close()
		code := http.StatusInternalServerError
		if errors.Is(err, rtc.ErrBadOffer) {
			code = http.StatusBadRequest
		}
		return caddyhttp.Error(code, fmt.Errorf("sdr_whep %s: %w", name, err))
	}
	rw.Header().Set("Content-Type", "application/sdp")
	rw.Header().Set("Location", strings.TrimSuffix(r.URL.Path, "/")+"/"+id)
	rw.Header().Set("Cache-Control", "no-store")
	rw.WriteHeader(http.StatusCreated)
	_, err = io.WriteString(rw, answer)
	return err
}

func (w *WHEP) remove(rw http.ResponseWriter, r *http.Request) error {
	id := path.Base(r.URL.Path)
	w.mu.Lock()
	sess := w.sessions[id]
	w.mu.Unlock()
	if sess == nil {
		return caddyhttp.Error(http.StatusNotFound, fmt.Errorf("sdr_whep %s: no session %q", w.name, id))
	}
	if err := sess.Close(); err != nil {
		w.log.Debug("closing whep session", zap.String("session", id), zap.Error(err))
	}
	rw.WriteHeader(http.StatusOK)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*WHEP)(nil)
	_ caddy.Validator             = (*WHEP)(nil)
	_ caddy.CleanerUpper          = (*WHEP)(nil)
	_ caddyhttp.MiddlewareHandler = (*WHEP)(nil)
)
