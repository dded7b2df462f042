// Package ros is the sdr_ros handler: a rosbridge v2 endpoint for roslibjs
// on one multiplexed upstream connection (package internal/rosbridge), with
// motion publishes passing the sdr_nats app's safety gate.
package ros

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcaddyfile"
	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrmetrics"
	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrstart"
	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/origin"
	"github.com/sdr-os/sdr-caddy/internal/rosbridge"
)

func init() {
	caddy.RegisterModule(ROS{})
}

// rosMetrics are created once per process and registered into each config
// load's registry.
var rosMetrics = rosbridge.NewMetrics()

// rosMuxes shares a running mux between config loads whose sdr_ros
// settings are the same, so that a reload that does not touch them keeps
// the browsers connected and the upstream subscriptions in place. The key is
// the handler's JSON with defaults applied.
var rosMuxes = caddy.NewUsagePool()

type rosMuxEntry struct{ mux *rosbridge.Mux }

func (e *rosMuxEntry) Destruct() error {
	e.mux.Close()
	return nil
}

// ROS is a rosbridge v2 endpoint for roslibjs that multiplexes every browser
// onto one connection to rosbridge_server. Subscriptions are shared (one
// upstream subscribe per topic, each message fanned out as the same bytes),
// throttle_rate and queue_length apply per client here, service calls travel
// on connections of their own with a timeout, ops are checked against
// allowlists, and publishes on motion topics pass the video safety gate of
// the sdr_nats app.
//
// Like the raw reverse proxy of SDR_OS's edge that it replaces, it lets
// every op through by default (the allowlists are an opt-in hardening) and
// answers 502 while rosbridge_server is unreachable. Every browser may
// connect and subscribe; advertise, publish and call_service are refused
// on a connection whose Origin is not trusted (see Origins).
type ROS struct {
	// Upstream is the rosbridge_server WebSocket URL. Default
	// `ws://127.0.0.1:9090`.
	Upstream string `json:"upstream,omitempty"`
	// SubscribeTopics are the topics clients may subscribe to, as glob
	// patterns (`*` matches any run of characters, `/` included; `?` one
	// character). Default `["*"]`: every topic may be read.
	SubscribeTopics []string `json:"subscribe_topics,omitempty"`
	// PublishTopics are the topics clients may advertise and publish on.
	// Default `["*"]`: every topic, as through a plain proxy (publishes on
	// MotionTopics still pass the safety gate).
	PublishTopics []string `json:"publish_topics,omitempty"`
	// Services are the services clients may call, `/rosapi/*` included.
	// Default `["*"]`: every service, as through a plain proxy.
	Services []string `json:"services,omitempty"`
	// LatchedTopics are the topics whose newest message a client gets at
	// once when it subscribes to a topic other clients already hold (as a
	// transient_local, "latched", topic replays to each new subscriber).
	// Default `["/tf_static", "/map", "/map_metadata", "/robot_description"]`.
	LatchedTopics []string `json:"latched_topics,omitempty"`
	// MotionTopics are the topics whose publishes pass the safety gate.
	// Default `["/cmd_vel"]`.
	MotionTopics []string `json:"motion_topics,omitempty"`
	// StopMessage is the message published on a motion topic once per
	// gated episode (the robot was driven, then the video went stale).
	// Default a zero geometry_msgs/Twist:
	// `{"linear":{"x":0.0,"y":0.0,"z":0.0},"angular":{"x":0.0,"y":0.0,"z":0.0}}`.
	StopMessage json.RawMessage `json:"stop_message,omitempty"`
	// GateStream names the video stream whose safety gate motion publishes
	// answer to (the sdr_nats app's gate of that stream). Default `default`.
	GateStream string `json:"gate_stream,omitempty"`
	// AllowMotionWithoutGate lets motion publishes through when the sdr_nats
	// app is not configured, so that no gate exists. Default false: they are
	// refused.
	AllowMotionWithoutGate bool `json:"allow_motion_without_gate,omitempty"`
	// ServiceTimeout bounds a service call; the caller then gets
	// service_response with result false. Default 10s.
	ServiceTimeout caddy.Duration `json:"service_timeout,omitempty"`
	// ServiceConnections is the number of upstream connections for service
	// calls. Default 2.
	ServiceConnections int `json:"service_connections,omitempty"`
	// ClientQueue is how many topic messages may wait for one client before
	// the oldest is dropped. Default 100.
	ClientQueue int `json:"client_queue,omitempty"`
	// MaxMessageSize caps a client message in bytes, fragments reassembled;
	// a larger one closes the connection. Default 1048576.
	MaxMessageSize int64 `json:"max_message_size,omitempty"`
	// RateLimit is the ops per second one client may send; ops over it are
	// dropped with a status error. Default 100; -1 disables.
	RateLimit float64 `json:"rate_limit,omitempty"`
	// RateBurst is the rate limiter's bucket. Default twice RateLimit.
	RateBurst int `json:"rate_burst,omitempty"`
	// Origins are the browser origins (scheme://host[:port], `*`
	// wildcards as in `https://*.example.com`; `*` alone: any) trusted to
	// advertise, publish and call services besides the page's own host on
	// any port, the host a proxy names in X-Forwarded-Host, loopback
	// origins and clients that send no Origin (SDR_ALLOWED_ORIGINS). Every
	// origin may connect and subscribe; another origin's advertise,
	// publish and call_service get an error status ("origin ... not
	// allowed").
	Origins []string `json:"origins,omitempty"`
	// Hosts are the names (host names, `*` wildcards as in
	// `*.example.com`; `*` alone: any) that a browser's Host header may
	// carry for its advertise, publish and call_service to be taken,
	// besides IP addresses, localhost, single-label names and *.local,
	// *.ts.net, *.lan, *.home.arpa and *.internal names
	// (SDR_ALLOWED_HOSTS): the DNS rebinding guard. A browser connection
	// with another Host gets an error status ("host ... not allowed") for
	// them, and may still subscribe.
	Hosts []string `json:"hosts,omitempty"`
	// ClientLimits bound the frames a client sends and set the pings that
	// find dead peers.
	sdrcaddyfile.ClientLimits
	// ReconnectMin and ReconnectMax bound the upstream reconnect backoff.
	// Defaults 100ms and 5s.
	ReconnectMin caddy.Duration `json:"reconnect_min,omitempty"`
	ReconnectMax caddy.Duration `json:"reconnect_max,omitempty"`

	mux     *rosbridge.Mux
	poolKey string
	starter *sdrstart.App
	log     *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (ROS) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sdr_ros",
		New: func() caddy.Module { return new(ROS) },
	}
}

// Provision registers the metrics, finds the safety gate and takes the mux;
// the sdr_start app connects it when Caddy starts the config.
func (r *ROS) Provision(ctx caddy.Context) error {
	r.log = ctx.Logger()
	if r.Upstream == "" {
		r.Upstream = "ws://127.0.0.1:9090"
	}
	if r.SubscribeTopics == nil {
		r.SubscribeTopics = []string{"*"}
	}
	if r.PublishTopics == nil {
		r.PublishTopics = []string{"*"}
	}
	if r.Services == nil {
		r.Services = []string{"*"}
	}
	if r.MotionTopics == nil {
		r.MotionTopics = []string{"/cmd_vel"}
	}
	if r.LatchedTopics == nil {
		r.LatchedTopics = []string{"/tf_static", "/map", "/map_metadata", "/robot_description"}
	}
	if r.GateStream == "" {
		r.GateStream = "default"
	}
	if err := r.Validate(); err != nil {
		return err
	}
	if err := sdrmetrics.Register(ctx.GetMetricsRegistry(), rosMetrics.Collectors()...); err != nil {
		return fmt.Errorf("sdr_ros: registering metrics: %w", err)
	}
	sub, _ := rosbridge.ParseAllowlist(r.SubscribeTopics)
	pub, _ := rosbridge.ParseAllowlist(r.PublishTopics)
	svc, _ := rosbridge.ParseAllowlist(r.Services)
	latched, _ := rosbridge.ParseAllowlist(r.LatchedTopics)
	opts := rosbridge.Options{
		Upstream:               r.Upstream,
		Subscribe:              sub,
		Publish:                pub,
		Services:               svc,
		Latched:                latched,
		MotionTopics:           r.MotionTopics,
		StopMessage:            r.StopMessage,
		AllowMotionWithoutGate: r.AllowMotionWithoutGate,
		ServiceTimeout:         time.Duration(r.ServiceTimeout),
		ServiceConnections:     r.ServiceConnections,
		ClientQueue:            r.ClientQueue,
		MaxMessageSize:         r.MaxMessageSize,
		RateLimit:              r.RateLimit,
		RateBurst:              r.RateBurst,
		Origins:                r.Origins,
		Hosts:                  r.Hosts,
		FrameLimits:            r.FrameLimits(),
		PingInterval:           r.PingEvery(),
		MinBackoff:             time.Duration(r.ReconnectMin),
		MaxBackoff:             time.Duration(r.ReconnectMax),
		Logger:                 ctx.Slogger(),
		Metrics:                rosMetrics,
	}
	var gate frame.MotionGate
	var control *lease.Lease
	app, err := ctx.AppIfConfigured("sdr_nats")
	switch {
	case err == nil && app != nil:
		gates, ok := app.(frame.Gates)
		if !ok {
			return fmt.Errorf("sdr_ros: the sdr_nats app (%T) does not provide safety gates", app)
		}
		sg := &streamGate{gates: gates, stream: r.GateStream, log: r.log}
		// Create the gate now, so that its timer runs from startup; a
		// stream that attaches later binds its video to this same gate.
		if g, err := gates.Gate(r.GateStream); err == nil {
			sg.gate = g
		}
		gate = sg
		r.log.Info("motion publishes pass the video safety gate", zap.Strings("motion_topics", r.MotionTopics), zap.String("stream", r.GateStream))
		if leases, ok := app.(frame.Leases); ok {
			// The stream's control lease, nil when it is off
			// (docs/control.md): motion publishes then pass only from
			// the client that called /sdr/take_control.
			if control, err = leases.Lease(r.GateStream); err != nil {
				return fmt.Errorf("sdr_ros: %w", err)
			}
		}
	case r.AllowMotionWithoutGate:
		r.log.Warn("sdr_nats is not configured: there is no video safety gate, and motion publishes pass UNGATED (allow_motion_without_gate)",
			zap.Strings("motion_topics", r.MotionTopics))
	default:
		r.log.Warn("sdr_nats is not configured: there is no video safety gate, so motion publishes are refused (set allow_motion_without_gate to let them through ungated)",
			zap.Strings("motion_topics", r.MotionTopics))
	}
	key, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("sdr_ros: encoding the pool key: %w", err)
	}
	val, loaded, err := rosMuxes.LoadOrNew(string(key), func() (caddy.Destructor, error) {
		mux, err := rosbridge.New(opts)
		if err != nil {
			return nil, err
		}
		return &rosMuxEntry{mux: mux}, nil
	})
	if err != nil {
		return fmt.Errorf("sdr_ros: %w", err)
	}
	r.poolKey = string(key)
	r.mux = val.(*rosMuxEntry).mux
	// this config's gate (or none) applies from now on; Cleanup drops it
	r.mux.SetGate(r, gate)
	r.mux.SetLease(r, control)
	if loaded {
		r.log.Info("kept the running rosbridge mux: its settings did not change", zap.String("upstream", r.Upstream))
	}
	// The upstream is dialed when Caddy starts the config, never for
	// caddy validate.
	starter, err := sdrstart.Of(ctx)
	if err != nil {
		return fmt.Errorf("sdr_ros: %w", err)
	}
	mux := r.mux
	r.starter = starter
	return starter.OnStart("sdr_ros "+r.Upstream, func() error { mux.Start(); return nil })
}

// Validate checks the configuration.
func (r *ROS) Validate() error {
	if r.Upstream != "" {
		u, err := url.Parse(r.Upstream)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return fmt.Errorf("sdr_ros: upstream %q: want a ws:// or wss:// URL", r.Upstream)
		}
	}
	for name, list := range map[string][]string{
		"subscribe_topics": r.SubscribeTopics, "publish_topics": r.PublishTopics,
		"services": r.Services, "motion_topics": r.MotionTopics, "latched_topics": r.LatchedTopics,
	} {
		if _, err := rosbridge.ParseAllowlist(list); err != nil {
			return fmt.Errorf("sdr_ros: %s: %w", name, err)
		}
	}
	switch {
	case r.ServiceTimeout < 0:
		return fmt.Errorf("sdr_ros: service_timeout %v is negative", time.Duration(r.ServiceTimeout))
	case r.ServiceConnections < 0 || r.ServiceConnections > 64:
		return fmt.Errorf("sdr_ros: service_connections %d: want 1 to 64", r.ServiceConnections)
	case r.ClientQueue < 0:
		return fmt.Errorf("sdr_ros: client_queue %d is negative", r.ClientQueue)
	case r.MaxMessageSize < 0:
		return fmt.Errorf("sdr_ros: max_message_size %d is negative", r.MaxMessageSize)
	case r.RateLimit < 0 && r.RateLimit != -1:
		return fmt.Errorf("sdr_ros: rate_limit %g: want a positive rate, or -1 for none", r.RateLimit)
	case r.RateBurst < 0:
		return fmt.Errorf("sdr_ros: rate_burst %d is negative", r.RateBurst)
	case r.ReconnectMin < 0 || r.ReconnectMax < 0:
		return errors.New("sdr_ros: reconnect_min and reconnect_max must not be negative")
	}
	if r.StopMessage != nil {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(r.StopMessage, &obj); err != nil {
			return fmt.Errorf("sdr_ros: stop_message %s: want a JSON object: %w", r.StopMessage, err)
		}
	}
	for _, o := range r.Origins {
		if err := origin.Validate(o); err != nil {
			return fmt.Errorf("sdr_ros: %w", err)
		}
	}
	for _, h := range r.Hosts {
		if err := origin.ValidateHost(h); err != nil {
			return fmt.Errorf("sdr_ros: %w", err)
		}
	}
	if err := r.ClientLimits.ValidateLimits(); err != nil {
		return fmt.Errorf("sdr_ros: %w", err)
	}
	return nil
}

// Cleanup gives the mux back; the last config using it closes every client
// and the upstream connections.
func (r *ROS) Cleanup() error {
	if r.mux == nil {
		return nil
	}
	r.mux.DropGate(r)
	r.mux.DropLease(r)
	r.mux = nil
	if _, err := rosMuxes.Delete(r.poolKey); err != nil {
		return fmt.Errorf("sdr_ros: releasing the mux for %s: %w", r.Upstream, err)
	}
	return nil
}

// ServeHTTP serves a rosbridge client (a WebSocket upgrade); any other
// request gets 400, and an upgrade while rosbridge_server is not connected
// 502.
func (r *ROS) ServeHTTP(w http.ResponseWriter, req *http.Request, _ caddyhttp.Handler) error {
	if err := r.starter.Wait(req.Context()); err != nil {
		return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("sdr_ros: not started: %w", err))
	}
	r.mux.ServeHTTP(w, req)
	return nil
}

// streamGate finds the gate of a stream in the sdr_nats app when it is first
// asked: the stream may attach to the app after this handler is provisioned.
// Until the gate exists, motion publishes are held back.
type streamGate struct {
	gates  frame.Gates
	stream string
	log    *zap.Logger

	mu   sync.Mutex
	gate frame.MotionGate
	told bool
}

func (g *streamGate) Allow(action string) (bool, string) {
	gate := g.find()
	if gate == nil {
		return false, "NO_GATE"
	}
	return gate.Allow(action)
}

// Armed reports whether the stream's gate is armed. With no gate found it
// reports true, so that Allow holds motion back.
func (g *streamGate) Armed() bool {
	gate := g.find()
	return gate == nil || gate.Armed()
}

func (g *streamGate) find() frame.MotionGate {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gate == nil {
		found, err := g.gates.Gate(g.stream)
		if err != nil {
			if !g.told {
				g.told = true
				g.log.Warn("no safety gate for the stream yet; motion publishes are held back", zap.String("stream", g.stream), zap.Error(err))
			}
			return nil
		}
		g.gate = found
	}
	return g.gate
}

// Interface guards
var (
	_ caddy.Provisioner           = (*ROS)(nil)
	_ caddy.Validator             = (*ROS)(nil)
	_ caddy.CleanerUpper          = (*ROS)(nil)
	_ caddyhttp.MiddlewareHandler = (*ROS)(nil)
	_ frame.MotionGate            = (*streamGate)(nil)
)
