package replay

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/relay"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// Connection defaults, as a live client's (internal/hub).
const (
	DefaultWriteTimeout = 10 * time.Second
	DefaultMaxMessage   = 64 << 10
	DefaultPingInterval = 20 * time.Second
)

// Close codes and reasons of a replay connection.
const (
	// CloseInternalError ends a replay whose recording could not be read.
	CloseInternalError uint16 = 1011
	// ReasonEnd is the close reason at the end of the recording.
	ReasonEnd = "end of recording"
	// RejectDetail is the detail of the ack refusing a command.
	RejectDetail = "replay connection: commands are not accepted"
)

// ReadFunc reads a recording for a replay from its From: fn gets, in
// recorded order, the records from the keyframe at or before From (video)
// or From (the rest) to the end of the recording as it is now, as
// recording.Read delivers them. It returns fn's error, or ctx's.
type ReadFunc func(ctx context.Context, fn func(recording.Record) error) error

// Config sets up one replay connection. Zero fields take the defaults.
type Config struct {
	// Stream is the sdr_stream stream whose video is sent; other streams'
	// video in the recording is not.
	Stream string
	// Params are the replay's start and speed.
	Params
	// WriteTimeout bounds each write; a client that cannot take one in
	// time is disconnected.
	WriteTimeout time.Duration
	// MaxMessage is the largest message the client may send (close code
	// 1009 beyond it).
	MaxMessage int
	// Limits bound the frames the client sends.
	Limits wire.FrameLimits
	// PingInterval is how often the client is sent a ping; a client that
	// has sent nothing (no pong, no message) since the previous ping is
	// closed (code 1001), as a live client is. Negative: no pings.
	PingInterval time.Duration
	// OnRefused, when set, is called with each command refused (the bytes
	// after the 0x04 type byte) and the ack sent for it, from the
	// connection's reading goroutine; it must not keep them or block.
	OnRefused func(body, reply []byte)
}

// Stats count what one replay sent and refused.
type Stats struct {
	Frames    uint64 // 0x01 messages
	Telemetry uint64 // 0x02 messages from the recording
	Commands  uint64 // 0x04 messages refused
	Close     uint16 // the close code sent; 0 when none was
}

// ErrRecording is the error of a replay that ended because its recording
// could not be read.
var ErrRecording = errors.New("reading the recording")

// errClient ends the replay when the client's side of the connection does.
type errClient struct{ err error }

func (e errClient) Error() string { return "client ended: " + fmt.Sprint(e.err) }

// errSilent ends the replay of a client that answered no ping.
type errSilent struct{ for_ time.Duration }

func (e errSilent) Error() string {
	return fmt.Sprintf("no pong or message for %s", e.for_.Round(time.Millisecond))
}

// errWrite is a failed write to the client.
type errWrite struct{ err error }

func (e errWrite) Error() string { return "writing to client: " + e.err.Error() }
func (e errWrite) Unwrap() error { return e.err }

// session is one replay connection.
type session struct {
	cfg   Config
	conn  net.Conn
	guard *wire.FrameGuard // what the client sends, and when
	wmu   sync.Mutex       // one writer at a time: the replay, a reply or a ping
	stats Stats
	// commands is read after the reader ends.
	commands uint64
}

// Serve replays to conn, whose WebSocket handshake is done, until the
// recording ends, the client leaves, or ctx ends; then it sends the close
// frame (1000 at the end of the recording, 1012 when ctx ended, 1011 when
// the recording could not be read, the client's own code echoed) and
// closes conn. The error says why the replay ended early; nil at the end of
// the recording or when the client closed normally.
func Serve(ctx context.Context, conn net.Conn, cfg Config, read ReadFunc) (Stats, error) {
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.Speed <= 0 {
		cfg.Speed = DefaultSpeed
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	s := &session{cfg: cfg, conn: conn, guard: wire.NewFrameGuard(cfg.Limits)}
	rctx, cancel := context.WithCancelCause(ctx)
	var pinger sync.WaitGroup
	defer pinger.Wait()
	defer cancel(nil)
	readEnded := make(chan error, 1)
	go func() {
		err := s.read()
		readEnded <- err
		cancel(errClient{err})
	}()
	if cfg.PingInterval > 0 {
		pinger.Go(func() { s.ping(rctx, cancel) })
	}

	pacer := NewPacer(cfg.From, cfg.Speed)
	keyed := false // the stream's first keyframe was sent
	err := read(rctx, func(rec recording.Record) error {
		msg := s.message(rec, &keyed)
		if msg == nil {
			return nil
		}
		if err := pacer.Wait(rctx, rec.Time); err != nil {
			return err
		}
		return s.write(msg)
	})

	var (
		code   uint16
		reason string
		werr   errWrite
		ce     errClient
		silent errSilent
	)
	cause := context.Cause(rctx)
	switch {
	case errors.As(cause, &ce):
		err = nil
		var pe *wire.ProtocolError
		switch {
		case errors.As(ce.err, &pe):
			code, reason, err = pe.Code, pe.Reason, pe
		case errors.Is(ce.err, wire.ErrClosed):
			code = wire.CloseNormal
		}
	case errors.As(cause, &silent):
		code, reason, err = wire.CloseGoingAway, silent.Error(), silent
	case ctx.Err() != nil:
		code, reason, err = wire.CloseServiceRestart, "sdr_stream stopped or reloaded; reconnect", nil
	case err == nil:
		code, reason = wire.CloseNormal, ReasonEnd
		if s.stats.Frames+s.stats.Telemetry == 0 {
			reason = "nothing recorded at or after " + cfg.From.UTC().Format(time.RFC3339Nano)
		}
	case errors.As(err, &werr):
		// The connection is broken: no close frame.
	default:
		code, reason = CloseInternalError, "replay failed: reading the recording"
		err = fmt.Errorf("%w: %w", ErrRecording, err)
	}
	cancel(nil)
	pinger.Wait() // no ping after the close frame
	if code != 0 {
		s.wmu.Lock()
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		if _, werr := conn.Write(wire.CloseFrame(code, reason)); werr == nil {
			s.stats.Close = code
		}
		s.wmu.Unlock()
	}
	_ = conn.Close()
	<-readEnded
	s.stats.Commands = s.commands
	return s.stats, err
}

// message returns the WebSocket frame that replays rec, or nil when rec is
// not sent: another stream's video, a delta before the stream's first
// keyframe, a command, or telemetry whose subject the protocol cannot
// carry. A gate record is the gate's message on the subject it came on
// (telemetry.safety.video_gate), which live clients got as telemetry.
func (s *session) message(rec recording.Record, keyed *bool) []byte {
	switch rec.Kind {
	case recording.KindVideo:
		if rec.Frame == nil || rec.Subject != s.cfg.Stream {
			return nil
		}
		if !*keyed {
			if !rec.Frame.Header.Keyframe() {
				return nil
			}
			*keyed = true
		}
		s.stats.Frames++
		return wire.VideoFrame(rec.Frame.Header, rec.Frame.Payload)
	case recording.KindTelemetry, recording.KindGate:
		msg, err := wire.Telemetry(rec.Subject, rec.Data)
		if err != nil {
			return nil
		}
		s.stats.Telemetry++
		return wire.AppendBinaryFrame(make([]byte, 0, len(msg)+10), msg)
	}
	return nil
}

// write writes one complete frame with the write timeout.
func (s *session) write(f []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)); err != nil {
		return errWrite{err}
	}
	if _, err := s.conn.Write(f); err != nil {
		return errWrite{err}
	}
	return nil
}

// read is the connection's reading goroutine: pings are answered, commands
// refused, the rest ignored. It ends with the client's close (wire.ErrClosed),
// a protocol error, or the end of the connection (nil).
func (s *session) read() error {
	r := wire.NewClientReader(bufio.NewReaderSize(wire.GuardReader(s.conn, s.guard), 512), s.cfg.MaxMessage)
	for {
		m, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) {
				return nil
			}
			return err
		}
		switch m.Opcode {
		case wire.OpClose:
			return wire.ErrClosed
		case wire.OpPing:
			if err := s.write(wire.ControlFrame(wire.OpPong, m.Data)); err != nil {
				return nil // the replay's writes see it too
			}
		case wire.OpBinary:
			if len(m.Data) > 0 && m.Data[0] == wire.TypeCommand {
				s.commands++
				reply := RejectCommand(m.Data[1:])
				if s.cfg.OnRefused != nil {
					s.cfg.OnRefused(m.Data[1:], reply)
				}
				if err := s.write(wire.AppendBinaryFrame(nil, reply)); err != nil {
					return nil
				}
			}
		}
	}
}

// pingFrame is the ping a replay client is sent (no payload).
var pingFrame = wire.ControlFrame(wire.OpPing, nil)

// ping sends a ping every PingInterval, and ends the replay (errSilent)
// when the client has sent nothing since the previous one.
func (s *session) ping(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(s.cfg.PingInterval)
	defer t.Stop()
	var pinged time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if !pinged.IsZero() && s.guard.SilentSince(pinged) {
				cancel(errSilent{now.Sub(pinged)})
				return
			}
			pinged = now
			if s.write(pingFrame) != nil {
				return // the replay's writes see it too
			}
		}
	}
}

// RejectCommand returns the 0x02 ack refusing the command body (the bytes
// after the 0x04 type byte) on a replay connection: status "rejected",
// action echoed when it is a string (cut to 256 bytes), cmd_seq when it is
// a number, as the live command path does.
func RejectCommand(body []byte) []byte {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(body, &m) // a malformed command is refused all the same
	ack := struct {
		Action any             `json:"action"`
		CmdSeq json.RawMessage `json:"cmd_seq"`
		Status string          `json:"status"`
		Detail string          `json:"detail"`
	}{CmdSeq: json.RawMessage("null"), Status: relay.StatusRejected, Detail: RejectDetail}
	var action string
	if json.Unmarshal(m["action"], &action) == nil {
		if len(action) > 256 {
			action = action[:256]
		}
		ack.Action = action
	}
	if seq := m["cmd_seq"]; len(seq) > 0 && (seq[0] == '-' || (seq[0] >= '0' && seq[0] <= '9')) {
		ack.CmdSeq = seq
	}
	p, err := json.Marshal(ack)
	if err != nil {
		p = fmt.Appendf(nil, `{"action":null,"cmd_seq":null,"status":%q,"detail":%q}`, relay.StatusRejected, RejectDetail)
	}
	msg, _ := wire.Telemetry(relay.SubjectAck, p)
	return msg
}
