// Package natsapp is the sdr_nats app and handler: the process's NATS
// connection (an external server or an embedded nats-server), the safety
// gate of each stream, and the telemetry relay and command path
// (internal/relay) that sdr_stream and the sdr_nats handler share. Other
// families find it through ctx.App and the interfaces of internal/frame.
package natsapp

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrstart"
	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/gate"
	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/relay"
)

func init() {
	caddy.RegisterModule(new(NATSApp))
}

// NATSApp is the `sdr_nats` app: the process's NATS connection, the
// telemetry relay and command path shared by /stream/ws and the sdr_nats
// handler, and the safety gate of each stream.
//
// With no URL it runs an embedded nats-server on 127.0.0.1:4222 so that the
// simulator can connect and the demo needs no external service. One
// connection (and embedded server) serves the whole process and survives
// config reloads as long as its parameters do not change; it reconnects
// forever with backoff. Both start when Caddy starts the config, never for
// `caddy validate`.
type NATSApp struct {
	// ConnConfig is the connection: servers, authentication, TLS, the
	// embedded server and reconnection. Its fields are at the top level of
	// the app's JSON.
	ConnConfig

	// TelemetrySubjects is the telemetry allowlist: NATS subscription
	// patterns relayed to WebSocket clients as 0x02. Default ["telemetry.>"]
	// (SDR_TELEMETRY_SUBJECTS).
	TelemetrySubjects []string `json:"telemetry_subjects,omitempty"`
	// TelemetryMaxSize is the largest telemetry payload relayed, in bytes;
	// larger ones are dropped. Default 65536 (SDR_TELEMETRY_MAX_SIZE).
	TelemetryMaxSize int `json:"telemetry_max_size,omitempty"`
	// TelemetryMaxSubject is the longest subject relayed, at most and by
	// default 256 bytes.
	TelemetryMaxSubject int `json:"telemetry_max_subject,omitempty"`
	// TelemetryLinger is the shortest time between two hand-offs of
	// telemetry to the WebSocket clients: a message after a quiet spell goes
	// at once, a dense stream goes in batches of which each client gets a
	// whole one in one write. Fewer writes, less cost to video, for at most
	// this much added latency. Default 5ms (measured at 500 clients and
	// 1,000 messages/s: lower telemetry latency, no losses and less cost to
	// video than handing each message on at once); -1 hands each message on
	// at once.
	TelemetryLinger caddy.Duration `json:"telemetry_linger,omitempty"`
	// Actions, when set, is the only command actions clients may send.
	Actions []string `json:"actions,omitempty"`
	// CommandRate is how many commands per second one WebSocket client may
	// send on average (estop is never limited); -1 turns the limit off.
	// Default 50.
	CommandRate float64 `json:"command_rate,omitempty"`
	// CommandBurst is how many commands one client may send at once.
	// Default 100.
	CommandBurst int `json:"command_burst,omitempty"`
	// SafetyGate sets the thresholds of the safety gates.
	SafetyGate *NATSGate `json:"gate,omitempty"`
	// Control sets up the control lease of every stream: one connection at
	// a time may drive (docs/control.md). Off by default.
	Control *NATSControl `json:"control,omitempty"`

	ctx     caddy.Context
	log     *zap.Logger
	conn    *natsConn
	connKey string
	relay   *relay.Relay
	starter *sdrstart.App

	mu      sync.Mutex
	gates   map[string]*natsGateRef
	leases  map[string]*natsLeaseRef
	started bool
}

// NATSControl is the control lease (docs/control.md).
type NATSControl struct {
	// Lease turns the control lease on: each stream's commands that move
	// or change the robot pass only from the one connection that took
	// control (take_control); estop passes from anyone, always.
	Lease bool `json:"lease,omitempty"`
	// Idle releases the lease when its holder has sent no command for this
	// long. Default 30s; -1 (off in the Caddyfile): never.
	Idle caddy.Duration `json:"idle,omitempty"`
	// ViewerActions are the actions every connection may send without
	// holding the lease, besides estop. Default ["force_idr",
	// "list_policies"].
	ViewerActions []string `json:"viewer_actions,omitempty"`
}

// NATSTLS configures TLS to external NATS servers.
type NATSTLS struct {
	// CA is a PEM file of the authorities to trust instead of the system's.
	CA string `json:"ca,omitempty"`
	// Cert and Key are a PEM client certificate and its key.
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
	// ServerName overrides the name checked in the server's certificate.
	ServerName string `json:"server_name,omitempty"`
	// InsecureSkipVerify turns certificate checks off. For tests only.
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`
}

// NATSEmbedded configures the embedded nats-server.
type NATSEmbedded struct {
	// Listen is the client listener, host:port. Default "127.0.0.1:4222".
	Listen string `json:"listen,omitempty"`
	// ServerName names the server in a cluster. Default: generated.
	ServerName string `json:"server_name,omitempty"`
	// JetStream turns JetStream on.
	JetStream bool `json:"jetstream,omitempty"`
	// StoreDir is where JetStream keeps its data. Default: sdr-nats-jetstream
	// in Caddy's data directory.
	StoreDir string `json:"store_dir,omitempty"`
	// LeafRemotes join this server to a cluster as a leaf node.
	LeafRemotes []NATSLeafRemote `json:"leaf_remotes,omitempty"`
}

// NATSLeafRemote is one leaf node connection of the embedded server.
type NATSLeafRemote struct {
	// URLs of the hub's leaf node listener, e.g. "nats-leaf://hub:7422".
	URLs []string `json:"urls"`
	// Credentials is a credentials file for the hub.
	Credentials string `json:"credentials,omitempty"`
}

// NATSGate holds the thresholds of the safety gates.
type NATSGate struct {
	// Hold is how long the video may be stale before HOLD. Default 1s
	// (SDR_VIDEO_GATE_HOLD_MS).
	Hold caddy.Duration `json:"hold,omitempty"`
	// Estop is how long the video may be stale before ESTOP. Default 5s
	// (SDR_VIDEO_GATE_ESTOP_MS).
	Estop caddy.Duration `json:"estop,omitempty"`
	// CodecGrace is added to Estop for video that stops within this long
	// of a codec change. Default 2s (SDR_VIDEO_GATE_CODEC_CHANGE_GRACE_MS);
	// negative: none (codec_grace 0 or off in the Caddyfile).
	CodecGrace caddy.Duration `json:"codec_grace,omitempty"`
}

// DefaultNATSListen is where the embedded server listens by default.
const DefaultNATSListen = "127.0.0.1:4222"

// CaddyModule returns the Caddy module information.
func (*NATSApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "sdr_nats",
		New: func() caddy.Module { return new(NATSApp) },
	}
}

// Provision takes the process's NATS connection and subscribes to
// telemetry on it. A new connection dials nothing, and the embedded server
// does not start, until Start: `caddy validate` provisions the app but
// starts none.
func (a *NATSApp) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.log = ctx.Logger()
	a.gates = map[string]*natsGateRef{}
	a.leases = map[string]*natsLeaseRef{}
	if err := natsRegisterMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	if err := a.Validate(); err != nil {
		return err
	}
	if len(a.URLs) > 0 && a.Embedded != nil {
		a.log.Info("url given: the embedded nats-server options are not used", zap.Strings("urls", a.URLs))
	}
	params := a.connConfig()
	key, err := params.key()
	if err != nil {
		return err
	}
	c, _, err := natsConns.LoadOrNew(key, func() (caddy.Destructor, error) {
		return newNATSConn(params, a.log.Named("conn"))
	})
	if err != nil {
		return fmt.Errorf("sdr_nats: %w", err)
	}
	a.conn, a.connKey = c.(*natsConn), key
	// The connection starts with the sdr_start app, which the handlers
	// wait for: whichever app Caddy starts first, a request finds it up.
	if a.starter, err = sdrstart.Of(ctx); err != nil {
		return fmt.Errorf("sdr_nats: %w", err)
	}
	if err := a.starter.OnStart("sdr_nats", a.conn.start); err != nil {
		return err
	}
	a.relay, err = relay.New(a.conn.nc, a.relayConfig(), ctx.Slogger(), &relay.Metrics{
		Telemetry: natsMetrics.telemetry,
		Commands:  natsMetrics.commands,
	})
	if err != nil {
		return fmt.Errorf("sdr_nats: %w", err)
	}
	return nil
}

func (a *NATSApp) relayConfig() relay.Config {
	return relay.Config{
		Subjects:   a.TelemetrySubjects,
		MaxPayload: a.TelemetryMaxSize,
		MaxSubject: a.TelemetryMaxSubject,
		Actions:    a.Actions,
		Rate:       a.CommandRate,
		Burst:      a.CommandBurst,
		Linger:     a.telemetryLinger(),
	}
}

// DefaultTelemetryLinger is telemetry_linger when none is configured.
const DefaultTelemetryLinger = 5 * time.Millisecond

// telemetryLinger resolves the configured linger: 0 takes the default, a
// negative value turns batching off.
func (a *NATSApp) telemetryLinger() time.Duration {
	switch {
	case a.TelemetryLinger == 0:
		return DefaultTelemetryLinger
	case a.TelemetryLinger < 0:
		return 0
	}
	return time.Duration(a.TelemetryLinger)
}

func (a *NATSApp) gateConfig() gate.Config {
	var c gate.Config
	if a.SafetyGate != nil {
		c.Hold = time.Duration(a.SafetyGate.Hold)
		c.Estop = time.Duration(a.SafetyGate.Estop)
		c.CodecGrace = time.Duration(a.SafetyGate.CodecGrace)
	}
	return c
}

// leaseConfig returns the lease's settings and whether it is on.
func (a *NATSApp) leaseConfig() (lease.Config, bool) {
	if a.Control == nil || !a.Control.Lease {
		return lease.Config{}, false
	}
	return lease.Config{Idle: time.Duration(a.Control.Idle), ViewerActions: a.Control.ViewerActions}.WithDefaults(), true
}

// Validate checks the configuration without opening anything.
func (a *NATSApp) Validate() error {
	if err := a.relayConfig().Validate(); err != nil {
		return fmt.Errorf("sdr_nats: %w", err)
	}
	if a.TelemetryMaxSize < 0 {
		return fmt.Errorf("sdr_nats: telemetry_max_size %d is negative", a.TelemetryMaxSize)
	}
	if (a.TelemetryLinger < 0 && a.TelemetryLinger != -1) || time.Duration(a.TelemetryLinger) > time.Second {
		return fmt.Errorf("sdr_nats: telemetry_linger %s: want up to 1s, or -1 for none", time.Duration(a.TelemetryLinger))
	}
	if a.CommandRate < 0 && a.CommandRate != -1 {
		return fmt.Errorf("sdr_nats: command_rate %g: want a positive rate, or -1 for no limit", a.CommandRate)
	}
	if err := a.gateConfig().Validate(); err != nil {
		return fmt.Errorf("sdr_nats: %w", err)
	}
	if c := a.Control; c != nil {
		if c.Idle < 0 && c.Idle != -1 {
			return fmt.Errorf("sdr_nats: control idle %s: want a positive duration, or -1 for none", time.Duration(c.Idle))
		}
		if err := (lease.Config{ViewerActions: c.ViewerActions}).Validate(); err != nil {
			return fmt.Errorf("sdr_nats: control: %w", err)
		}
	}
	if len(a.URLs) > 0 {
		return nil
	}
	if a.Credentials != "" || a.NKeySeed != "" {
		return errors.New("sdr_nats: credentials and nkey_seed need an external server (url); the embedded server takes token or user")
	}
	if a.TLS != nil {
		return errors.New("sdr_nats: tls applies to external servers (url); the embedded server listens on plain TCP")
	}
	if a.Embedded != nil {
		if a.Embedded.Listen != "" {
			if _, _, err := natsSplitListen(a.Embedded.Listen); err != nil {
				return fmt.Errorf("sdr_nats: embedded listen: %w", err)
			}
		}
		if a.Embedded.StoreDir != "" && !a.Embedded.JetStream {
			return fmt.Errorf("sdr_nats: embedded store_dir %q given with JetStream off", a.Embedded.StoreDir)
		}
		for i, r := range a.Embedded.LeafRemotes {
			if len(r.URLs) == 0 {
				return fmt.Errorf("sdr_nats: embedded leaf remote %d has no url", i)
			}
		}
	}
	return nil
}

func natsSplitListen(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("parsing %q as host:port: %w", s, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q in %q is not a number from 0 to 65535", p, s)
	}
	return host, port, nil
}

// Start implements caddy.App: it starts the embedded server (unless an
// earlier config started it), lets the connection connect, and has the
// gates listen for motion commands on NATS.
func (a *NATSApp) Start() error {
	if err := a.conn.start(); err != nil {
		return fmt.Errorf("sdr_nats: %w", err)
	}
	a.mu.Lock()
	a.started = true
	for _, ref := range a.gates {
		ref.entry.listen()
	}
	a.mu.Unlock()
	a.log.Info("sdr_nats started", zap.String("server", a.conn.describe()), zap.String("state", a.ConnState()))
	return nil
}

// Stop implements caddy.App; resources are released in Cleanup.
func (a *NATSApp) Stop() error { return nil }

// Cleanup releases the telemetry subscriptions, this config's references to
// the gates and the connection. Only what Provision took is released.
func (a *NATSApp) Cleanup() error {
	var errs []error
	if a.relay != nil {
		a.relay.Close()
	}
	a.mu.Lock()
	gates := a.gates
	a.gates = nil
	leases := a.leases
	a.leases = nil
	a.mu.Unlock()
	for _, g := range gates {
		if _, err := natsGates.Delete(g.key); err != nil {
			errs = append(errs, fmt.Errorf("releasing gate of stream %q: %w", g.stream, err))
		}
	}
	for _, l := range leases {
		if _, err := natsLeases.Delete(l.key); err != nil {
			errs = append(errs, fmt.Errorf("releasing control lease of stream %q: %w", l.stream, err))
		}
	}
	if a.conn != nil {
		if _, err := natsConns.Delete(a.connKey); err != nil {
			errs = append(errs, fmt.Errorf("releasing nats connection: %w", err))
		}
		a.conn = nil
	}
	return errors.Join(errs...)
}

// Conn returns the process's NATS connection. The encoder app listens on it
// for force_idr and settings and publishes telemetry.frame.stats.
func (a *NATSApp) Conn() *nats.Conn {
	if a.conn == nil {
		return nil
	}
	return a.conn.nc
}

// NewConn opens a connection of its own to the same NATS servers as Conn,
// with the same credentials and TLS, named "<name>-<suffix>" (the flight
// recorder's, so that its video and copies never queue before commands on
// the shared connection). It dials nothing before sdr_nats starts, and
// reconnects on its own; the caller closes it.
func (a *NATSApp) NewConn(suffix string) (*nats.Conn, error) {
	if a.conn == nil {
		return nil, errors.New("sdr_nats: not provisioned")
	}
	return a.conn.extraConn(suffix, a.log)
}

// EmbeddedJetStream reports whether the connection goes to the embedded
// nats-server (no url given), and whether that server runs JetStream.
func (a *NATSApp) EmbeddedJetStream() (embedded, on bool) {
	if len(a.URLs) > 0 {
		return false, false
	}
	return true, a.Embedded != nil && a.Embedded.JetStream
}

// ConnState returns the connection state as the health JSON shows it:
// "connected", "connecting", "reconnecting", "disconnected", "closed" or
// "draining".
func (a *NATSApp) ConnState() string {
	if a.conn == nil {
		return "closed"
	}
	return natsStateName(a.conn.nc.Status())
}

// Relay returns the telemetry relay and command path of this config.
func (a *NATSApp) Relay() *relay.Relay { return a.relay }

// Gate returns the safety gate of a stream, creating it (and starting its
// timer) on first use. A gate is armed by the first frame of the source
// bound to it (Attach); until then it publishes nothing on its own.
func (a *NATSApp) Gate(stream string) (frame.MotionGate, error) {
	g, err := a.gate(stream)
	if err != nil {
		return nil, err
	}
	return g, nil
}

func (a *NATSApp) gate(stream string) (*gate.Gate, error) {
	if stream == "" {
		return nil, errors.New("sdr_nats: gate of an unnamed stream")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gates == nil || a.conn == nil {
		return nil, fmt.Errorf("sdr_nats: gate of stream %q requested from an app that is not provisioned", stream)
	}
	if ref, ok := a.gates[stream]; ok {
		return ref.entry.gate, nil
	}
	cfg := a.gateConfig()
	key := fmt.Sprintf("%s\x00%s\x00%d/%d/%d", a.connKey, stream, cfg.Hold, cfg.Estop, cfg.CodecGrace)
	v, _, err := natsGates.LoadOrNew(key, func() (caddy.Destructor, error) {
		return newNATSGate(stream, cfg, a.connKey, a.log.Named("gate"))
	})
	if err != nil {
		return nil, fmt.Errorf("sdr_nats: gate of stream %q: %w", stream, err)
	}
	e := v.(*natsGateEntry)
	a.gates[stream] = &natsGateRef{key: key, stream: stream, entry: e}
	if a.started {
		e.listen()
	}
	return e.gate, nil
}

// Attach binds a stream's source to that stream's gate and returns the
// stream's relay. Release unbinds the source (unless another has been bound
// since, as on a config reload).
func (a *NATSApp) Attach(stream string, src frame.Source) (frame.Relay, error) {
	if src == nil {
		return nil, fmt.Errorf("sdr_nats: attaching stream %q without a source", stream)
	}
	g, err := a.gate(stream)
	if err != nil {
		return nil, err
	}
	l, err := a.lease(stream)
	if err != nil {
		return nil, err
	}
	unbind := g.Bind(src)
	return a.relay.Stream(g, g.CodecChanging, unbind).WithLease(l), nil
}

// Lease returns the control lease of a stream, creating it on first use;
// nil when the lease is off (docs/control.md). A lease is shared across
// config reloads that keep its settings, so that a holder on a connection
// that outlives the reload (sdr_ros) keeps control.
func (a *NATSApp) Lease(stream string) (*lease.Lease, error) { return a.lease(stream) }

func (a *NATSApp) lease(stream string) (*lease.Lease, error) {
	cfg, on := a.leaseConfig()
	if !on {
		return nil, nil
	}
	if stream == "" {
		return nil, errors.New("sdr_nats: control lease of an unnamed stream")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.leases == nil || a.conn == nil {
		return nil, fmt.Errorf("sdr_nats: control lease of stream %q requested from an app that is not provisioned", stream)
	}
	if ref, ok := a.leases[stream]; ok {
		return ref.entry.lease, nil
	}
	cfg.Stream = stream
	key := fmt.Sprintf("%s\x00%s\x00%d\x00%q", a.connKey, stream, cfg.Idle, cfg.ViewerActions)
	v, _, err := natsLeases.LoadOrNew(key, func() (caddy.Destructor, error) {
		return newNATSLease(cfg, a.connKey, a.ctx.Slogger())
	})
	if err != nil {
		return nil, fmt.Errorf("sdr_nats: control lease of stream %q: %w", stream, err)
	}
	e := v.(*natsLeaseEntry)
	a.leases[stream] = &natsLeaseRef{key: key, stream: stream, entry: e}
	return e.lease, nil
}

// Interface guards.
var (
	_ caddy.App          = (*NATSApp)(nil)
	_ caddy.Provisioner  = (*NATSApp)(nil)
	_ caddy.Validator    = (*NATSApp)(nil)
	_ caddy.CleanerUpper = (*NATSApp)(nil)
	_ frame.Bus          = (*NATSApp)(nil)
	_ frame.Gates        = (*NATSApp)(nil)
	_ frame.Leases       = (*NATSApp)(nil)
)
