package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/sdr-os/sdr-caddy/internal/timeline"
)

// Timelines is offered by the sdr_recorder app beside Recordings: the
// summary of a stream's recording that the player's timeline draws
// (internal/timeline).
type Timelines interface {
	// RecordingTimeline returns the extent of the recorded video of the
	// sdr_stream stream named stream and the markers of the recording.
	RecordingTimeline(ctx context.Context, stream string) (timeline.Timeline, error)
}

// errNoTimeline answers ?recording when no sdr_recorder app is configured.
var errNoTimeline = errors.New("the recording's timeline needs the sdr_recorder app, which is not configured")

// serveTimeline answers a plain GET with ?recording: the stream's
// recording as internal/timeline summarises it, as JSON. Without the
// sdr_recorder app it is answered 501 with a message, like a replay.
func (s *Stream) serveTimeline(w http.ResponseWriter, r *http.Request) error {
	if s.timelines == nil {
		return s.refuseReplay(w, http.StatusNotImplemented, errNoTimeline)
	}
	tl, err := s.timelines.RecordingTimeline(r.Context(), s.name)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("sdr_stream %s: reading the recording's timeline: %w", s.name, err))
	}
	body, err := json.Marshal(tl)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("sdr_stream %s: encoding the recording's timeline: %w", s.name, err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, err = w.Write(append(body, '\n'))
	return err
}
