// Package rtc answers WebRTC offers for one stream with pion/webrtc: an
// H.264 video track fed from the stream's frame.Source (the same
// subscription point the WebSocket hub uses, so the ring is read once),
// and the browser's two DataChannels, `control` (gamepad) and `commands`
// (JSON), published to NATS through the stream's safety gate.
//
// The package imports nothing from Caddy. An Engine holds the process-wide
// WebRTC settings (ICE servers, UDP port range, NAT 1:1 addresses, a
// single-port UDP mux); a Session is one peer connection. Signaling is the
// caller's: WHEP (one offer, one answer with every candidate) or the 0x03
// messages of /stream/ws (Signal), with trickled candidates.
package rtc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"

	"github.com/sdr-os/sdr-caddy/internal/origin"
)

// Config is the WebRTC setup shared by every session of an Engine.
type Config struct {
	// ICEServers are the STUN and TURN servers offered to the ICE agent.
	ICEServers []ICEServer
	// UDPPortMin and UDPPortMax bound the ports of the per-session UDP
	// sockets; both zero: any port. Ignored with UDPMuxPort.
	UDPPortMin, UDPPortMax uint16
	// NAT1To1IPs are the public addresses announced instead of the host's
	// own (a server behind a 1:1 NAT, or a container with published ports).
	NAT1To1IPs []string
	// UDPMuxPort, when not zero, carries every session over this one UDP
	// port (single-port mode, for containers).
	UDPMuxPort int
	// UDPMuxAddress is the address the single port binds; default all
	// addresses.
	UDPMuxAddress string
	// IncludeLoopback announces loopback candidates too (tests, and a
	// player on the same host).
	IncludeLoopback bool
	// Logger receives the engine's logs; nil discards them.
	Logger *slog.Logger
}

// ICEServer is one STUN or TURN server.
type ICEServer struct {
	URLs       []string
	Username   string
	Credential string
}

// Engine builds sessions with one WebRTC configuration. It is safe for
// concurrent use; Close releases the single-port socket.
type Engine struct {
	api     *webrtc.API
	servers []webrtc.ICEServer
	log     *slog.Logger
	// refusals logs the first refused DataChannel message of each
	// untrusted origin.
	refusals *origin.RefusalLog

	mu      sync.Mutex
	udpConn net.PacketConn
	closed  bool
}

// NewEngine checks cfg and builds an engine; in single-port mode it binds
// the UDP port now.
func NewEngine(cfg Config) (*Engine, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("registering codecs: %w", err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		return nil, fmt.Errorf("registering interceptors: %w", err)
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(cfg.IncludeLoopback)
	if len(cfg.NAT1To1IPs) > 0 {
		for _, ip := range cfg.NAT1To1IPs {
			if net.ParseIP(ip) == nil {
				return nil, fmt.Errorf("nat 1:1 address %q is not an IP address", ip)
			}
		}
		err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        cfg.NAT1To1IPs,
			AsCandidateType: webrtc.ICECandidateTypeHost,
		})
		if err != nil {
			return nil, fmt.Errorf("nat 1:1 addresses %v: %w", cfg.NAT1To1IPs, err)
		}
	}
	e := &Engine{log: log, refusals: origin.NewRefusalLog(log)}
	switch {
	case cfg.UDPMuxPort != 0:
		if cfg.UDPMuxPort < 0 || cfg.UDPMuxPort > 65535 {
			return nil, fmt.Errorf("udp mux port %d out of range", cfg.UDPMuxPort)
		}
		addr := net.JoinHostPort(cfg.UDPMuxAddress, strconv.Itoa(cfg.UDPMuxPort))
		conn, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("binding udp mux %s: %w", addr, err)
		}
		e.udpConn = conn
		se.SetICEUDPMux(webrtc.NewICEUDPMux(nil, conn))
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	case cfg.UDPPortMin != 0 || cfg.UDPPortMax != 0:
		if err := se.SetEphemeralUDPPortRange(cfg.UDPPortMin, cfg.UDPPortMax); err != nil {
			return nil, fmt.Errorf("udp port range %d-%d: %w", cfg.UDPPortMin, cfg.UDPPortMax, err)
		}
	}
	for _, s := range cfg.ICEServers {
		if len(s.URLs) == 0 {
			e.Close()
			return nil, errors.New("ice server without urls")
		}
		e.servers = append(e.servers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	e.api = webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	return e, nil
}

// Close releases the single-port socket. Sessions still open lose their
// transport.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	if e.udpConn != nil {
		if err := e.udpConn.Close(); err != nil {
			return fmt.Errorf("closing udp mux: %w", err)
		}
	}
	return nil
}
