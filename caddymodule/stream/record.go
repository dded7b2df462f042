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
