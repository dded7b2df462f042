package rtc

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"

	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/strictjson"
)

// The browser's DataChannels and where their messages go.
const (
	ChannelControl  = "control"
	ChannelCommands = "commands"

	SubjectGamepad  = "control.gamepad"
	SubjectCommands = "control.commands"

	// MaxControlMessage and MaxCommandMessage are the largest messages
	// taken on each channel.
	MaxControlMessage = 256
	MaxCommandMessage = 1024

	// gamepadAction is the action a gamepad message counts as at the
	// safety gate: it steers the robot.
	gamepadAction = "set_cmd_vel"
)

// Limits are the per-session message rates of the DataChannels.
type Limits struct {
	// ControlRate is the most `control` messages per second. Default: 60.
	ControlRate float64
	// CommandRate is the most `commands` messages per second. Default: 10.
	CommandRate float64
}

func (l *Limits) fill() {
	if l.ControlRate <= 0 {
		l.ControlRate = 60
	}
	if l.CommandRate <= 0 {
		l.CommandRate = 10
	}
}

// limiter allows rate messages per second with a burst of a fifth of a
// second's worth (at least one), so that a steady sender's jitter passes
// and a flood does not.
func limiter(perSecond float64) *rate.Limiter {
	burst := int(perSecond / 5)
	if burst < 1 {
		burst = 1
	}
	return rate.NewLimiter(rate.Limit(perSecond), burst)
}

// ParseGamepad checks a `control` message: [u8 axis_count][f32 LE axes...]
// [u32 LE buttons], at most MaxControlMessage bytes, finite axes. It
// returns the axes and buttons.
func ParseGamepad(msg []byte) (axes []float32, buttons uint32, err error) {
	if len(msg) > MaxControlMessage {
		return nil, 0, fmt.Errorf("gamepad message of %d bytes, over %d", len(msg), MaxControlMessage)
	}
	if len(msg) < 5 {
		return nil, 0, fmt.Errorf("gamepad message of %d bytes, under 5", len(msg))
	}
	n := int(msg[0])
	if want := 1 + 4*n + 4; len(msg) != want {
		return nil, 0, fmt.Errorf("gamepad message of %d bytes with %d axes, want %d bytes", len(msg), n, want)
	}
	axes = make([]float32, n)
	for i := range axes {
		v := math.Float32frombits(binary.LittleEndian.Uint32(msg[1+4*i:]))
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, 0, fmt.Errorf("gamepad axis %d is %v", i, v)
		}
		axes[i] = v
	}
	return axes, binary.LittleEndian.Uint32(msg[1+4*n:]), nil
}

// ParseCommand checks a `commands` message: a JSON object of at most
// MaxCommandMessage bytes that passes strictjson.Check (no duplicate keys
// or keys equal but for case, valid UTF-8, at most 32 deep), whose
// "action", when present, is a string. It returns the action, read by its
// exact name. A strict check failure is returned as a *strictjson.Error.
func ParseCommand(msg []byte) (action string, err error) {
	if len(msg) > MaxCommandMessage {
		return "", fmt.Errorf("command of %d bytes, over %d", len(msg), MaxCommandMessage)
	}
	if err := strictjson.Check(msg); err != nil {
		return "", fmt.Errorf("command refused: %w", err)
	}
	var cmd map[string]json.RawMessage
	if err := json.Unmarshal(msg, &cmd); err != nil {
		return "", fmt.Errorf("command is not a JSON object: %w", err)
	}
	if raw, ok := cmd["action"]; ok {
		if err := json.Unmarshal(raw, &action); err != nil {
			return "", fmt.Errorf("command action %s is not a string", raw)
		}
	}
	return action, nil
}

// commandRefusal is the result counted for a `commands` message
// ParseCommand refused: the strict check's reason (duplicate_key,
// invalid_utf8, too_deep), else malformed.
func commandRefusal(err error) string {
	var e *strictjson.Error
	if errors.As(err, &e) && e.Reason != strictjson.ReasonSyntax {
		return e.Reason
	}
	return "malformed"
}

// dataChannel takes a DataChannel the browser opened.
func (s *Session) dataChannel(dc *webrtc.DataChannel) {
	label := dc.Label()
	var handle func(msg webrtc.DataChannelMessage) string
	switch label {
	case ChannelControl:
		lim := limiter(s.cfg.Limits.ControlRate)
		handle = func(msg webrtc.DataChannelMessage) string {
			if msg.IsString {
				return "malformed"
			}
			if _, _, err := ParseGamepad(msg.Data); err != nil {
				return "malformed"
			}
			result, _ := s.forward(lim, gamepadAction, SubjectGamepad, msg.Data)
			return result
		}
	case ChannelCommands:
		lim := limiter(s.cfg.Limits.CommandRate)
		handle = func(msg webrtc.DataChannelMessage) string {
			result, detail := s.command(lim, msg.Data)
			if on := s.cfg.OnCommand; on != nil {
				// After the command went (or did not): the judgement is
				// made and the publish done, so nothing waits on this.
				on(msg.Data, result, detail)
			}
			return result
		}
	default:
		s.m.Messages.WithLabelValues("other", "refused").Inc()
		s.log.Debug("closing unknown datachannel", "label", label)
		_ = dc.Close()
		return
	}
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		defer s.recoverLog("datachannel " + label)
		result := handle(msg)
		s.m.Messages.WithLabelValues(label, result).Inc()
	})
}

// untrusted reports whether the session's connection is not trusted to
// command, and then notes the refusal of what in the engine's log, which
// names the rule that refused it (the Origin or the Host).
func (s *Session) untrusted(what string) bool {
	v := s.cfg.Verdict
	if v == nil || v.Trusted {
		return false
	}
	s.refusals.Refused(*v, what)
	return true
}

// command judges one `commands` message and publishes it when it passes;
// it returns the result counted and, when it was not published, why (as
// the /stream/ws command path's ack would say).
func (s *Session) command(lim *rate.Limiter, data []byte) (result, detail string) {
	action, err := ParseCommand(data)
	if err != nil {
		return commandRefusal(err), err.Error()
	}
	if action == actionKeep {
		return "refused", keepRefusal
	}
	if c := s.cfg.Control; c != nil && (action == lease.ActionTake || action == lease.ActionRelease) {
		return s.control(lim, c, action)
	}
	return s.forward(lim, action, SubjectCommands, data)
}

// actionKeep is the flight recorder's keep (docs/recorder.md), which only
// the /stream/ws command path takes; on a DataChannel it is refused, never
// published on control.commands, with the detail /nats/ws answers it with.
const (
	actionKeep  = "keep"
	keepRefusal = "keep needs the sdr_recorder app and a /stream/ws connection"
)

// forward publishes one checked message after the connection's verdict,
// the rate limit and the gate; it returns the result counted and, when
// the message was not published, why.
func (s *Session) forward(lim *rate.Limiter, action, subject string, data []byte) (result, detail string) {
	if s.untrusted("datachannel " + subject) {
		return "origin", s.cfg.Verdict.Refusal()
	}
	if !lim.Allow() {
		return "rate_limited", fmt.Sprintf("rate limit of %g messages/s exceeded", float64(lim.Limit()))
	}
	if !s.cfg.Control.Allow(action) {
		return "not_controller", lease.NotController
	}
	if s.cfg.Gate != nil {
		if ok, mode := s.cfg.Gate.Allow(action); !ok {
			return "gated", "video stale: safety gate " + mode
		}
	}
	if s.cfg.Publish == nil {
		return "unavailable", "no NATS connection"
	}
	// pion reuses nothing of msg.Data after the callback, but the
	// publisher may queue it: hand over a copy.
	if err := s.cfg.Publish(subject, append([]byte(nil), data...)); err != nil {
		s.log.Debug("publishing datachannel message", "subject", subject, "error", err)
		return "error", "publishing: " + err.Error()
	}
	return "published", ""
}

// control answers take_control and release_control on the commands
// channel with the session's place in the control lease: never published,
// counted control_taken, control_released or not_controller (a take refused
// while another connection holds control, or a release of control not
// held), with the detail the /stream/ws ack would give. The state message
// on telemetry.control.lease tells everyone.
func (s *Session) control(lim *rate.Limiter, c *lease.Conn, action string) (result, detail string) {
	if s.untrusted("datachannel " + action) {
		return "origin", s.cfg.Verdict.Refusal()
	}
	if !lim.Allow() {
		return "rate_limited", fmt.Sprintf("rate limit of %g messages/s exceeded", float64(lim.Limit()))
	}
	if action == lease.ActionTake {
		ok, holder := c.Take()
		switch {
		case ok:
			return "control_taken", "you have control"
		case holder == "":
			return "not_controller", "control lease closed"
		}
		return "not_controller", "control held by " + holder
	}
	if c.Release() {
		return "control_released", "control released"
	}
	return "not_controller", lease.NotController
}
