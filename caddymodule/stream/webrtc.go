package stream

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap/exp/zapslog"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/rtc"
)

// RTCConfig is the WebRTC setup of a stream: used by the sdr_whep handler
// and by sdr_stream's `webrtc` block (which answers the browser's 0x03
// offers on /stream/ws).
type RTCConfig struct {
	// ICEServers are the STUN and TURN servers given to the ICE agent.
	// Default: none (host candidates only).
	ICEServers []RTCICEServer `json:"ice_servers,omitempty"`

	// UDPPortMin and UDPPortMax bound the UDP ports of the sessions (one
	// port per session). Default: any port.
	UDPPortMin int `json:"udp_port_min,omitempty"`
	UDPPortMax int `json:"udp_port_max,omitempty"`

	// NAT1To1IPs are the public addresses announced in place of the
	// host's own: a server behind a 1:1 NAT, or a container whose UDP
	// port is published. Default: none.
	NAT1To1IPs []string `json:"nat_1to1_ips,omitempty"`

	// UDPMux carries every session over one UDP socket at this address
	// ([host]:port; single-port mode, for containers). Default: off.
	UDPMux string `json:"udp_mux,omitempty"`

	// IncludeLoopback announces loopback candidates too (a player on the
	// same host, tests). Default: false.
	IncludeLoopback bool `json:"include_loopback,omitempty"`

	// MaxSessions refuses sessions beyond this many on the handler.
	// Default: 0, no limit.
	MaxSessions int `json:"max_sessions,omitempty"`

	// ControlRate is the most `control` DataChannel messages per second
	// and session. Default: 60.
	ControlRate float64 `json:"control_rate,omitempty"`

	// CommandRate is the most `commands` DataChannel messages per second
	// and session. Default: 10.
	CommandRate float64 `json:"command_rate,omitempty"`
}

// RTCICEServer is one STUN or TURN server.
type RTCICEServer struct {
	// URLs of the server (stun:host:port, turn:host:port?transport=udp).
	URLs []string `json:"urls"`
	// Username and Credential of a TURN server.
	Username   string `json:"username,omitempty"`
	Credential string `json:"credential,omitempty"`
}

// Validate checks the configuration.
func (c *RTCConfig) Validate() error {
	for _, p := range []struct {
		what string
		v    int
	}{{"udp_port_min", c.UDPPortMin}, {"udp_port_max", c.UDPPortMax}} {
		if p.v < 0 || p.v > 65535 {
			return fmt.Errorf("webrtc %s %d: want 0 to 65535", p.what, p.v)
		}
	}
	if (c.UDPPortMin == 0) != (c.UDPPortMax == 0) || c.UDPPortMin > c.UDPPortMax {
		return fmt.Errorf("webrtc udp ports %d-%d: want both set, min <= max", c.UDPPortMin, c.UDPPortMax)
	}
	if c.UDPMux != "" {
		if _, _, err := rtcSplitMux(c.UDPMux); err != nil {
			return err
		}
	}
	for _, ip := range c.NAT1To1IPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("webrtc nat_1to1_ips: %q is not an IP address", ip)
		}
	}
	for i, s := range c.ICEServers {
		if len(s.URLs) == 0 {
			return fmt.Errorf("webrtc ice server %d has no urls", i)
		}
	}
	if c.MaxSessions < 0 || c.ControlRate < 0 || c.CommandRate < 0 {
		return errors.New("webrtc max_sessions, control_rate and command_rate must not be negative")
	}
	return nil
}

func rtcSplitMux(s string) (string, int, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("webrtc udp_mux %q: want [host]:port: %w", s, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", 0, fmt.Errorf("webrtc udp_mux %q: port must be 1 to 65535", s)
	}
	return host, n, nil
}

// rtcEngines holds one engine per WebRTC setup in the process, shared by
// every handler with that setup and kept across config reloads: the
// single-port socket stays bound while the new config takes over.
var rtcEngines = caddy.NewUsagePool()

type rtcEngineShare struct{ *rtc.Engine }

func (e rtcEngineShare) Destruct() error { return e.Close() }

// engineKey names an engine by every field that changes its construction.
func (c *RTCConfig) engineKey() string {
	k := struct {
		ICE      []RTCICEServer
		Min, Max int
		NAT      []string
		Mux      string
		Loopback bool
	}{c.ICEServers, c.UDPPortMin, c.UDPPortMax, c.NAT1To1IPs, c.UDPMux, c.IncludeLoopback}
	b, _ := json.Marshal(k)
	return string(b)
}

// takeEngine returns the shared engine of this setup; give it back with
// rtcEngines.Delete(key).
func (c *RTCConfig) takeEngine() (*rtc.Engine, string, error) {
	key := c.engineKey()
	v, _, err := rtcEngines.LoadOrNew(key, func() (caddy.Destructor, error) {
		cfg := rtc.Config{
			UDPPortMin:      uint16(c.UDPPortMin),
			UDPPortMax:      uint16(c.UDPPortMax),
			NAT1To1IPs:      c.NAT1To1IPs,
			IncludeLoopback: c.IncludeLoopback,
			// The engine outlives this config: log through the process logger.
			Logger: slog.New(zapslog.NewHandler(caddy.Log().Named("sdr_webrtc").Core())),
		}
		if c.UDPMux != "" {
			host, port, err := rtcSplitMux(c.UDPMux)
			if err != nil {
				return nil, err
			}
			cfg.UDPMuxAddress, cfg.UDPMuxPort = host, port
		}
		for _, s := range c.ICEServers {
			cfg.ICEServers = append(cfg.ICEServers, rtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
		}
		e, err := rtc.NewEngine(cfg)
		if err != nil {
			return nil, err
		}
		return rtcEngineShare{e}, nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("webrtc engine: %w", err)
	}
	return v.(rtcEngineShare).Engine, key, nil
}

// rtcBus finds the sdr_nats app's safety gate of the stream and a publish
// function on its connection. Without sdr_nats both are nil: DataChannel
// messages are then counted "unavailable" and dropped.
func rtcBus(ctx caddy.Context, stream string) (frame.MotionGate, func(string, []byte) error, error) {
	app, err := ctx.AppIfConfigured("sdr_nats")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("loading the sdr_nats app: %w", err)
	}
	gates, ok := app.(frame.Gates)
	if !ok {
		return nil, nil, fmt.Errorf("the sdr_nats app (%T) offers no safety gates", app)
	}
	g, err := gates.Gate(stream)
	if err != nil {
		return nil, nil, fmt.Errorf("safety gate of stream %q: %w", stream, err)
	}
	conn, ok := app.(interface{ Conn() *nats.Conn })
	if !ok {
		return nil, nil, fmt.Errorf("the sdr_nats app (%T) offers no connection", app)
	}
	nc := conn.Conn()
	if nc == nil {
		return nil, nil, errors.New("the sdr_nats app has no connection")
	}
	return g, nc.Publish, nil
}

// limits maps the rates onto the session's.
func (c *RTCConfig) limits() rtc.Limits {
	return rtc.Limits{ControlRate: c.ControlRate, CommandRate: c.CommandRate}
}
