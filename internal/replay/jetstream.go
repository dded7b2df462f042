package replay

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/internal/recording"
)

// JetStream reads replays from a recording on JetStream.
type JetStream struct {
	// JS is the JetStream context of the recorder's NATS connection.
	JS jetstream.JetStream
	// Recording is the recording's JetStream stream; default
	// recording.DefaultStream.
	Recording string
	// Prefix is its subjects' prefix; default recording.DefaultPrefix.
	Prefix string
}

// ReadRecording calls fn with the recorded video of stream and all recorded
// telemetry and gate records from from on (video from the keyframe at or
// before from), in recorded order, to the end of the recording as it is
// now. Commands are not read.
func (j JetStream) ReadRecording(ctx context.Context, stream string, from time.Time, fn func(recording.Record) error) error {
	_, err := recording.Read(ctx, j.JS, recording.ReadOptions{
		Stream: j.Recording,
		Prefix: j.Prefix,
		From:   from,
		Kinds:  []recording.Kind{recording.KindVideo, recording.KindTelemetry, recording.KindGate},
	}, func(r recording.Record) error {
		if r.Kind == recording.KindVideo && r.Subject != stream {
			return nil
		}
		return fn(r)
	})
	return err
}
