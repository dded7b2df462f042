// Package recorder is the sdr_recorder app, sdr-caddy's flight recorder:
// while it runs, every sdr_stream stream's video frames, the relayed
// telemetry, every command a WebSocket client sends (after the command
// path judged it, with its outcome: published, rejected, gated, or control
// for take_control and release_control) and the safety gate's state
// messages are written into one JetStream stream, like a dashcam: the
// oldest records go when the recording is older than max_age or larger
// than max_bytes.
//
// It is off unless the sdr_recorder global option is given, and it needs
// the sdr_nats app with JetStream: the embedded server with `jetstream on`
// (its store is then under Caddy's data directory unless store_dir says
// otherwise) or an external server or cluster with JetStream (replicas 3
// on a 3-node cluster).
//
//	{
//	    sdr_nats {
//	        embedded {
//	            jetstream on
//	        }
//	    }
//	    sdr_recorder {
//	        stream       SDR_REC      # the JetStream stream
//	        prefix       rec.         # its subjects: rec.video.<stream>, rec.telemetry.<subject>, rec.command.<stream>, rec.gate.<subject>
//	        max_age      10m          # dashcam: drop what is older
//	        max_bytes    2GiB         # dashcam: drop the oldest beyond this
//	        replicas     1            # copies in a JetStream cluster
//	        storage      file         # file or memory
//	        idr_interval 2s           # ask for a keyframe when none came for this long; off: never
//	        queue        256          # frames per stream (and other records) waiting before drops
//	        subjects     telemetry.>  # the telemetry recorded (NATS patterns)
//	        keep_max       32         # kept windows at most
//	        keep_max_bytes 2GiB       # bytes of the kept windows at most
//	    }
//	}
//
// Live video and commands never wait for the recorder: it takes each
// stream's frames from the stream's source as the NATS publisher does,
// through its own bounded queue, and a frame that finds the queue full is
// dropped and counted (caddy_sdr_recorder_dropped_total). A stream's
// frames are gathered for 100 ms and then published one after another,
// each its own message, so that JetStream takes them in bursts; only a
// burst's last message asks for an acknowledgement, which stands for the
// burst. Publishes are asynchronous, at most 256 awaiting JetStream's
// acknowledgement; a record JetStream refuses or does not acknowledge
// within 5 s is counted in caddy_sdr_recorder_errors_total (a failed
// burst counts each of its messages), and recording goes on (a JetStream
// restart or leader change loses what was in flight). When JetStream runs
// out of storage (the server's own limit below max_bytes, a full disk),
// recording stops with one error log line and caddy_sdr_recorder_state
// 2 until the configuration is loaded again.
//
// Every instant of a recording has a keyframe before it: while recording,
// the recorder asks each stream's producer for a keyframe (through the
// stream's coalesced keyframe requests) whenever none came for
// idr_interval.
//
// keep, a command a player sends on /stream/ws (its Keep button), copies
// a window of the recording (default the last 2 minutes and the next
// 30 s) into a JetStream stream of its own, <stream>_KEEP_<name>, which
// retention does not touch; keep_max and keep_max_bytes bound the kept
// windows.
//
// The records' format, and the reader that export and replay use, are in
// internal/recording.
package recorder

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrstart"
	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/timeline"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App is the sdr_recorder app.
type App struct {
	// Stream is the JetStream stream holding the recording. Default SDR_REC.
	Stream string `json:"stream,omitempty"`
	// Prefix is the prefix of the recording's subjects. Default "rec.".
	Prefix string `json:"prefix,omitempty"`
	// MaxAge drops records older than this. Default 10m.
	MaxAge caddy.Duration `json:"max_age,omitempty"`
	// MaxBytes drops the oldest records beyond this size. Default 2GiB.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// Replicas is the number of copies of the stream in a JetStream
	// cluster. Default 1.
	Replicas int `json:"replicas,omitempty"`
	// Storage is "file" (default) or "memory".
	Storage string `json:"storage,omitempty"`
	// IDRInterval is how long a stream may go without a keyframe before
	// the recorder asks its producer for one. Default 2s; -1 never asks.
	IDRInterval caddy.Duration `json:"idr_interval,omitempty"`
	// Queue is how many frames of one stream, and how many other records,
	// may wait for the recorder before new ones are dropped. Default 256.
	Queue int `json:"queue,omitempty"`
	// Batch is how long a stream's frames are gathered before they are
	// published to JetStream in one burst (each still its own message):
	// longer costs less CPU, and a frame is stored up to that long after
	// it came. Default 500ms; -1 publishes each frame as it comes.
	Batch caddy.Duration `json:"batch,omitempty"`
	// Subjects are the telemetry subjects recorded, NATS patterns. Default
	// ["telemetry.>"], what the relay forwards by default.
	Subjects []string `json:"subjects,omitempty"`
	// KeepMax bounds the number of kept windows (keep, from the player's
	// Keep button); a keep beyond it is refused. Default 32.
	KeepMax int `json:"keep_max,omitempty"`
	// KeepMaxBytes bounds the bytes the kept windows hold together; a keep
	// once they reach it is refused, and a copy stops there. Default 2GiB.
	KeepMaxBytes int64 `json:"keep_max_bytes,omitempty"`

	log *zap.Logger
	// mu guards rec, which Cleanup clears while streams' clients may still
	// record a command or read the recording.
	mu  sync.RWMutex
	rec *recording.Recorder
	// own is the recorder's own NATS connection (sdr_nats's NewConn),
	// closed after it; guarded by mu.
	own *nats.Conn
	// timelines keeps the streams' timelines between players' polls;
	// guarded by mu as rec is.
	timelines *timeline.Cache
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "sdr_recorder",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision sets up the recorder on the sdr_nats app's connection; it
// records from Start on.
func (a *App) Provision(ctx caddy.Context) error {
	a.log = ctx.Logger()
	if err := a.Validate(); err != nil {
		return err
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	app, err := ctx.AppIfConfigured("sdr_nats")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return errors.New("sdr_recorder: needs the sdr_nats app with JetStream (sdr_nats { embedded { jetstream on } }, or a JetStream server)")
	}
	if err != nil {
		return fmt.Errorf("sdr_recorder: loading the sdr_nats app: %w", err)
	}
	c, ok := app.(interface{ Conn() *nats.Conn })
	if !ok || c.Conn() == nil {
		return fmt.Errorf("sdr_recorder: the sdr_nats app (%T) offers no connection", app)
	}
	if js, ok := app.(interface{ EmbeddedJetStream() (embedded, on bool) }); ok {
		if embedded, on := js.EmbeddedJetStream(); embedded && !on {
			return errors.New("sdr_recorder: the embedded nats-server runs without JetStream: add `jetstream on` to sdr_nats { embedded { ... } }")
		}
	}
	// A connection of its own where sdr_nats offers one: the recorder's
	// video, keeps and replays never queue before the commands and
	// telemetry on the shared one.
	nc := c.Conn()
	var own *nats.Conn
	if n, ok := app.(interface {
		NewConn(suffix string) (*nats.Conn, error)
	}); ok {
		if own, err = n.NewConn("recorder"); err != nil {
			return fmt.Errorf("sdr_recorder: %w", err)
		}
		nc = own
	}
	rec, err := recording.New(nc, a.config(ctx))
	if err != nil {
		if own != nil {
			own.Close()
		}
		return fmt.Errorf("sdr_recorder: %w", err)
	}
	a.mu.Lock()
	a.rec, a.own, a.timelines = rec, own, new(timeline.Cache)
	a.mu.Unlock()
	// The connection starts with sdr_start (sdr_nats registered first, as
	// it was loaded above): the recorder starts after it.
	starter, err := sdrstart.Of(ctx)
	if err != nil {
		return fmt.Errorf("sdr_recorder: %w", err)
	}
	return starter.OnStart("sdr_recorder", func() error {
		track(rec)
		setRunning(a) // paused before it starts, if the admin API paused the last one
		rec.Start()
		return nil
	})
}

func (a *App) config(ctx caddy.Context) recording.Config {
	cfg := recording.Config{
		Stream: recording.StreamConfig{
			Name: a.Stream, Prefix: a.Prefix, MaxAge: time.Duration(a.MaxAge), MaxBytes: a.MaxBytes,
			Replicas: a.Replicas, Memory: a.Storage == "memory",
		},
		IDRInterval:  time.Duration(a.IDRInterval),
		Queue:        a.Queue,
		Batch:        time.Duration(a.Batch),
		Subjects:     a.Subjects,
		KeepMax:      a.KeepMax,
		KeepMaxBytes: a.KeepMaxBytes,
		Logger:       ctx.Slogger(),
	}
	if cfg.Stream.MaxAge == 0 {
		cfg.Stream.MaxAge = recording.DefaultMaxAge
	}
	if cfg.Stream.MaxBytes == 0 {
		cfg.Stream.MaxBytes = recording.DefaultMaxBytes
	}
	return cfg
}

// Validate checks the settings.
func (a *App) Validate() error {
	if a.Stream != "" {
		if err := recording.ValidateStreamName(a.Stream); err != nil {
			return fmt.Errorf("sdr_recorder: %w", err)
		}
	}
	if a.Prefix != "" {
		if err := recording.ValidateName(strings.TrimSuffix(a.Prefix, ".")); err != nil {
			return fmt.Errorf("sdr_recorder: prefix: %w", err)
		}
	}
	own := recording.Subject(a.Prefix, recording.KindVideo, "x")
	for _, s := range a.subjects() {
		if recording.SubjectMatches(s, own) {
			return fmt.Errorf("sdr_recorder: the recorded subjects %q take the recording's own subjects (prefix %q): the recorder would record itself", s, recording.NormPrefix(a.Prefix))
		}
	}
	switch a.Storage {
	case "", "file", "memory":
	default:
		return fmt.Errorf("sdr_recorder: storage %q: want file or memory", a.Storage)
	}
	if a.MaxAge < 0 || a.MaxBytes < 0 || a.Replicas < 0 || a.Queue < 0 || a.IDRInterval < -1 || a.KeepMax < 0 || a.KeepMaxBytes < 0 {
		return errors.New("sdr_recorder: max_age, max_bytes, replicas, queue, keep_max and keep_max_bytes must not be negative, idr_interval -1 at least")
	}
	if a.Batch < -1 || time.Duration(a.Batch) >= recording.MaxStoreDelay {
		return fmt.Errorf("sdr_recorder: batch %s: want -1 (off) or a duration below %s, the longest a record may wait to be stored", time.Duration(a.Batch), recording.MaxStoreDelay)
	}
	if a.Replicas > 5 {
		return fmt.Errorf("sdr_recorder: replicas %d: JetStream allows at most 5", a.Replicas)
	}
	for _, s := range a.Subjects {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			return fmt.Errorf("sdr_recorder: subject %q is empty or has whitespace", s)
		}
	}
	return nil
}

// streamName is the recording's JetStream stream: Stream, or the default.
func (a *App) streamName() string {
	if a.Stream == "" {
		return recording.DefaultStream
	}
	return a.Stream
}

func (a *App) subjects() []string {
	if a.Subjects == nil {
		return recording.DefaultSubjects
	}
	return a.Subjects
}

// Start implements caddy.App; the recorder starts with sdr_start, after
// the NATS connection.
func (a *App) Start() error { return nil }

// Stop implements caddy.App; the recorder stops in Cleanup.
func (a *App) Stop() error { return nil }

// Cleanup stops the recorder.
func (a *App) Cleanup() error {
	clearRunning(a)
	a.mu.Lock()
	rec, own := a.rec, a.own
	a.rec, a.own = nil, nil
	a.mu.Unlock()
	if rec == nil {
		return nil
	}
	untrack(rec)
	err := rec.Close()
	if own != nil {
		// What the recorder published last goes out before the close.
		if own.Status() == nats.CONNECTED {
			_ = own.FlushTimeout(time.Second)
		}
		own.Close()
	}
	if err != nil {
		return fmt.Errorf("sdr_recorder: %w", err)
	}
	return nil
}

// AttachStream implements frame.Recorder.
func (a *App) AttachStream(stream string, src frame.Source, kr frame.KeyframeRequester) (func(), error) {
	r := a.Recorder()
	if r == nil {
		return nil, errors.New("sdr_recorder: not provisioned")
	}
	return r.AttachStream(stream, src, kr)
}

// RecordCommand implements frame.Recorder.
func (a *App) RecordCommand(stream, client string, body, reply []byte) {
	if r := a.Recorder(); r != nil {
		r.RecordCommand(stream, client, body, reply)
	}
}

// Keep takes a keep command of one of stream's clients that passed the
// command path's checks (sdr_stream's Keeper): data is the command's data
// member. It starts copying the window into its kept stream and returns
// that stream's name and the ack's detail, or why the keep is refused.
func (a *App) Keep(stream, client string, data []byte) (kept, detail string, err error) {
	r := a.Recorder()
	if r == nil {
		return "", "", errors.New("keep: the recorder is stopped (reloading)")
	}
	req, err := recording.ParseKeep(data)
	if err != nil {
		return "", "", err
	}
	req.Stream = stream
	k, err := r.Keep(req)
	if err != nil {
		return "", "", err
	}
	a.log.Info("keep", zap.String("name", k.Name), zap.String("kept_stream", k.Stream), zap.String("stream", stream),
		zap.String("client", client), zap.Time("from", k.From), zap.Time("to", k.To))
	return k.Stream, fmt.Sprintf("keeping %s to %s as %s", k.From.UTC().Format(time.RFC3339), k.To.UTC().Format(time.RFC3339), k.Stream), nil
}

// Recorder returns the core, for tests and the export command; nil once
// the app is cleaned up.
func (a *App) Recorder() *recording.Recorder {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.rec
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ frame.Recorder     = (*App)(nil)
)
