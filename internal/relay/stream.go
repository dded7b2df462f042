package relay

import (
	"sync"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/origin"
)

// Stream is the relay as one stream sees it (frame.Relay): the shared
// telemetry fan-out, and command sessions gated by that stream's gate.
type Stream struct {
	r       *Relay
	gate    frame.MotionGate
	onCodec func()
	release func()
	lease   *lease.Lease
	once    sync.Once
}

// Stream returns the relay of one stream. release, if not nil, runs once on
// Release (it unbinds the stream's source from its gate).
func (r *Relay) Stream(gate frame.MotionGate, onCodec, release func()) *Stream {
	return &Stream{r: r, gate: gate, onCodec: onCodec, release: release}
}

// WithLease gives the stream's clients a control lease (docs/control.md);
// nil: none.
func (s *Stream) WithLease(l *lease.Lease) *Stream {
	s.lease = l
	return s
}

// Lease returns the stream's control lease, nil when it has none.
func (s *Stream) Lease() *lease.Lease { return s.lease }

// Session returns the command path of one client of the stream, whose
// connection got the verdict trust. With a control lease, the client gets
// its own place in it (Session.Control), which the caller closes.
func (s *Stream) Session(trust origin.Verdict) frame.CommandSession {
	var c *lease.Conn
	if s.lease != nil {
		c = s.lease.Conn()
	}
	return s.r.Session(s.gate, s.onCodec, trust).WithControl(c)
}

// SubscribeTelemetry calls fn with every relayed telemetry message until
// cancel is called; see Relay.SubscribeTelemetry.
func (s *Stream) SubscribeTelemetry(fn func(msg []byte)) (cancel func()) {
	return s.r.SubscribeTelemetry(fn)
}

// SubscribeTelemetryBatch calls fn with each batch of telemetry messages;
// see Relay.SubscribeTelemetryBatch. sdr_stream can assert this method to
// queue a batch to each client as one write.
func (s *Stream) SubscribeTelemetryBatch(fn func(msgs [][]byte)) (cancel func()) {
	return s.r.SubscribeTelemetryBatch(fn)
}

// RequestKeyframe publishes command.genesis.force_idr.
func (s *Stream) RequestKeyframe() { s.r.RequestKeyframe() }

// Release gives the stream's relay back.
func (s *Stream) Release() {
	s.once.Do(func() {
		if s.release != nil {
			s.release()
		}
	})
}

// Interface guards.
var (
	_ frame.Relay          = (*Stream)(nil)
	_ frame.CommandSession = (*Session)(nil)
)
