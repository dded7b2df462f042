package recorder

import (
	"context"
	"errors"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/replay"
	"github.com/sdr-os/sdr-caddy/internal/timeline"
)

// ReadRecording reads the recording back for sdr_stream's replay
// (/stream/ws?replay=, internal/replay): the video of the sdr_stream
// stream named stream, the telemetry and the gate records, from from on
// (video from the keyframe at or before from), to the end of the recording
// as it is now.
func (a *App) ReadRecording(ctx context.Context, stream string, from time.Time, fn func(recording.Record) error) error {
	r := a.Recorder()
	if r == nil {
		return errors.New("sdr_recorder: not provisioned")
	}
	return replay.JetStream{JS: r.JetStream(), Recording: a.Stream, Prefix: a.Prefix}.ReadRecording(ctx, stream, from, fn)
}

// RecordingTimeline summarises the recording for sdr_stream's
// ?recording (internal/timeline): the extent of the recorded video of the
// sdr_stream stream named stream, the markers of the recording, and the
// kept windows. The recording is read through the app's timeline.Cache: a
// poll reads what is new only.
func (a *App) RecordingTimeline(ctx context.Context, stream string) (timeline.Timeline, error) {
	a.mu.RLock()
	r, cache := a.rec, a.timelines
	a.mu.RUnlock()
	if r == nil || cache == nil {
		return timeline.Timeline{}, errors.New("sdr_recorder: not provisioned")
	}
	tl, err := cache.Read(ctx, r.JetStream(), timeline.Options{Recording: a.Stream, Prefix: a.Prefix, Stream: stream})
	if err != nil {
		return tl, err
	}
	tl.Kept = r.KeptWindows()
	tl.Recorder = r.Stats().State.String()
	return tl, nil
}

// HasKept reports whether the recording has a kept window named name
// (sdr_stream's KeptRecordings).
func (a *App) HasKept(name string) bool {
	r := a.Recorder()
	if r == nil {
		return false
	}
	for _, k := range r.KeptWindows() {
		if k.Name == name {
			return true
		}
	}
	return false
}

// ReadKept reads the kept window name as ReadRecording reads the
// recording: a kept stream holds the records under the recording's
// subjects.
func (a *App) ReadKept(ctx context.Context, name, stream string, from time.Time, fn func(recording.Record) error) error {
	r := a.Recorder()
	if r == nil {
		return errors.New("sdr_recorder: not provisioned")
	}
	return replay.JetStream{JS: r.JetStream(), Recording: recording.KeptStreamName(a.streamName(), name), Prefix: a.Prefix}.ReadRecording(ctx, stream, from, fn)
}
