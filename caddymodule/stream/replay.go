package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/internal/hub"
	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/replay"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// Recordings is offered by the sdr_recorder app: the flight recording, read
// back for /stream/ws?replay= (internal/replay). replay.JetStream
// implements it on a recording in JetStream.
type Recordings interface {
	// ReadRecording calls fn with the recorded video of the sdr_stream
	// stream named stream and the recorded telemetry and gate records
	// (recording.KindGate, Subject the gate's subject), from from on (video
	// from the keyframe at or before from), in recorded order, to the end
	// of the recording as it is when called. It returns fn's error, or
	// ctx's.
	ReadRecording(ctx context.Context, stream string, from time.Time, fn func(recording.Record) error) error
}

// KeptRecordings is offered by the sdr_recorder app beside Recordings:
// the kept windows (keep), which a replay with &kept=<name> plays.
type KeptRecordings interface {
	// HasKept reports whether a kept window of that name exists.
	HasKept(name string) bool
	// ReadKept reads the kept window name as ReadRecording reads the
	// recording.
	ReadKept(ctx context.Context, name, stream string, from time.Time, fn func(recording.Record) error) error
}

// recorderApp is the app that offers Recordings.
const recorderApp = "sdr_recorder"

// findRecordings takes the sdr_recorder app's recordings when the app is
// configured; without it, replay requests are answered 501.
func (s *Stream) findRecordings(ctx caddy.Context) error {
	app, err := ctx.AppIfConfigured(recorderApp)
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sdr_stream %s: loading the %s app: %w", s.name, recorderApp, err)
	}
	rec, ok := app.(Recordings)
	if !ok {
		return fmt.Errorf("sdr_stream %s: the %s app (%T) does not offer recordings", s.name, recorderApp, app)
	}
	s.recordings = rec
	s.timelines, _ = app.(Timelines)
	return nil
}

// refuseReplay answers a replay request that cannot be served with code
// and a plain-text message saying why.
func (s *Stream) refuseReplay(w http.ResponseWriter, code int, err error) error {
	s.log.Debug("replay refused", zap.String("stream", s.name), zap.Int("status", code), zap.Error(err))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, err = io.WriteString(w, "sdr_stream "+s.name+": "+err.Error()+"\n")
	return err
}

// checkKept answers a replay of a kept window that is not there 404; it
// reports whether the request may go on.
func (s *Stream) checkKept(w http.ResponseWriter, p replay.Params) (bool, error) {
	if p.Kept == "" {
		return true, nil
	}
	kept, ok := s.recordings.(KeptRecordings)
	if !ok || !kept.HasKept(p.Kept) {
		return false, s.refuseReplay(w, http.StatusNotFound, fmt.Errorf("no kept window named %q", p.Kept))
	}
	return true, nil
}

// errNoRecorder answers replay requests when no sdr_recorder app is
// configured.
var errNoRecorder = errors.New("replay needs the sdr_recorder app, which is not configured")

// serveReplay upgrades r and replays the recording from p on its own
// goroutine (internal/replay), tracked like a live client: Cleanup closes
// it with 1012. The caller has admitted it (max_clients); serveReplay gives
// the place back. Commands on it never reach the relay.
func (s *Stream) serveReplay(w http.ResponseWriter, r *http.Request, p replay.Params) error {
	conn, err := hub.Upgrade(w, r)
	if err != nil {
		s.admitted.Add(-1)
		s.log.Debug("websocket upgrade failed", zap.String("stream", s.name), zap.Error(err))
		return nil
	}
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		s.admitted.Add(-1)
		_, _ = conn.Write(wire.CloseFrame(wire.CloseServiceRestart, "sdr_stream stopped or reloaded; reconnect"))
		_ = conn.Close()
		return nil
	}
	s.wg.Add(1)
	s.mu.Unlock()
	cfg := replay.Config{
		Stream:       s.name,
		Params:       p,
		WriteTimeout: time.Duration(s.WriteTimeout),
		MaxMessage:   s.MaxMessageSize,
		Limits:       s.FrameLimits(),
		PingInterval: s.PingEvery(),
	}
	remote := r.RemoteAddr
	if rec := s.recorder; rec != nil {
		// Refused commands are recorded like a live client's.
		cfg.OnRefused = func(body, reply []byte) { rec.RecordCommand(s.name, remote, body, reply) }
	}
	read := func(ctx context.Context, fn func(recording.Record) error) error {
		return s.recordings.ReadRecording(ctx, s.name, p.From, fn)
	}
	if p.Kept != "" {
		kept := s.recordings.(KeptRecordings) // serveHTTP checked it
		read = func(ctx context.Context, fn func(recording.Record) error) error {
			return kept.ReadKept(ctx, p.Kept, s.name, p.From, fn)
		}
	}
	go func() {
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("replay panicked", zap.String("stream", s.name), zap.Any("panic", v), zap.Stack("stack"))
				_ = conn.Close()
			}
			s.admitted.Add(-1)
			s.wg.Done()
		}()
		st, err := replay.Serve(s.ctx, conn, cfg, read)
		if errors.Is(err, replay.ErrRecording) {
			s.log.Warn("replay ended", zap.String("stream", s.name), zap.String("remote", remote),
				zap.Time("from", p.From), zap.Error(err))
			return
		}
		if s.log.Core().Enabled(zap.DebugLevel) {
			s.log.Debug("replay ended", zap.String("stream", s.name), zap.String("remote", remote),
				zap.Time("from", p.From), zap.Float64("speed", p.Speed), zap.Uint64("frames", st.Frames),
				zap.Uint64("telemetry", st.Telemetry), zap.Uint64("commands_refused", st.Commands),
				zap.Uint16("close", st.Close), zap.Error(err))
		}
	}()
	return nil
}
