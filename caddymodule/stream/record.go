package stream

import (
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/sdr-os/sdr-caddy/internal/frame"
)

// attachRecorder hands the stream's frames to the sdr_recorder app, when
// it is configured: it takes them from the stream's source through its own
// bounded queue, and asks for keyframes through the hub's coalesced
// requests.
func (s *Stream) attachRecorder(ctx caddy.Context) error {
	app, err := ctx.AppIfConfigured("sdr_recorder")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sdr_stream %s: loading the sdr_recorder app: %w", s.name, err)
	}
	rec, ok := app.(frame.Recorder)
	if !ok {
		return fmt.Errorf("sdr_stream %s: the sdr_recorder app (%T) is not a frame.Recorder", s.name, app)
	}
	detach, err := rec.AttachStream(s.name, s.source.src, s.hub)
	if err != nil {
		return fmt.Errorf("sdr_stream %s: %w", s.name, err)
	}
	s.recorder, s.unrecord = rec, detach
	return nil
}

// recordCommands returns command, recording each command and what it
// answered when the recorder runs; the recorder never makes it wait.
func (s *Stream) recordCommands(command func([]byte) []byte, client string) func([]byte) []byte {
	rec := s.recorder
	if rec == nil {
		return command
	}
	return func(body []byte) []byte {
		reply := command(body)
		rec.RecordCommand(s.name, client, body, reply)
		return reply
	}
}

// Keeper is offered by the sdr_recorder app beside frame.Recorder: keep,
// the operator's command that copies a window of the recording into a
// kept stream (docs/recorder.md).
type Keeper interface {
	// Keep takes the data member of a keep command that one of stream's
	// clients sent and that passed the command path's checks. It returns
	// the kept window's JetStream stream and the ack's detail, or an error
	// saying why the keep is refused. It never waits on the network.
	Keep(stream, client string, data []byte) (kept, detail string, err error)
}

// allowKeep lets the client of session keep windows of the recording when
// the sdr_recorder app runs. Without it, or on a path that cannot take it,
// the relay refuses keep and never publishes it.
func (s *Stream) allowKeep(session frame.CommandSession, client string) {
	k, ok := s.recorder.(Keeper)
	if !ok {
		return
	}
	if ks, ok := session.(interface {
		SetKeep(func(data []byte) (kept, detail string, err error))
	}); ok {
		ks.SetKeep(func(data []byte) (string, string, error) { return k.Keep(s.name, client, data) })
	}
}
