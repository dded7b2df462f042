// Package timeline summarises a flight recording (internal/recording) for
// a player's timeline: the extent of one stream's recorded video and the
// moments worth marking on it, the safety gate's transitions and the
// commands that were refused. It reads the command and gate records only,
// never the video's bodies; Cache reads only what is new since its last
// read, so that players may poll it.
//
// The package imports nothing from Caddy.
package timeline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/internal/recording"
)

// Marker kinds.
const (
	// KindGate marks a gate record whose mode differs from the one before
	// it (the first one when it is not ARMED). {"gated":false}, which the
	// gate publishes when the video comes back, is mode ARMED.
	KindGate = "gate"
	// KindRejected marks a command that was rejected or gated.
	KindRejected = "rejected"
)

// Marker is one moment on the timeline.
type Marker struct {
	// Time is when sdr-caddy saw the record.
	Time time.Time `json:"time"`
	// Kind is KindGate or KindRejected.
	Kind string `json:"kind"`
	// Mode is the gate's new mode (ARMED, HOLD, ESTOP), for KindGate.
	Mode string `json:"mode,omitempty"`
	// Action is the command's action, for KindRejected.
	Action string `json:"action,omitempty"`
	// Outcome is the command's outcome (rejected or gated), for
	// KindRejected.
	Outcome string `json:"outcome,omitempty"`
	// Reason says why the command was refused, for KindRejected.
	Reason string `json:"reason,omitempty"`
}

// Timeline is what a player needs to draw its timeline.
type Timeline struct {
	// Start and End are the times of the first and last recorded video
	// frames of the stream; nil when none is recorded.
	Start *time.Time `json:"start"`
	End   *time.Time `json:"end"`
	// Markers are in recorded order, never nil.
	Markers []Marker `json:"markers"`
	// Kept are the recording's kept windows (recording.Recorder.Keep), by
	// start time; Read leaves it empty, the recorder fills it in. Never
	// nil in JSON.
	Kept []recording.Kept `json:"kept"`
	// Recorder is the recorder's state now (recording.State: "recording",
	// "paused", "stopped", ...); Read leaves it empty, the recorder fills
	// it in.
	Recorder string `json:"recorder,omitempty"`
}

// Options choose the recording and the stream.
type Options struct {
	// Recording is the recording's JetStream stream; default
	// recording.DefaultStream.
	Recording string
	// Prefix is its subjects' prefix; default recording.DefaultPrefix.
	Prefix string
	// Stream is the sdr_stream stream whose video gives the extent and
	// whose commands are marked.
	Stream string
}

// Read returns the timeline of opts.Stream in the recording as it is now.
func Read(ctx context.Context, js jetstream.JetStream, opts Options) (Timeline, error) {
	tl := Timeline{Markers: []Marker{}, Kept: []recording.Kept{}}
	if opts.Recording == "" {
		opts.Recording = recording.DefaultStream
	}
	s, err := js.Stream(ctx, opts.Recording)
	if err != nil {
		return tl, fmt.Errorf("reading the timeline of recording %q: %w", opts.Recording, err)
	}
	video := recording.Subject(opts.Prefix, recording.KindVideo, opts.Stream)
	first, err := s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(video))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// No video of the stream: no extent.
	case err != nil:
		return tl, fmt.Errorf("reading the first frame of %q in recording %q: %w", opts.Stream, opts.Recording, err)
	default:
		last, err := s.GetLastMsgForSubject(ctx, video)
		if err != nil {
			return tl, fmt.Errorf("reading the last frame of %q in recording %q: %w", opts.Stream, opts.Recording, err)
		}
		start, end := recTime(first), recTime(last)
		tl.Start, tl.End = &start, &end
	}
	mode := ""
	_, err = recording.Read(ctx, js, recording.ReadOptions{
		Stream: opts.Recording,
		Prefix: opts.Prefix,
		Kinds:  []recording.Kind{recording.KindCommand, recording.KindGate},
	}, func(r recording.Record) error {
		switch r.Kind {
		case recording.KindGate:
			if g := gateMode(r.Data); g != "" {
				if m, ok := gateTransition(&mode, r.Time, g); ok {
					tl.Markers = append(tl.Markers, m)
				}
			}
		case recording.KindCommand:
			if r.Subject != opts.Stream {
				return nil
			}
			if m, ok := rejectedMarker(r.Time, r.Data); ok {
				tl.Markers = append(tl.Markers, m)
			}
		}
		return nil
	})
	if err != nil {
		return tl, fmt.Errorf("reading the markers of recording %q: %w", opts.Recording, err)
	}
	return tl, nil
}

// recTime is a message's Sdr-Rec-Time, its JetStream time without one.
func recTime(m *jetstream.RawStreamMsg) time.Time {
	if v := m.Header.Get(recording.HeaderRecTime); v != "" {
		if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
			return time.Unix(0, ns).UTC()
		}
	}
	return m.Time.UTC()
}
