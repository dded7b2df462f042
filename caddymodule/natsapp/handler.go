package natsapp

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrcaddyfile"
	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/gate"
	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/origin"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

func init() {
	caddy.RegisterModule(new(NATSHandler))
	httpcaddyfile.RegisterHandlerDirective("sdr_nats", sdrcaddyfile.ParseHandler[NATSHandler])
	httpcaddyfile.RegisterDirectiveOrder("sdr_nats", httpcaddyfile.Before, "reverse_proxy")
}

// NATSHandler is `http.handlers.sdr_nats`: the telemetry relay and command
// path of /stream/ws on a WebSocket route of its own, without video, for
// dashboards and second operators. Telemetry arrives as 0x02 messages;
// 0x04 commands go to NATS through the same checks, rate limit and safety
// gate as on /stream/ws. Requests that are not WebSocket upgrades pass to
// the next handler.
type NATSHandler struct {
	// Stream names the stream whose safety gate filters motion commands.
	// Default "default".
	Stream string `json:"stream,omitempty"`
	// Origins are the browser origins (scheme://host[:port], "*"
	// wildcards allowed; "*" alone: any) trusted to send commands besides
	// the page's own host on any port, the host a proxy names in
	// X-Forwarded-Host, loopback origins and clients that send no Origin
	// (SDR_ALLOWED_ORIGINS). Every origin may connect and read telemetry;
	// a connection from another origin has each command answered
	// `rejected` ("origin ... not allowed").
	Origins []string `json:"origins,omitempty"`
	// Hosts are the names (host names, "*" wildcards; "*" alone: any)
	// that a browser's Host header may carry for its commands to be taken,
	// besides IP addresses, localhost, single-label names and *.local,
	// *.ts.net, *.lan, *.home.arpa and *.internal names
	// (SDR_ALLOWED_HOSTS): the DNS rebinding guard. A browser connection
	// with another Host has each command answered `rejected` ("host ...
	// not allowed").
	Hosts []string `json:"hosts,omitempty"`
	// SendBuffer is how many messages may wait for one slow client before
	// telemetry for it is dropped. Default 256.
	SendBuffer int `json:"send_buffer,omitempty"`
	// WriteTimeout bounds each write to a client. Default 10s.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`
	// ClientLimits bound the frames a client sends and set the pings that
	// find dead peers.
	sdrcaddyfile.ClientLimits

	app      *NATSApp
	gate     *gate.Gate
	lease    *lease.Lease // nil: the control lease is off
	log      *zap.Logger
	upgrader websocket.Upgrader
	origins  *origin.Policy
	recorder frame.Recorder // the sdr_recorder app; nil when not configured

	mu      sync.Mutex
	conns   map[*websocket.Conn]struct{}
	closing bool
	wg      sync.WaitGroup
}

// natsMaxCommand bounds one client message: a 0x04 command is small JSON.
const natsMaxCommand = 64 << 10

// natsPingInterval is the default ping_interval.
const natsPingInterval = 20 * time.Second

// CaddyModule returns the Caddy module information.
func (*NATSHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sdr_nats",
		New: func() caddy.Module { return new(NATSHandler) },
	}
}

// Provision finds the sdr_nats app and the stream's gate. Without the
// sdr_nats global option the app is loaded with its defaults (the embedded
// server on 127.0.0.1:4222).
func (h *NATSHandler) Provision(ctx caddy.Context) error {
	h.log = ctx.Logger()
	h.conns = map[*websocket.Conn]struct{}{}
	if h.Stream == "" {
		h.Stream = "default"
	}
	if h.SendBuffer <= 0 {
		h.SendBuffer = 256
	}
	if h.WriteTimeout <= 0 {
		h.WriteTimeout = caddy.Duration(10 * time.Second)
	}
	if err := h.Validate(); err != nil {
		return err
	}
	origins, err := origin.NewPolicy(h.Origins, h.Hosts...)
	if err != nil {
		return fmt.Errorf("sdr_nats handler: %w", err)
	}
	h.origins = origins
	appIface, err := ctx.AppIfConfigured("sdr_nats")
	if errors.Is(err, caddy.ErrNotConfigured) {
		appIface, err = ctx.App("sdr_nats")
	}
	if err != nil {
		return fmt.Errorf("sdr_nats handler: getting the sdr_nats app: %w", err)
	}
	app, ok := appIface.(*NATSApp)
	if !ok {
		return fmt.Errorf("sdr_nats handler: app sdr_nats is %T, not *NATSApp", appIface)
	}
	h.app = app
	h.gate, err = app.gate(h.Stream)
	if err != nil {
		return err
	}
	if h.lease, err = app.lease(h.Stream); err != nil {
		return err
	}
	if rec, err := ctx.AppIfConfigured("sdr_recorder"); err == nil {
		if r, ok := rec.(frame.Recorder); ok {
			h.recorder = r
		}
	} else if !errors.Is(err, caddy.ErrNotConfigured) {
		return fmt.Errorf("sdr_nats handler: loading the sdr_recorder app: %w", err)
	}
	h.upgrader = websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 16 << 10,
		// Every origin may connect; commands are judged (h.origins).
		CheckOrigin: wire.AnyOrigin,
	}
	return nil
}

// Validate checks the configuration.
func (h *NATSHandler) Validate() error {
	for _, o := range h.Origins {
		if err := origin.Validate(o); err != nil {
			return fmt.Errorf("sdr_nats handler: %w", err)
		}
	}
	for _, o := range h.Hosts {
		if err := origin.ValidateHost(o); err != nil {
			return fmt.Errorf("sdr_nats handler: %w", err)
		}
	}
	if err := h.ClientLimits.ValidateLimits(); err != nil {
		return fmt.Errorf("sdr_nats handler: %w", err)
	}
	return nil
}

// Cleanup closes the WebSocket connections this handler still holds.
func (h *NATSHandler) Cleanup() error {
	h.mu.Lock()
	h.closing = true
	conns := make([]*websocket.Conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		_ = c.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "server reloading"),
			time.Now().Add(time.Second))
		_ = c.Close()
	}
	h.wg.Wait()
	return nil
}

// ServeHTTP upgrades to WebSocket and relays until the client goes away.
func (h *NATSHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !websocket.IsWebSocketUpgrade(r) {
		return next.ServeHTTP(w, r)
	}
	if err := h.app.starter.Wait(r.Context()); err != nil {
		return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("sdr_nats handler: not started: %w", err))
	}
	h.mu.Lock()
	closing := h.closing
	h.mu.Unlock()
	if closing {
		return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("sdr_nats handler is shutting down"))
	}
	trust := h.origins.Judge(r)
	guard := wire.NewFrameGuard(h.FrameLimits())
	conn, err := h.upgrader.Upgrade(wire.Hijackable(w, guard), r, nil)
	if err != nil {
		// The upgrader has answered the client already.
		if ce := h.log.Check(zap.DebugLevel, "websocket upgrade failed"); ce != nil {
			ce.Write(zap.Error(err))
		}
		return nil
	}
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		_ = conn.Close()
		return nil
	}
	h.conns[conn] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	natsMetrics.wsClients.Inc()
	defer func() {
		natsMetrics.wsClients.Dec()
		h.mu.Lock()
		delete(h.conns, conn)
		h.mu.Unlock()
		h.wg.Done()
	}()
	h.serveClient(conn, trust, guard)
	return nil
}

// serveClient runs one client: telemetry into a bounded queue drained by a
// writer goroutine, commands from the read loop, answered to this client
// alone (all refused when its connection got an untrusted verdict). The
// writer pings, and closes a client that sent nothing since the previous
// ping; guard closes one over its frame limits. With the control lease on,
// the client has its own place in it, released when it leaves, and learns
// the lease's state first.
func (h *NATSHandler) serveClient(conn *websocket.Conn, trust origin.Verdict, guard *wire.FrameGuard) {
	defer conn.Close()
	rl := h.app.Relay()
	var control *lease.Conn
	if h.lease != nil {
		control = h.lease.Conn()
		defer control.Close()
	}
	session := rl.Session(h.gate, h.gate.CodecChanging, trust).WithControl(control)
	out := make(chan []byte, h.SendBuffer)
	replies := make(chan []byte, 16)
	if w := control.Welcome(); w != nil {
		replies <- w
	}
	done := make(chan struct{})
	cancel := rl.SubscribeTelemetry(func(m []byte) {
		select {
		case out <- m:
		default:
			natsMetrics.wsDropped.Inc()
		}
	})
	defer cancel()

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		defer conn.Close() // unblocks the reader when a write fails
		var (
			pings  <-chan time.Time
			pinged time.Time
		)
		every := h.PingEvery()
		if every == 0 {
			every = natsPingInterval
		}
		if every > 0 {
			ping := time.NewTicker(every)
			defer ping.Stop()
			pings = ping.C
		}
		wt := time.Duration(h.WriteTimeout)
		for {
			var m []byte
			select {
			case <-done:
				return
			case m = <-replies:
			case m = <-out:
			case now := <-pings:
				if !pinged.IsZero() && guard.SilentSince(pinged) {
					natsMetrics.wsCloses.WithLabelValues("ping_timeout").Inc()
					_ = conn.WriteControl(websocket.CloseMessage,
						websocket.FormatCloseMessage(websocket.CloseGoingAway, fmt.Sprintf("no pong or message for %s", now.Sub(pinged).Round(time.Millisecond))),
						time.Now().Add(time.Second))
					return
				}
				pinged = now
				if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(wt)); err != nil {
					return
				}
				continue
			}
			_ = conn.SetWriteDeadline(time.Now().Add(wt))
			if err := conn.WriteMessage(websocket.BinaryMessage, m); err != nil {
				return
			}
		}
	}()
	defer func() {
		close(done)
		<-writerDone
	}()

	conn.SetReadLimit(natsMaxCommand)
	for {
		typ, msg, err := conn.ReadMessage()
		if err != nil {
			var le *wire.LimitError
			if errors.As(err, &le) {
				natsMetrics.wsCloses.WithLabelValues(le.Reason).Inc()
				_ = conn.WriteControl(websocket.CloseMessage,
					websocket.FormatCloseMessage(int(le.Code), le.Reason), time.Now().Add(time.Second))
			}
			return
		}
		if typ != websocket.BinaryMessage || len(msg) == 0 || msg[0] != wire.TypeCommand {
			continue // only 0x04 is for us; signaling has no peer here
		}
		reply := session.Command(msg[1:])
		if h.recorder != nil {
			h.recorder.RecordCommand(h.Stream, conn.RemoteAddr().String(), msg[1:], reply)
		}
		if reply != nil {
			select {
			case replies <- reply:
			default:
				// A client that floods commands faster than it reads its
				// acks loses acks, not the connection.
			}
		}
	}
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	sdr_nats [<matcher>] {
//	    stream <name>              # whose safety gate applies; default "default"
//	    origins [<origin...>|*]   # trusted to command; none: own host and loopback
//	    hosts [<host...>|*]       # Host names trusted to command besides IPs and LAN names
//	    send_buffer <messages>
//	    write_timeout <duration>
//	    max_fragments <n>
//	    frame_rate <frames-per-second>|off [<burst>]
//	    ping_interval <duration>|off
//	}
func (h *NATSHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	return sdrcaddyfile.EachSubdirective(d, "subdirective", func(key string) error {
		var err error
		switch key {
		case "stream":
			h.Stream, err = sdrcaddyfile.ReadArgs(d).One()
		case "origins":
			// No value (an empty {$SDR_ALLOWED_ORIGINS}): none listed.
			h.Origins = natsSplitArgs(d.RemainingArgs())
			for _, o := range h.Origins {
				if err := origin.Validate(o); err != nil {
					return d.Err(err.Error())
				}
			}
		case "hosts":
			h.Hosts, err = sdrcaddyfile.ParseHosts(d, natsSplitArgs(d.RemainingArgs()))
		case "send_buffer":
			h.SendBuffer, err = sdrcaddyfile.ReadArgs(d).PositiveInt()
		case "write_timeout":
			var s string
			if s, err = sdrcaddyfile.ReadArgs(d).One(); err == nil {
				v, perr := caddy.ParseDuration(s)
				if perr != nil || v <= 0 {
					return d.Errf("write_timeout: %q is not a positive duration", s)
				}
				h.WriteTimeout = caddy.Duration(v)
			}
		case "max_fragments", "frame_rate", "ping_interval":
			_, err = h.UnmarshalLimit(sdrcaddyfile.ReadArgs(d))
		default:
			return d.Errf("unknown subdirective %q", key)
		}
		return err
	})
}

// Interface guards.
var (
	_ caddyhttp.MiddlewareHandler = (*NATSHandler)(nil)
	_ caddy.Provisioner           = (*NATSHandler)(nil)
	_ caddy.Validator             = (*NATSHandler)(nil)
	_ caddy.CleanerUpper          = (*NATSHandler)(nil)
	_ caddyfile.Unmarshaler       = (*NATSHandler)(nil)
)
