package natsapp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/internal/gate"
	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/relay"
)

// The process's NATS connections and gates, shared across config reloads.
var (
	natsConns = caddy.NewUsagePool()
	natsGates = caddy.NewUsagePool()
	// natsLeases are the control leases, by connection, stream and
	// settings.
	natsLeases = caddy.NewUsagePool()
)

// ConnConfig is how the sdr_nats app connects to NATS: every setting that
// changes how the process's shared connection, and the embedded server
// behind it, is built. Its JSON, defaults applied, is the key under which
// that connection is shared across config reloads.
type ConnConfig struct {
	// URLs are the NATS servers to connect to, e.g. "nats://nats:4222".
	// Empty: run the embedded server and connect to it in-process.
	URLs []string `json:"urls,omitempty"`
	// Name is the client connection name the server shows. Default "sdr-caddy".
	Name string `json:"name,omitempty"`
	// Credentials is a NATS credentials file (JWT and NKey seed) for an
	// external server.
	Credentials string `json:"credentials,omitempty"`
	// NKeySeed is a file holding an NKey seed to authenticate with.
	NKeySeed string `json:"nkey_seed,omitempty"`
	// Token is an authentication token. With the embedded server it is also
	// the token that server requires.
	Token string `json:"token,omitempty"`
	// User and Password authenticate by name. With the embedded server they
	// are also what that server requires.
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	// TLS configures TLS to an external server.
	TLS *NATSTLS `json:"tls,omitempty"`
	// Embedded configures the embedded nats-server used when URLs is empty.
	// With URLs given it is not used (and a log line says so), so that one
	// configuration can take an external server from an environment
	// variable and fall back to the embedded one when it is unset.
	Embedded *NATSEmbedded `json:"embedded,omitempty"`
	// ReconnectWaitMax caps the backoff between reconnection attempts
	// (from 100ms doubling, with jitter). Default 5s.
	ReconnectWaitMax caddy.Duration `json:"reconnect_wait_max,omitempty"`
}

// connConfig returns the app's connection settings with the defaults
// applied; the embedded server's only when no URL is given.
func (a *NATSApp) connConfig() ConnConfig {
	p := a.ConnConfig
	p.Embedded = nil
	if p.Name == "" {
		p.Name = "sdr-caddy"
	}
	if p.ReconnectWaitMax <= 0 {
		p.ReconnectWaitMax = caddy.Duration(5 * time.Second)
	}
	if len(p.URLs) == 0 {
		e := NATSEmbedded{}
		if a.Embedded != nil {
			e = *a.Embedded
		}
		if e.Listen == "" {
			e.Listen = DefaultNATSListen
		}
		p.Embedded = &e
	}
	return p
}

func (p ConnConfig) key() (string, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("sdr_nats: building connection key: %w", err)
	}
	return string(b), nil
}

// natsConn is the shared connection, and the embedded server behind it.
//
// It is made in Provision and dials nothing, starts no server, until start,
// which the sdr_nats app's Start calls: `caddy validate` provisions the app
// but starts none. Until then the client retries through a dialer (and an
// in-process provider) that refuses; subscriptions and publishes made
// meanwhile are kept and go out when it connects, as after a reconnect.
type natsConn struct {
	nc     *nats.Conn
	params ConnConfig
	log    *zap.Logger

	// started opens the dialer and the in-process provider.
	started atomic.Bool
	server  atomic.Pointer[server.Server] // the embedded server, once started
	// attempt receives a signal when a connection attempt after start
	// succeeded or failed.
	attempt chan struct{}

	mu        sync.Mutex // orders start
	startDone bool
	startErr  error
	urls      string

	// url and base are what nats.Connect took, less the shared
	// connection's name and handlers: extraConn connects with them.
	url  string
	base []nats.Option
	// extras are the connections extraConn made; start connects those
	// made before it at once. Guarded by mu.
	extras []*nats.Conn
}

// reconnectForever is how every connection to the servers reconnects: for
// ever, a failed first connect too, after reconnectDelay.
func reconnectForever(maxWait time.Duration) []nats.Option {
	return []nats.Option{
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectJitter(0, 0),
		nats.CustomReconnectDelay(reconnectDelay(maxWait)),
	}
}

// reconnectDelay is the wait before reconnection attempt n: 100ms
// doubling up to maxWait, with up to 20% jitter.
func reconnectDelay(maxWait time.Duration) func(attempts int) time.Duration {
	return func(attempts int) time.Duration {
		d := 100 * time.Millisecond
		for i := 1; i < attempts && d < maxWait; i++ {
			d *= 2
		}
		d = min(d, maxWait)
		return d + time.Duration(rand.Int64N(int64(d)/5+1))
	}
}

// extraConn opens a connection of its own to the shared connection's
// servers, with its credentials and TLS, named after it with "-"+suffix:
// for a user whose traffic must not queue with the commands and telemetry
// on the shared one (the flight recorder's video and copies). Like the
// shared connection it dials nothing before start, reconnects forever,
// and may be used at once: what it publishes meanwhile goes out once it
// connects. The caller closes it.
func (c *natsConn) extraConn(suffix string, log *zap.Logger) (*nats.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	name := c.params.Name + "-" + suffix
	opts := append(reconnectForever(time.Duration(c.params.ReconnectWaitMax)),
		nats.Name(name),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected; reconnecting", zap.String("connection", name), zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", zap.String("connection", name), zap.String("server", nc.ConnectedUrlRedacted()))
		}))
	opts = append(opts, c.base...)
	nc, err := nats.Connect(c.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("preparing the nats connection %s to %s: %w", name, c.url, err)
	}
	kept := c.extras[:0]
	for _, x := range c.extras {
		if !x.IsClosed() {
			kept = append(kept, x)
		}
	}
	c.extras = append(kept, nc)
	return nc, nil
}

// errNotStarted is what the dialer answers before start.
var errNotStarted = errors.New("sdr_nats not started")

// Dial implements nats.CustomDialer: it refuses until start, then dials as
// the client's default dialer does.
func (c *natsConn) Dial(network, address string) (net.Conn, error) {
	if !c.started.Load() {
		return nil, errNotStarted
	}
	d := net.Dialer{Timeout: nats.DefaultTimeout}
	return d.Dial(network, address)
}

// InProcessConn implements nats.InProcessConnProvider for the embedded
// server: it refuses until start has started the server.
func (c *natsConn) InProcessConn() (net.Conn, error) {
	s := c.server.Load()
	if s == nil || !c.started.Load() {
		return nil, errNotStarted
	}
	return s.InProcessConn()
}

// attempted signals the end of a connection attempt after start.
func (c *natsConn) attempted(err error) {
	if !c.started.Load() || errors.Is(err, errNotStarted) {
		return
	}
	select {
	case c.attempt <- struct{}{}:
	default:
	}
}

func newNATSConn(p ConnConfig, log *zap.Logger) (*natsConn, error) {
	c := &natsConn{params: p, log: log, attempt: make(chan struct{}, 1)}
	maxWait := time.Duration(p.ReconnectWaitMax)
	opts := append(reconnectForever(maxWait),
		nats.Name(p.Name),
		nats.ConnectHandler(func(nc *nats.Conn) {
			natsMetrics.connected.Set(1)
			log.Info("nats connected", zap.String("server", nc.ConnectedUrlRedacted()))
			c.attempted(nil)
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { c.attempted(err) }),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			natsMetrics.connected.Set(0)
			natsMetrics.disconnects.Inc()
			log.Warn("nats disconnected; reconnecting", zap.Error(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			natsMetrics.connected.Set(1)
			natsMetrics.reconnects.Inc()
			log.Info("nats reconnected", zap.String("server", nc.ConnectedUrlRedacted()))
			c.attempted(nil)
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			natsMetrics.connected.Set(0)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			natsMetrics.errors.Inc()
			if ce := log.Check(zap.DebugLevel, "nats asynchronous error"); ce != nil {
				subj := ""
				if sub != nil {
					subj = sub.Subject
				}
				ce.Write(zap.String("subject", subj), zap.Error(err))
			}
		}))
	// base is what every connection to these servers takes: credentials,
	// TLS and the dialers; extraConn reuses it.
	var base []nats.Option
	if p.Token != "" {
		base = append(base, nats.Token(p.Token))
	}
	if p.User != "" {
		base = append(base, nats.UserInfo(p.User, p.Password))
	}
	if p.Credentials != "" {
		base = append(base, nats.UserCredentials(p.Credentials))
	}
	if p.NKeySeed != "" {
		o, err := nats.NkeyOptionFromSeed(p.NKeySeed)
		if err != nil {
			return nil, fmt.Errorf("reading nkey seed %q: %w", p.NKeySeed, err)
		}
		base = append(base, o)
	}
	if p.TLS != nil {
		tc, err := natsTLSConfig(p.TLS)
		if err != nil {
			return nil, err
		}
		base = append(base, nats.Secure(tc))
	}

	// Nothing is dialed (and no name looked up) before start.
	base = append(base, nats.SetCustomDialer(c), nats.SkipHostLookup())
	url := strings.Join(p.URLs, ",")
	if p.Embedded != nil {
		if _, _, err := natsSplitListen(p.Embedded.Listen); err != nil {
			return nil, fmt.Errorf("embedded nats listen: %w", err)
		}
		base = append(base, nats.InProcessServer(c))
		url = "nats://" + p.Embedded.Listen
	}
	c.urls, c.url, c.base = url, url, base
	nc, err := nats.Connect(url, append(opts, base...)...)
	if err != nil {
		return nil, fmt.Errorf("preparing the nats connection to %s: %w", url, err)
	}
	c.nc = nc
	return c, nil
}

// start starts the embedded server, if any, and lets the client connect,
// waiting for its first attempt as nats.Connect does (an unreachable
// server is retried in the background). Calls after the first return the
// first one's result: the connection is shared across config reloads.
func (c *natsConn) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.startDone {
		return c.startErr
	}
	c.startDone = true
	if c.params.Embedded != nil {
		s, err := startEmbeddedNATS(c.params, c.log.Named("server"))
		if err != nil {
			c.startErr = err
			return err
		}
		c.server.Store(s)
		c.urls = s.ClientURL()
	}
	c.started.Store(true)
	// Connections made before start wait in their backoff: now.
	for _, x := range c.extras {
		if x.Status() == nats.RECONNECTING {
			_ = x.ForceReconnect()
		}
	}
	if err := c.nc.ForceReconnect(); err != nil {
		c.startErr = fmt.Errorf("connecting to nats %s: %w", c.urls, err)
		return c.startErr
	}
	select {
	case <-c.attempt:
	case <-time.After(2 * nats.DefaultTimeout):
	}
	if c.nc.Status() == nats.CONNECTED {
		natsMetrics.connected.Set(1)
	} else {
		c.log.Warn("nats not reachable yet; retrying in the background", zap.String("urls", c.urls))
	}
	return nil
}

func (c *natsConn) describe() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.params.Embedded != nil {
		return "embedded " + c.urls
	}
	return c.urls
}

// Destruct closes the connection and stops the embedded server when the
// last config using them is gone.
func (c *natsConn) Destruct() error {
	if c.nc != nil {
		// Send what is buffered (a last safety message) before closing.
		if c.nc.Status() == nats.CONNECTED {
			_ = c.nc.FlushTimeout(time.Second)
		}
		c.nc.Close()
	}
	c.shutdownServer()
	natsMetrics.connected.Set(0)
	return nil
}

func (c *natsConn) shutdownServer() {
	if s := c.server.Swap(nil); s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

func natsTLSConfig(t *NATSTLS) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // opt-in, documented as test-only
	}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("reading nats tls ca %q: %w", t.CA, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nats tls ca %q holds no PEM certificate", t.CA)
		}
		tc.RootCAs = pool
	}
	if t.Cert != "" || t.Key != "" {
		if t.Cert == "" || t.Key == "" {
			return nil, fmt.Errorf("nats tls needs both cert and key (cert %q, key %q)", t.Cert, t.Key)
		}
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("loading nats tls client certificate %q: %w", t.Cert, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func startEmbeddedNATS(p ConnConfig, log *zap.Logger) (*server.Server, error) {
	e := p.Embedded
	host, port, err := natsSplitListen(e.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats listen: %w", err)
	}
	opts := &server.Options{
		ServerName:    e.ServerName,
		Host:          host,
		Port:          port,
		NoSigs:        true,
		Authorization: p.Token,
		Username:      p.User,
		Password:      p.Password,
		JetStream:     e.JetStream,
		StoreDir:      e.StoreDir,
	}
	if e.JetStream && opts.StoreDir == "" {
		// Caddy's data directory, which outlives a reboot ($XDG_DATA_HOME/caddy,
		// ~/.local/share/caddy): a recording (sdr_recorder) must.
		opts.StoreDir = filepath.Join(caddy.AppDataDir(), "sdr-nats-jetstream")
	}
	for i, r := range e.LeafRemotes {
		var urls []*url.URL
		for _, s := range r.URLs {
			u, err := url.Parse(s)
			if err != nil {
				return nil, fmt.Errorf("embedded nats leaf remote %d url %q: %w", i, s, err)
			}
			urls = append(urls, u)
		}
		opts.LeafNode.Remotes = append(opts.LeafNode.Remotes, &server.RemoteLeafOpts{URLs: urls, Credentials: r.Credentials})
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("creating embedded nats-server on %s: %w", e.Listen, err)
	}
	s.SetLoggerV2(natsServerLogger{log.Sugar()}, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats-server not ready on %s after 10s (is the port in use?)", e.Listen)
	}
	log.Info("embedded nats-server listening", zap.String("addr", s.Addr().String()), zap.Bool("jetstream", e.JetStream))
	return s, nil
}

// natsServerLogger routes the embedded server's log into Caddy's.
type natsServerLogger struct{ l *zap.SugaredLogger }

func (n natsServerLogger) Noticef(format string, v ...any) { n.l.Debugf(format, v...) }
func (n natsServerLogger) Warnf(format string, v ...any)   { n.l.Warnf(format, v...) }
func (n natsServerLogger) Fatalf(format string, v ...any)  { n.l.Errorf(format, v...) }
func (n natsServerLogger) Errorf(format string, v ...any)  { n.l.Errorf(format, v...) }
func (n natsServerLogger) Debugf(format string, v ...any)  { n.l.Debugf(format, v...) }
func (n natsServerLogger) Tracef(format string, v ...any)  {}

func natsStateName(s nats.Status) string {
	switch s {
	case nats.CONNECTED:
		return "connected"
	case nats.CONNECTING:
		return "connecting"
	case nats.RECONNECTING:
		return "reconnecting"
	case nats.DISCONNECTED:
		return "disconnected"
	case nats.CLOSED:
		return "closed"
	case nats.DRAINING_SUBS, nats.DRAINING_PUBS:
		return "draining"
	}
	return strings.ToLower(s.String())
}

// natsGateEntry is one stream's gate, its timer goroutine, its own
// reference to the connection it publishes on, and its subscriptions to the
// motion commands that others publish.
type natsGateEntry struct {
	gate    *gate.Gate
	cancel  context.CancelFunc
	done    chan struct{}
	connKey string
	nc      *nats.Conn
	log     *zap.Logger

	mu        sync.Mutex
	listening bool
	closed    bool
	subs      []*nats.Subscription
}

// natsGateRef is one config's reference to a gate.
type natsGateRef struct {
	key    string
	stream string
	entry  *natsGateEntry
}

func newNATSGate(stream string, cfg gate.Config, connKey string, log *zap.Logger) (*natsGateEntry, error) {
	v, ok, err := natsConns.LoadOrNew(connKey, func() (caddy.Destructor, error) {
		return nil, fmt.Errorf("nats connection gone")
	})
	if err != nil || !ok {
		return nil, fmt.Errorf("gate of stream %q: taking the nats connection: %w", stream, err)
	}
	nc := v.(*natsConn).nc
	log = log.With(zap.String("stream", stream))
	g := gate.New(cfg, func(subject string, payload []byte) error {
		// While disconnected the client buffers this and sends it on
		// reconnect: a late stop is better than none.
		return nc.Publish(subject, payload)
	}, gate.Options{
		OnArmed: func() {
			natsMetrics.gateArmed.WithLabelValues(stream).Set(1)
			log.Info("first video frame: safety gate armed")
		},
		OnTransition: func(from, to gate.Mode, stale time.Duration) {
			natsMetrics.gateMode.WithLabelValues(stream).Set(float64(to))
			natsMetrics.gateTransitions.WithLabelValues(stream, to.String()).Inc()
			if to == gate.Armed {
				log.Info("video back: gate open", zap.String("from", from.String()))
			} else {
				log.Warn("video stale: gate closed", zap.String("mode", to.String()), zap.Duration("stale", stale))
			}
		},
		OnError: func(subject string, err error) {
			log.Error("publishing safety message", zap.String("subject", subject), zap.Error(err))
		},
	})
	natsMetrics.gateMode.WithLabelValues(stream).Set(float64(gate.Armed))
	natsMetrics.gateArmed.WithLabelValues(stream).Set(0)
	ctx, cancel := context.WithCancel(context.Background())
	e := &natsGateEntry{gate: g, cancel: cancel, done: make(chan struct{}), connKey: connKey, nc: nc, log: log}
	go func() {
		defer close(e.done)
		// The gate must keep running: restart its timer after a panic.
		for ctx.Err() == nil {
			func() {
				defer func() {
					if r := recover(); r != nil {
						log.Error("gate timer panicked; restarting it", zap.Any("panic", r))
					}
				}()
				g.Run(ctx)
			}()
		}
	}()
	return e, nil
}

// listen subscribes the gate to command.genesis.<motion action>, so that a
// motion command someone else publishes (a script, another service) while
// there is no video is answered on telemetry.safety.video_gate. It runs
// once per gate, when an app holding it starts: `caddy validate` provisions
// apps but starts none, and must not answer on a live bus.
func (e *natsGateEntry) listen() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.listening || e.closed {
		return
	}
	e.listening = true
	for _, action := range gate.MotionActions() {
		subject := relay.CommandPrefix + action
		sub, err := e.nc.Subscribe(subject, func(m *nats.Msg) { e.gate.Observe(action, m.Data) })
		if err != nil {
			e.log.Error("safety gate not listening for motion commands", zap.String("subject", subject), zap.Error(err))
			continue
		}
		e.subs = append(e.subs, sub)
	}
}

// Destruct stops the gate's timer and subscriptions and gives back its
// connection reference.
func (e *natsGateEntry) Destruct() error {
	e.mu.Lock()
	e.closed = true
	subs := e.subs
	e.subs = nil
	e.mu.Unlock()
	for _, sub := range subs {
		_ = sub.Unsubscribe()
	}
	e.cancel()
	<-e.done
	_, err := natsConns.Delete(e.connKey)
	return err
}

// natsLeaseEntry is one stream's control lease and its own reference to the
// connection it publishes its state on.
type natsLeaseEntry struct {
	lease   *lease.Lease
	connKey string
}

// natsLeaseRef is one config's reference to a lease.
type natsLeaseRef struct {
	key    string
	stream string
	entry  *natsLeaseEntry
}

func newNATSLease(cfg lease.Config, connKey string, log *slog.Logger) (*natsLeaseEntry, error) {
	v, ok, err := natsConns.LoadOrNew(connKey, func() (caddy.Destructor, error) {
		return nil, fmt.Errorf("nats connection gone")
	})
	if err != nil || !ok {
		return nil, fmt.Errorf("control lease of stream %q: taking the nats connection: %w", cfg.Stream, err)
	}
	nc := v.(*natsConn).nc
	labels := prometheus.Labels{"stream": cfg.Stream}
	l, err := lease.New(cfg, nc.Publish, log, &lease.Metrics{
		Held:     natsMetrics.leaseHeld.With(labels),
		Takes:    natsMetrics.leaseTakes.MustCurryWith(labels),
		Releases: natsMetrics.leaseReleases.MustCurryWith(labels),
		Refused:  natsMetrics.leaseRefused.With(labels),
	})
	if err != nil {
		_, _ = natsConns.Delete(connKey)
		return nil, err
	}
	return &natsLeaseEntry{lease: l, connKey: connKey}, nil
}

// Destruct ends the lease (its holder loses control, silently) and gives
// back its connection reference.
func (e *natsLeaseEntry) Destruct() error {
	e.lease.Close()
	_, err := natsConns.Delete(e.connKey)
	return err
}
