// Package stream is the sdr_stream and sdr_whep handlers: video from a frame
// source (a shared-memory ring, an sdr_encoder stream, or a NATS subject an
// origin publishes) fanned out to WebSocket clients (internal/hub) and to
// WebRTC players (internal/rtc), with telemetry and commands through the
// sdr_nats app when it is configured. The sdr-ring and sdr-testsrc
// subcommands inspect and feed the ring.
package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcaddyfile"
	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrstart"
	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/hub"
	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/natsvideo"
	"github.com/sdr-os/sdr-caddy/internal/origin"
	"github.com/sdr-os/sdr-caddy/internal/replay"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
)

func init() {
	caddy.RegisterModule(new(Stream))
}

// processStart is the health JSON's origin of uptime_s.
var processStart = time.Now()

// Stream serves one video stream over the /stream/ws WebSocket protocol of
// SDR_OS's transport-server: 0x01 video frames from a frame source, fanned
// out to every client from one framed copy; 0x02 telemetry and 0x04
// commands through the sdr_nats app when one is configured. A plain GET
// (no WebSocket upgrade) returns the old service's health JSON. A WebSocket
// with ?replay=<time>&speed=<x> gets the stream's flight recording instead,
// paced, and may not command (internal/replay; needs the sdr_recorder app).
// A plain GET with ?recording returns the recording's timeline as JSON
// (internal/timeline; 501 without the sdr_recorder app).
//
// Each handler owns a hub (the fan-out) and shares its source: one ring
// reader per ring file in the process, kept across config reloads. On a
// reload or stop, the handler's clients are closed with code 1012 (service
// restart); the browser reconnects to the new handler, which starts it at
// the latest keyframe at once.
type Stream struct {
	// Name of the stream: its label in metrics and the name under which the
	// sdr_nats app keeps its safety gate and relay. Default: "default".
	Name string `json:"name,omitempty"`

	// Source of the frames. Default: the SHM ring at
	// /dev/shm/sdr_os_ipc/frames, 4 MiB.
	Source *StreamSource `json:"source,omitempty"`

	// Publish puts every frame of the stream on a NATS subject for edge
	// nodes (source nats) to fan out; needs the sdr_nats app.
	Publish *StreamPublish `json:"publish,omitempty"`

	// IDRCoalesce is the shortest interval between two keyframe requests
	// sent to the producer (SDR_IDR_COALESCE_MS). Default: 500ms.
	IDRCoalesce caddy.Duration `json:"idr_coalesce,omitempty"`

	// IDRTimeout closes a client (code 4000) that waits for a keyframe
	// while video flows past it for this long, counted from the first frame
	// that passed it (SDR_IDR_TIMEOUT_MS). While no video flows at all no
	// client is closed, and its commands work. Default: 5s.
	IDRTimeout caddy.Duration `json:"idr_timeout,omitempty"`

	// QueueDepth is how many frames a client may fall behind before it
	// skips to the newest keyframe (SDR_BROADCAST_CAPACITY). Default: 64.
	QueueDepth int `json:"queue_depth,omitempty"`

	// MaxLag, when set, also skips a client to the newest keyframe by age:
	// when the next frame it would be sent arrived at the handler longer
	// ago than MaxLag and a newer keyframe is kept, it starts there (a lag
	// skip, counted in client_lag_total like one by queue_depth). Without
	// a newer keyframe, when that frame is a delta, the client drops the
	// rest of the GOP and waits for the next keyframe (a lag skip and a
	// keyframe wait, as after a skip by queue_depth). The newest keyframe
	// and a joining client's replay are sent however old. For viewers on
	// links slower than the stream (docs/link.md). Default: 0, off.
	MaxLag caddy.Duration `json:"max_lag,omitempty"`

	// MaxGOPBytes bounds the current GOP kept for joining clients; a longer
	// GOP makes joining clients wait for the next keyframe. Default: 32 MiB.
	MaxGOPBytes int `json:"max_gop_bytes,omitempty"`

	// JoinMaxAge is the oldest a frame may be to be sent to a client that
	// joins: when the kept keyframe arrived longer ago (the writer stopped,
	// or its GOP is long), the client gets nothing until the next keyframe,
	// which is requested, and the player shows that it waits for video.
	// Default: 1s, the sdr_nats safety gate's default hold
	// (SDR_VIDEO_GATE_HOLD_MS).
	JoinMaxAge caddy.Duration `json:"join_max_age,omitempty"`

	// JoinMaxReplay bounds the GOP replayed to a joining client at once,
	// by the arrival times of its first and last frames; a longer GOP (an
	// intra-refresh encoder sends one keyframe per run) is not replayed: a
	// keyframe is requested and the client starts there. Default: 1s.
	JoinMaxReplay caddy.Duration `json:"join_max_replay,omitempty"`

	// JoinMaxReplayBytes bounds that GOP in bytes, like JoinMaxReplay.
	// Default: 2 MiB.
	JoinMaxReplayBytes int `json:"join_max_replay_bytes,omitempty"`

	// MaxClients refuses WebSocket upgrades beyond this many clients with
	// 503. Default: 0, no limit.
	MaxClients int `json:"max_clients,omitempty"`

	// CommandTrust holds the origins and hosts whose browsers may send
	// commands: allowed_origins, allowed_hosts.
	sdrcaddyfile.CommandTrust

	// ClientLimits bound the frames a client sends and set the pings that
	// find dead peers.
	sdrcaddyfile.ClientLimits

	// MaxMessageSize is the largest message a client may send; a larger one
	// closes it with code 1009. Default: 65536.
	MaxMessageSize int `json:"max_message_size,omitempty"`

	// WriteTimeout is the deadline of one batched write to a client; a
	// client that cannot take it is disconnected. Default: 10s.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`

	// SendQueue bounds, in bytes, the video each client has on its way to
	// the network: the kernel keeps at most about this much unsent on the
	// client's TCP socket (TCP_NOTSENT_LOWAT, Linux; one segment buffer
	// more may be in it), and one write takes at most this much from the
	// stream (at least one frame). A client on a link slower than the
	// stream then falls behind in the stream's queue, where it skips to a
	// keyframe after queue_depth frames, instead of in its socket's send
	// buffer, which Linux grows to 4 MiB: seconds of video on a slow link,
	// that nothing skips. -1: no limit (the kernel's buffers, 1 MiB
	// writes). Default: 64 KiB.
	SendQueue int `json:"send_queue,omitempty"`

	// TelemetryHold is the longest time relayed telemetry waits for the
	// next video frame, so that it reaches each client in the same write
	// as the frame rather than in one of its own (at 500 clients those
	// writes were what slowed video down). -1: none, telemetry is written
	// as soon as the relay hands it on. Default: 20ms, a frame interval at
	// 50 fps; at 60 fps telemetry rides with the next frame.
	TelemetryHold caddy.Duration `json:"telemetry_hold,omitempty"`

	// WebRTC, when set, answers the browser's 0x03 WebRTC offers: one
	// session per WebSocket, ended with it (docs/webrtc.md).
	WebRTC *RTCConfig `json:"webrtc,omitempty"`

	name     string
	log      *zap.Logger
	source   *sourceHandle // the frames
	hub      *hub.Hub
	unsub    func()
	unbreak  func()     // from the source's breaks
	group    *hub.Tally // the counts of every handler serving this stream
	groupOf  func()     // takes the hub out of the group
	groupKey string
	unwatch  func() // the ring's watch while publishing to edges
	relay    frame.Relay
	telemUn  func()
	// busConn is the sdr_nats connection state, for the health JSON.
	busConn func() string
	pub     *natsvideo.Publisher // the frames on NATS, when publish is set
	pubKey  string
	// recorder is the sdr_recorder app, nil when it is not configured;
	// unrecord stops recording the stream.
	recorder frame.Recorder
	unrecord func()
	rtc      *streamRTC     // the WebRTC engine, when webrtc is configured
	origins  *origin.Policy // who may command
	metrics  *streamMetrics
	starter  *sdrstart.App // starts the source's reader with the config
	// stuckAfter overrides readerStuckAfter (tests).
	stuckAfter time.Duration

	// recordings is the sdr_recorder app's, for replay; nil without it.
	recordings Recordings
	// timelines is the sdr_recorder app's too, for ?recording; nil
	// without it.
	timelines Timelines

	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex // orders a new client's wg.Add before Cleanup's cancel and Wait
	wg     sync.WaitGroup
	// admitted counts the upgrades let through and not yet ended, so that
	// concurrent upgrades cannot pass max_clients together.
	admitted atomic.Int64
}

// StreamSource says where a stream's frames come from. Exactly one field
// is set.
type StreamSource struct {
	// SHM reads an encoded-frame ring in shared memory.
	SHM *SHMSource `json:"shm,omitempty"`
	// Encoder names a stream of the sdr_encoder app.
	Encoder string `json:"encoder,omitempty"`
	// NATS receives a stream that an origin publishes on a NATS subject.
	NATS *NATSSource `json:"nats,omitempty"`
}

// SHMSource is an encoded-frame ring file.
type SHMSource struct {
	// Path of the ring file (SDR_SHM_PATH). Default: /dev/shm/sdr_os_ipc/frames.
	Path string `json:"path,omitempty"`
	// Size of the ring file in bytes, control region included
	// (SDR_SHM_SIZE); 0 takes the file's size. Default: 4194304.
	Size int64 `json:"size,omitempty"`
	// DisableCRC skips the payload CRC-32 check (SDR_CRC_ENABLED=false);
	// needed when the writer stores no CRC. Default: false (checked).
	DisableCRC bool `json:"disable_crc,omitempty"`
	// KeyframeGating forwards nothing after a gap or writer restart until
	// a keyframe (SDR_SHM_KEYFRAME_GATING). Default: false.
	KeyframeGating bool `json:"keyframe_gating,omitempty"`
	// MaxFrameSize is the largest frame payload, in bytes, the reader
	// copies and forwards; a larger frame is dropped before any copy and
	// counted (caddy_sdr_stream_ring_oversize_total). A ring file larger
	// than Size is still mapped whole. 0 takes the default: 33554432
	// (32 MiB).
	MaxFrameSize int64 `json:"max_frame_size,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (*Stream) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sdr_stream",
		New: func() caddy.Module { return new(Stream) },
	}
}

// Provision takes the source (the shared ring reader, which the sdr_start
// app starts with the config), builds the hub and, when the sdr_nats app is
// configured, attaches the stream to it. It opens nothing: caddy validate
// provisions the handler and starts no app.
func (s *Stream) Provision(ctx caddy.Context) error {
	s.log = ctx.Logger()
	s.name = s.Name
	if s.name == "" {
		s.name = "default"
	}
	// Caddy validates after provisioning; refuse a bad config before
	// taking anything.
	if err := s.Validate(); err != nil {
		return err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.metrics = registerStreamMetrics(ctx.GetMetricsRegistry(), s.log)
	origins, err := s.Policy()
	if err != nil {
		return fmt.Errorf("sdr_stream %s: %w", s.name, err)
	}
	s.origins = origins
	if s.starter, err = sdrstart.Of(ctx); err != nil {
		return fmt.Errorf("sdr_stream %s: %w", s.name, err)
	}

	s.source, err = openSource(ctx, s.Source, sourceSettings{
		who: "sdr_stream " + s.name, log: s.log, maxGOPBytes: s.MaxGOPBytes, idrCoalesce: idrCoalesce(s.IDRCoalesce),
	})
	if err != nil {
		return err
	}
	s.hub = hub.New(hub.Config{
		Capacity:           s.QueueDepth,
		MaxLag:             time.Duration(s.MaxLag),
		MaxGOPBytes:        s.MaxGOPBytes,
		IDRCoalesce:        time.Duration(s.IDRCoalesce),
		TelemetryHold:      time.Duration(s.TelemetryHold),
		JoinMaxAge:         time.Duration(s.JoinMaxAge),
		JoinMaxReplay:      time.Duration(s.JoinMaxReplay),
		JoinMaxReplayBytes: s.JoinMaxReplayBytes,
		Logger:             ctx.Slogger().With(slog.String("stream", s.name)),
		Metrics:            s.metrics.forStream(s.name),
	})
	if kr, ok := s.source.src.(frame.KeyframeRequester); ok {
		s.hub.SetKeyframeRequester(kr)
	}
	if err := s.joinGroup(); err != nil {
		return err
	}
	if err := s.attachBus(ctx); err != nil {
		return err
	}
	if err := s.startPublish(ctx); err != nil {
		return err
	}
	if err := s.attachRecorder(ctx); err != nil {
		return err
	}
	if err := s.findRecordings(ctx); err != nil {
		return err
	}
	if err := s.provisionRTC(ctx); err != nil {
		return err
	}
	s.unsub = s.source.src.Subscribe(s.hub.Publish)
	if bn, ok := s.source.src.(frame.BreakNotifier); ok {
		// A writer restart drops the hub's GOP at once; restarts and gaps
		// ask for a keyframe.
		s.unbreak = bn.NotifyBreaks(s.hub.Break)
	}
	if s.source.ring != nil && s.Publish != nil {
		// Edges' clients watch too, unseen from here.
		s.unwatch = s.source.ring.Watch()
	}
	s.log.Info("stream ready", zap.String("stream", s.name), zap.String("source", s.source.desc),
		zap.Bool("nats", s.relay != nil))
	return nil
}

// attachBus binds the stream to the sdr_nats app when it is configured: the
// safety gate runs from now on, telemetry goes to every client, commands
// and keyframe requests go through the relay.
func (s *Stream) attachBus(ctx caddy.Context) error {
	app, err := ctx.AppIfConfigured("sdr_nats")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sdr_stream %s: loading the sdr_nats app: %w", s.name, err)
	}
	bus, ok := app.(frame.Bus)
	if !ok {
		return fmt.Errorf("sdr_stream %s: the sdr_nats app (%T) does not offer a frame.Bus", s.name, app)
	}
	relay, err := bus.Attach(s.name, s.source.src)
	if err != nil {
		return fmt.Errorf("sdr_stream %s: attaching to sdr_nats: %w", s.name, err)
	}
	s.relay = relay
	if cs, ok := app.(interface{ ConnState() string }); ok {
		s.busConn = cs.ConnState
	}
	if _, inProcess := s.source.src.(frame.KeyframeRequester); !inProcess {
		s.hub.SetKeyframeRequester(relay)
	}
	s.telemUn = s.subscribeTelemetry(relay)
	return nil
}

// telemetryBatcher is offered by a relay that hands telemetry on in
// batches (internal/relay).
type telemetryBatcher interface {
	SubscribeTelemetryBatch(fn func(msgs [][]byte)) (cancel func())
}

// subscribeTelemetry fans the relay's telemetry out to the clients: a batch
// at a time when the relay offers batches, so that each client gets one
// queued item and one write per batch.
func (s *Stream) subscribeTelemetry(relay frame.Relay) (cancel func()) {
	if b, ok := relay.(telemetryBatcher); ok {
		return b.SubscribeTelemetryBatch(s.broadcastTelemetryBatch)
	}
	return relay.SubscribeTelemetry(s.broadcastTelemetry)
}

// broadcastTelemetry frames a telemetry message once and hands it to the
// hub for every client, to go out with the next frame or after
// telemetry_hold; a client too far behind loses it (telemetry is lossy).
func (s *Stream) broadcastTelemetry(msg []byte) {
	f := wire.AppendBinaryFrame(make([]byte, 0, len(msg)+10), msg)
	s.sendToClients(f)
}

// broadcastTelemetryBatch frames a batch of telemetry messages once, one
// WebSocket message each, back to back in one buffer, and hands the buffer
// to the hub like broadcastTelemetry.
func (s *Stream) broadcastTelemetryBatch(msgs [][]byte) {
	n := 0
	for _, m := range msgs {
		n += len(m) + 10
	}
	f := make([]byte, 0, n)
	for _, m := range msgs {
		f = wire.AppendBinaryFrame(f, m)
	}
	s.sendToClients(f)
}

func (s *Stream) sendToClients(f []byte) { s.hub.Broadcast(f) }

// Validate checks the configuration.
func (s *Stream) Validate() error {
	if s.Source != nil {
		if err := s.Source.validate(); err != nil {
			return fmt.Errorf("sdr_stream %s: %w", s.name, err)
		}
	}
	if err := s.validatePublish(); err != nil {
		return err
	}
	if err := s.ValidateTrust(); err != nil {
		return fmt.Errorf("sdr_stream %s: %w", s.name, err)
	}
	if err := s.ClientLimits.ValidateLimits(); err != nil {
		return fmt.Errorf("sdr_stream %s: %w", s.name, err)
	}
	for _, c := range []struct {
		what string
		v    int64
	}{
		{"idr_coalesce", int64(s.IDRCoalesce)}, {"idr_timeout", int64(s.IDRTimeout)},
		{"queue_depth", int64(s.QueueDepth)}, {"max_lag", int64(s.MaxLag)}, {"max_gop_bytes", int64(s.MaxGOPBytes)},
		{"max_clients", int64(s.MaxClients)}, {"max_message_size", int64(s.MaxMessageSize)},
		{"write_timeout", int64(s.WriteTimeout)}, {"join_max_age", int64(s.JoinMaxAge)},
		{"join_max_replay", int64(s.JoinMaxReplay)}, {"join_max_replay_bytes", int64(s.JoinMaxReplayBytes)},
	} {
		if c.v < 0 {
			return fmt.Errorf("sdr_stream %s: %s is negative (%d)", s.name, c.what, c.v)
		}
	}
	if s.TelemetryHold < -1 || time.Duration(s.TelemetryHold) > time.Second {
		return fmt.Errorf("sdr_stream %s: telemetry_hold %s: want up to 1s, or -1 for none", s.name, time.Duration(s.TelemetryHold))
	}
	if s.SendQueue < -1 || s.SendQueue > 1<<30 {
		return fmt.Errorf("sdr_stream %s: send_queue %d: want a size up to 1GiB, or -1 for no limit", s.name, s.SendQueue)
	}
	return nil
}

// Cleanup closes the handler's clients (code 1012), detaches from the
// source and the relay, and gives the shared ring reader back. It releases
// only what Provision took.
func (s *Stream) Cleanup() error {
	if s.cancel != nil {
		s.mu.Lock() // no client is added after this
		s.cancel()
		s.mu.Unlock()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.log.Warn("clients still closing after 5s", zap.String("stream", s.name))
	}
	if s.unrecord != nil {
		s.unrecord()
	}
	if s.unsub != nil {
		s.unsub()
	}
	if s.unbreak != nil {
		s.unbreak()
	}
	if s.unwatch != nil {
		s.unwatch()
	}
	if s.hub != nil {
		s.hub.Close() // no keyframe request after this
	}
	if s.telemUn != nil {
		s.telemUn()
	}
	if s.relay != nil {
		s.relay.Release()
	}
	var errs []error
	if err := s.leaveGroup(); err != nil {
		errs = append(errs, err)
	}
	if err := s.cleanupRTC(); err != nil {
		errs = append(errs, err)
	}
	if err := s.stopPublish(); err != nil {
		errs = append(errs, err)
	}
	if s.source != nil {
		if err := s.source.release("sdr_stream " + s.name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ServeHTTP upgrades WebSocket requests and streams to them until the
// client leaves or the handler is cleaned up; any other GET gets the health
// JSON.
func (s *Stream) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if err := s.starter.Wait(r.Context()); err != nil {
		return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("sdr_stream %s: not started: %w", s.name, err))
	}
	if !websocket.IsWebSocketUpgrade(r) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			return caddyhttp.Error(http.StatusMethodNotAllowed,
				fmt.Errorf("sdr_stream %s: method %s", s.name, r.Method))
		}
		if _, ok := r.URL.Query()["recording"]; ok {
			return s.serveTimeline(w, r)
		}
		return s.serveHealth(w, r)
	}
	// ?replay= replays the recording instead (internal/replay); without
	// it nothing changes.
	rp, isReplay, err := replay.ParseQuery(r.URL.Query(), time.Now())
	if err != nil {
		return s.refuseReplay(w, http.StatusBadRequest, err)
	}
	if isReplay && s.recordings == nil {
		return s.refuseReplay(w, http.StatusNotImplemented, errNoRecorder)
	}
	if isReplay {
		if ok, err := s.checkKept(w, rp); !ok {
			return err
		}
	}
	if s.admitted.Add(1) > int64(s.MaxClients) && s.MaxClients > 0 {
		s.admitted.Add(-1)
		s.metrics.clientsRejected.WithLabelValues(s.name).Inc()
		w.Header().Set("Retry-After", "5")
		return caddyhttp.Error(http.StatusServiceUnavailable,
			fmt.Errorf("sdr_stream %s: %d clients, the maximum", s.name, s.MaxClients))
	}
	admitted := true
	defer func() {
		if admitted { // not handed to a client goroutine
			s.admitted.Add(-1)
		}
	}()
	if s.ctx.Err() != nil {
		return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("sdr_stream %s: stopping", s.name))
	}
	if isReplay {
		admitted = false // serveReplay gives the place back
		return s.serveReplay(w, r, rp)
	}
	trust := s.origins.Judge(r)
	conn, err := hub.Upgrade(w, r)
	if err != nil {
		// The upgrader has answered the client already.
		s.log.Debug("websocket upgrade failed", zap.String("stream", s.name), zap.Error(err))
		return nil
	}
	command, control := s.commandPath(trust, r.RemoteAddr)
	command = s.recordCommands(command, r.RemoteAddr)
	cfg := hub.ClientConfig{
		KeyframeTimeout: time.Duration(s.IDRTimeout),
		WriteTimeout:    time.Duration(s.WriteTimeout),
		SendQueue:       s.SendQueue,
		MaxMessage:      s.MaxMessageSize,
		Limits:          s.FrameLimits(),
		PingInterval:    s.PingEvery(),
		OnCommand:       command,
	}
	var c *hub.Client
	sig := s.rtcSignal(trust, control, r.RemoteAddr, func(msg []byte) bool { return c.Send(msg) })
	if sig != nil {
		cfg.OnSignal = sig.Handle
	}
	c = s.hub.NewClient(conn, nil, cfg)
	if w := control.Welcome(); w != nil {
		c.Send(w) // the control lease's state and the client's own id
	}
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		c.Close(wire.CloseServiceRestart, "sdr_stream stopped or reloaded; reconnect")
		_ = c.Run(s.ctx) // sends the close frame and closes the connection
		if sig != nil {
			sig.Close()
		}
		control.Close()
		return nil
	}
	s.wg.Add(1)
	s.mu.Unlock()
	admitted = false // the client goroutine gives the place back
	// The client gets its own goroutine and the request's returns: the
	// request goroutine's stack, grown through the handler chain, is freed,
	// which is most of what an idle client would otherwise cost.
	remote := r.RemoteAddr
	go func() {
		if s.source.ring != nil {
			// A paused writer's next frame must not be lost to a client.
			defer s.source.ring.Watch()()
		}
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("client panicked", zap.String("stream", s.name), zap.Any("panic", v), zap.Stack("stack"))
				_ = conn.Close()
			}
			if sig != nil {
				sig.Close() // the WebRTC session ends with its WebSocket
			}
			control.Close() // control the client held is released
			s.admitted.Add(-1)
			s.wg.Done()
		}()
		err := c.Run(s.ctx)
		if err != nil && s.log.Core().Enabled(zap.DebugLevel) {
			s.log.Debug("client ended", zap.String("stream", s.name), zap.String("remote", remote), zap.Error(err))
		}
	}()
	return nil
}

// commandPath returns the 0x04 handler of one client whose connection got
// the verdict trust: its own session of the relay, which refuses every
// command of an untrusted connection (counted here per stream), or,
// without sdr_nats, an "unavailable" acknowledgement. control is the
// client's place in the stream's control lease (nil without one), which
// its DataChannels share and which the caller closes when it leaves. With
// the sdr_recorder app, the client's keep goes to it (docs/recorder.md).
func (s *Stream) commandPath(trust origin.Verdict, client string) (command func([]byte) []byte, control *lease.Conn) {
	if s.relay == nil {
		return unavailableAck, nil
	}
	session := s.relay.Session(trust)
	s.allowKeep(session, client)
	command, control = session.Command, session.Control()
	if trust.Trusted {
		return command, control
	}
	refused := s.metrics.originRejected.WithLabelValues(s.name)
	return func(body []byte) []byte {
		refused.Inc()
		return session.Command(body)
	}, control
}

// unavailableAck answers a command when no NATS is configured.
func unavailableAck(body []byte) []byte {
	var cmd struct {
		Action json.RawMessage `json:"action"`
		CmdSeq json.RawMessage `json:"cmd_seq"`
	}
	_ = json.Unmarshal(body, &cmd) // a malformed command still gets its answer
	if len(cmd.Action) == 0 {
		cmd.Action = json.RawMessage("null")
	}
	if len(cmd.CmdSeq) == 0 {
		cmd.CmdSeq = json.RawMessage("null")
	}
	payload, _ := json.Marshal(struct {
		Action json.RawMessage `json:"action"`
		CmdSeq json.RawMessage `json:"cmd_seq"`
		Status string          `json:"status"`
		Detail string          `json:"detail"`
	}{cmd.Action, cmd.CmdSeq, "unavailable", "no NATS configured"})
	msg, _ := wire.Telemetry("telemetry.command.ack", payload)
	return msg
}

// health is the old transport-server's /health body, field for field.
type health struct {
	Status            string `json:"status"`
	Clients           int64  `json:"clients"`
	SHMSeq            uint64 `json:"shm_seq"`
	LastFrameAgeMS    *int64 `json:"last_frame_age_ms"`
	UptimeS           uint64 `json:"uptime_s"`
	FramesBroadcast   uint64 `json:"frames_broadcast"`
	ClientLagTotal    uint64 `json:"client_lag_total"`
	AvgFrameSizeBytes uint64 `json:"avg_frame_size_bytes"`
	// NATS is the sdr_nats connection state ("connected", "reconnecting",
	// ...), after the old service's fields; absent without sdr_nats.
	NATS string `json:"nats,omitempty"`
	// Ring is the state of the ring reader; absent for other sources.
	Ring *ringHealth `json:"ring,omitempty"`
	// ReaderHeartbeatAgeMS is the time since the ring reader last went
	// round its loop (it does at least every 500 ms while it runs); absent
	// for other sources.
	ReaderHeartbeatAgeMS *int64 `json:"reader_heartbeat_age_ms,omitempty"`
}

// ringHealth is the ring reader's state in the health JSON.
type ringHealth struct {
	// Path is the ring file.
	Path string `json:"path"`
	// State is "attached" (the file is mapped), "waiting" (for the writer
	// to create it) or "failing" (it cannot be mapped, or the reader is
	// stuck or stopped).
	State string `json:"state"`
	// Reason says why the ring is not attached.
	Reason string `json:"reason,omitempty"`
}

// readerStuckAfter is how long the ring reader may go without a heartbeat
// before the health JSON calls it stuck and answers 503: ten times its
// longest wait between two polls.
const readerStuckAfter = 5 * time.Second

// ringState reports the ring reader's state, and whether it is a fault of
// the process (a reader stuck or stopped), which the health answers with
// 503. A ring the writer has not created yet is no fault.
func (s *Stream) ringState(now time.Time) (rh *ringHealth, heartbeatAge *int64, fault bool) {
	ring := s.source.ring
	rd := ring.Reader()
	rh = &ringHealth{Path: rd.Config().Path}
	hb := rd.Heartbeat()
	var age time.Duration
	if !hb.IsZero() {
		age = max(now.Sub(hb), 0)
		ms := age.Milliseconds()
		heartbeatAge = &ms
	}
	stuckAfter := s.stuckAfter
	if stuckAfter == 0 {
		stuckAfter = readerStuckAfter
	}
	attachErr := rd.AttachError()
	switch {
	case ring.Err() != nil:
		rh.State, rh.Reason, fault = "failing", "reader stopped: "+ring.Err().Error(), true
	case age > stuckAfter:
		rh.State, rh.Reason, fault = "failing", fmt.Sprintf("reader stuck: no poll for %s", age.Round(time.Millisecond)), true
	case rd.Stats().Attached:
		rh.State = "attached"
	case attachErr == nil:
		rh.State, rh.Reason = "waiting", "reader starting"
	case shmring.WaitingForWriter(attachErr):
		rh.State, rh.Reason = "waiting", attachErr.Error()
	default:
		rh.State, rh.Reason = "failing", attachErr.Error()
	}
	return rh, heartbeatAge, fault
}

// serveHealth answers the health JSON. Its counts are the stream's, over
// every handler that serves it (each site that imports it), as the old
// service had one fan-out for all its clients. It answers 503, status
// "error", while the ring reader is stuck or stopped: a fault of this
// process, not a simulator that has not started.
func (s *Stream) serveHealth(w http.ResponseWriter, _ *http.Request) error {
	now := time.Now()
	st := s.group.Stats()
	h := health{
		Status:            "ok",
		Clients:           st.Clients,
		UptimeS:           uint64(time.Since(processStart) / time.Second),
		FramesBroadcast:   st.FramesBroadcast,
		ClientLagTotal:    st.LagSkips,
		AvgFrameSizeBytes: st.AvgFrameSize(),
	}
	switch {
	case s.source.ring != nil:
		h.SHMSeq = s.source.ring.Reader().Sequence()
	case s.source.nats != nil:
		// An edge: the frame_seq of the origin's ring, as received.
		h.SHMSeq = s.source.nats.Stats().LastSeq
	}
	if s.busConn != nil {
		h.NATS = s.busConn()
	}
	code := http.StatusOK
	if s.source.ring != nil {
		var fault bool
		h.Ring, h.ReaderHeartbeatAgeMS, fault = s.ringState(now)
		if fault {
			h.Status, code = "error", http.StatusServiceUnavailable
		}
	}
	if t := s.source.src.LastArrival(); !t.IsZero() {
		age := now.Sub(t).Milliseconds()
		h.LastFrameAgeMS = &age
	}
	body, err := json.Marshal(h)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("sdr_stream %s: encoding health: %w", s.name, err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, err = w.Write(body)
	return err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Stream)(nil)
	_ caddy.Validator             = (*Stream)(nil)
	_ caddy.CleanerUpper          = (*Stream)(nil)
	_ caddyhttp.MiddlewareHandler = (*Stream)(nil)
)
