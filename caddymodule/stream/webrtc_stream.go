package stream

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/origin"
	"github.com/sdr-os/sdr-caddy/internal/rtc"
)

// streamRTC is the WebRTC side of an sdr_stream handler with a webrtc
// block: it answers each WebSocket client's 0x03 offer with a session fed
// from the handler's own source, keyframe requests coalesced by its hub.
type streamRTC struct {
	engine *rtc.Engine
	key    string
	base   rtc.SessionConfig
}

// provisionRTC takes the shared WebRTC engine and the stream's gate and
// NATS connection; it runs after the hub and the bus are set up.
func (s *Stream) provisionRTC(ctx caddy.Context) error {
	if s.WebRTC == nil {
		return nil
	}
	if err := s.WebRTC.Validate(); err != nil {
		return fmt.Errorf("sdr_stream %s: %w", s.name, err)
	}
	if s.WebRTC.MaxSessions != 0 {
		return fmt.Errorf("sdr_stream %s: webrtc max_sessions applies to sdr_whep; max_clients bounds the sessions of sdr_stream (one per WebSocket)", s.name)
	}
	gate, publish, err := rtcBus(ctx, s.name)
	if err != nil {
		return fmt.Errorf("sdr_stream %s: webrtc: %w", s.name, err)
	}
	eng, key, err := s.WebRTC.takeEngine()
	if err != nil {
		return fmt.Errorf("sdr_stream %s: %w", s.name, err)
	}
	s.rtc = &streamRTC{engine: eng, key: key, base: rtc.SessionConfig{
		Source:    s.source.src,
		Keyframes: s.hub,
		Gate:      gate,
		Publish:   publish,
		Limits:    s.WebRTC.limits(),
		Metrics:   registerRTCMetrics(ctx.GetMetricsRegistry(), s.log).forStream(s.name),
		Logger:    ctx.Slogger().With("stream", s.name),
	}}
	return nil
}

// rtcSignal returns the 0x03 signaling of one WebSocket client, or nil when
// the stream has no webrtc block. trust is the verdict on the client's
// Origin and Host: an untrusted client's DataChannel messages are refused. control
// is the client's place in the control lease (nil: none): its
// DataChannels drive only while it holds control. send queues a message
// for that client.
func (s *Stream) rtcSignal(trust origin.Verdict, control *lease.Conn, send func([]byte) bool) *rtc.Signal {
	if s.rtc == nil {
		return nil
	}
	base := s.rtc.base
	base.Verdict = &trust
	base.Control = control
	return s.rtc.engine.NewSignal(base, send)
}

// cleanupRTC gives the engine back; the sessions have ended with their
// WebSockets.
func (s *Stream) cleanupRTC() error {
	if s.rtc == nil {
		return nil
	}
	if _, err := rtcEngines.Delete(s.rtc.key); err != nil {
		return fmt.Errorf("sdr_stream %s: releasing webrtc engine: %w", s.name, err)
	}
	s.rtc = nil
	return nil
}
