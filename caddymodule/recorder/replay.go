package recorder

import (
	"context"
	"errors"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/replay"
)

// ReadRecording reads the recording back for sdr_stream's replay
// (/stream/ws?replay=, internal/replay): the video of the sdr_stream
// stream named stream, the telemetry and the gate records, from from on
// (video from the keyframe at or before from), to the end of the recording
// as it is now.
func (a *App) ReadRecording(ctx context.Context, stream string, from time.Time, fn func(recording.Record) error) error {
	r := a.rec
	if r == nil {
		return errors.New("sdr_recorder: not provisioned")
	}
	return replay.JetStream{JS: r.JetStream(), Recording: a.Stream, Prefix: a.Prefix}.ReadRecording(ctx, stream, from, fn)
}
