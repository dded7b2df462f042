// Package frame defines what moves between the parts of sdr-caddy: a Frame as
// read from a ring (or produced by the encoder, or received over NATS), and the
// small interfaces through which sources, the stream hub, the NATS relay and
// the safety gate meet without importing each other or Caddy. The frame
// itself (Frame, its Header and Codec, Source, KeyframeRequester) is defined
// by the public package github.com/sdr-os/sdr-caddy/frame; this package
// names Frame, Source and KeyframeRequester again and adds what stays inside
// sdr-caddy (breaks, the NATS bus and relay, the safety gate, the lease).
package frame

import (
	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/origin"
)

// Frame, Source and KeyframeRequester are the public package frame's (with
// the frame header and codec); they are named here too so that a core needs
// one import for all it meets.
type (
	// Frame is frame.Frame: one encoded access unit with its header.
	Frame = frame.Frame
	// Source is frame.Source: a stream of frames.
	Source = frame.Source
	// KeyframeRequester is frame.KeyframeRequester.
	KeyframeRequester = frame.KeyframeRequester
)

// Break is a discontinuity a source detected as it happened, before any
// frame shows it (with keyframe gating, the frames after it are held back
// and show nothing until a keyframe).
type Break struct {
	// Restart is set when the producer started over (a new writer run):
	// what was kept of the old run must not be shown before the new run's
	// frames. Otherwise frames were lost (a gap).
	Restart bool
}

// BreakNotifier is implemented by sources that report breaks as they
// detect them (the SHM ring).
type BreakNotifier interface {
	// NotifyBreaks calls fn with every break, in order with the frames
	// (never concurrently with a frame handed to Subscribe's fn), until
	// cancel is called. fn must not block.
	NotifyBreaks(fn func(Break)) (cancel func())
}

// Provider is implemented by Caddy apps that own named in-process streams
// (the sdr_encoder app). sdr_stream finds it through ctx.AppIfConfigured.
type Provider interface {
	// Stream returns the named stream, or an error naming it when there is none.
	Stream(name string) (Source, error)
}

// Bus is implemented by the sdr_nats app: the process's NATS connection, the
// telemetry relay, the command path and the safety gates.
type Bus interface {
	// Attach binds a stream's source to that stream's safety gate and returns
	// the stream's relay. The caller calls Release when it no longer needs it.
	Attach(stream string, src Source) (Relay, error)
}

// Relay is the NATS side of one stream as sdr_stream sees it.
type Relay interface {
	// Session returns the command path of one WebSocket client; it holds the
	// client's rate limit and the verdict on its Origin, given at the
	// upgrade: an untrusted client's commands are refused.
	Session(trust origin.Verdict) CommandSession
	// SubscribeTelemetry calls fn with every telemetry message as a complete,
	// ready-to-send 0x02 message, until cancel is called. fn must not block:
	// telemetry is lossy by design.
	SubscribeTelemetry(fn func(msg []byte)) (cancel func())
	// RequestKeyframe publishes command.genesis.force_idr; callers coalesce.
	KeyframeRequester
	// Lease returns the stream's control lease, nil when it has none
	// (docs/control.md).
	Lease() *lease.Lease
	// Release gives the relay back.
	Release()
}

// CommandSession takes the 0x04 commands of one client.
type CommandSession interface {
	// Command takes the JSON body of a 0x04 message (the bytes after the type
	// byte). It returns nil when the command was published, or the reply to
	// send to that client alone: a complete 0x02 message on
	// telemetry.command.ack saying why it was not (or answering
	// take_control and release_control).
	Command(body []byte) (reply []byte)
	// Control returns the client's place in the stream's control lease,
	// nil when there is none. Its other paths (the WebRTC DataChannels of
	// the same WebSocket) share it; the caller closes it when the client
	// leaves, which releases control the client held.
	Control() *lease.Conn
}

// MotionGate is the safety gate of one video source as the command paths
// (0x04 on /stream/ws, the sdr_nats endpoint, DataChannels, ROS publishes)
// see it.
type MotionGate interface {
	// Allow reports whether a command with this action may pass now. Motion
	// actions are refused while the video is stale; estop, estop_clear,
	// pause and reset always pass. mode is "ARMED", "HOLD" or "ESTOP".
	// Before the gate is armed, the video counts as stale from the gate's
	// creation on, as the old transport-server counted it.
	Allow(action string) (ok bool, mode string)
	// Armed reports whether the gate's video has delivered its first frame;
	// once armed, a gate stays armed. Paths the old stack never gated (ROS
	// publishes) let motion through unasked until then.
	Armed() bool
}

// Gates is implemented by the sdr_nats app: the safety gate of each stream,
// by stream name.
type Gates interface {
	Gate(stream string) (MotionGate, error)
}

// Leases is implemented by the sdr_nats app: the control lease of each
// stream, by stream name; nil when the lease is off (docs/control.md).
type Leases interface {
	Lease(stream string) (*lease.Lease, error)
}

// Recorder is implemented by the sdr_recorder app (the flight recorder):
// sdr_stream hands it each stream's frames and its clients' commands. It
// never makes a caller wait: what it cannot take at once it drops.
type Recorder interface {
	// AttachStream records the frames of a stream's source; kr asks the
	// stream's producer for a keyframe, coalesced with the stream's other
	// requests. The caller calls detach when the stream goes.
	AttachStream(stream string, src Source, kr KeyframeRequester) (detach func(), err error)
	// RecordCommand records a command of one of stream's clients after
	// the command path judged it: body is the 0x04 body, reply what the
	// path answered (nil: published; else the 0x02 ack). It must not keep
	// body or reply.
	RecordCommand(stream, client string, body, reply []byte)
}
