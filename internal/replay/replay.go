// Package replay serves a flight recording (internal/recording) to one
// /stream/ws client as if it were live video: the same 0x01 video and 0x02
// telemetry messages, paced in recorded time. It imports nothing from Caddy;
// sdr_stream maps the request onto it.
//
// # Replay on /stream/ws
//
// A WebSocket upgrade of /stream/ws?replay=<time>&speed=<x> on an sdr_stream
// handler replays that stream's recording instead of showing it live. A
// connection without replay is a live one, unchanged (SDR_OS's client never
// sends it).
//
//   - replay is the moment to start at: an RFC 3339 time
//     (2026-12-04T02:30:00Z, or with an offset, its + written %2B in the URL
//     or left as +), or a negative duration meaning that long before now
//     (-30s, -2m). A time in the future is refused.
//   - speed is the replay rate, from 0.25 to 4; default 1.
//   - A value outside these is answered 400 with a message naming the
//     parameter and what it takes, before the upgrade. A handler whose
//     Caddy config has no sdr_recorder app answers 501 "replay needs the
//     sdr_recorder app".
//   - Only WebSocket upgrades read these parameters: a plain GET with them
//     gets the health JSON, and speed without replay is a live connection.
//   - A replay connection takes a place under max_clients like a live one;
//     the health JSON's clients count only live clients.
//
// The client gets the stream's recorded video frames as 0x01 messages,
// byte for byte what a live client got (the frame header as the writer
// stored it, then the payload), and the recorded telemetry as 0x02
// messages, as the live relay sent it. Frames are not rewritten: their
// frame_id (the commit time, with sdr-caddy's writers) is the recorded one,
// so a player that shows the age of each frame shows the recording's age.
// Video starts at the keyframe at or
// before the requested time, so that the first frame is decodable: the
// frames from that keyframe up to the requested time (the lead-in) are sent
// as fast as the connection takes them, so that the decoder reaches the
// requested time at once; from there on every record is sent when its
// recorded time, measured from the requested time and divided by speed, is
// due. A recording that begins after the requested time starts at its first
// record without waiting. A gap inside the recording is waited out. A client
// slower than the recording is not skipped: what is due goes out as fast as
// it takes it, until it has caught up.
//
// The safety gate's recorded transitions are sent as the 0x02 messages on
// telemetry.safety.video_gate that live clients got. Recorded commands are
// not sent: a live client never got other clients' commands. The acks
// sdr-caddy sent to one client alone were never on NATS and are not in the
// recording; the simulator's acks are, as telemetry, and are sent.
//
// Commands are never accepted on a replay connection: every 0x04 message is
// answered, to that client alone, with the ack a refused live command gets
// (telemetry.command.ack, status "rejected", detail "replay connection:
// commands are not accepted"; action and cmd_seq echoed as for a live
// command), and nothing is published on NATS, estop included. With the
// recorder running, each refused command is recorded like a live client's,
// with its ack (outcome rejected). 0x03 (WebRTC) messages are ignored.
//
// The replay reads the recording as it is when the connection opens. At its
// end the server closes the connection with code 1000 and the reason "end
// of recording" ("nothing recorded at or after <time>" when there was
// nothing to send); a client that reconnects without replay is live again.
// A configuration reload closes it with 1012, like a live client; a failure
// to read the recording with 1011. The frame limits, message size limit,
// write timeout and pings of the stream apply as to a live client (a client
// that answers no ping is closed with 1001).
package replay

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/recording"
)

// Speed bounds and default.
const (
	MinSpeed     = 0.25
	MaxSpeed     = 4
	DefaultSpeed = 1
)

// Params are a replay request's query parameters.
type Params struct {
	// From is the recorded time to start at.
	From time.Time
	// Speed divides recorded time: 2 plays twice as fast.
	Speed float64
	// Kept names a kept window (recording.Recorder.Keep) to play instead
	// of the recording; empty: the recording.
	Kept string
}

// ParseQuery reads replay, speed and kept from a request's query. ok is false
// when the query has no replay parameter: a live request, whatever else it
// holds. now is the time a negative duration counts back from.
func ParseQuery(q url.Values, now time.Time) (p Params, ok bool, err error) {
	if !q.Has("replay") {
		return Params{}, false, nil
	}
	p.From, err = ParseTime(q.Get("replay"), now)
	if err != nil {
		return Params{}, true, err
	}
	p.Speed = DefaultSpeed
	if q.Has("speed") {
		if p.Speed, err = ParseSpeed(q.Get("speed")); err != nil {
			return Params{}, true, err
		}
	}
	if q.Has("kept") {
		p.Kept = q.Get("kept")
		if err := recording.ValidateKeepName(p.Kept); err != nil {
			return Params{}, true, fmt.Errorf("kept: %w", err)
		}
	}
	return p, true, nil
}

// ParseTime reads the replay parameter: an RFC 3339 time, now, or a
// negative duration before now (recording.ParseTime). A time after now is
// refused.
func ParseTime(v string, now time.Time) (time.Time, error) {
	return recording.ParseTime("replay", v, now)
}

// ParseSpeed reads the speed parameter: a number from MinSpeed to MaxSpeed.
func ParseSpeed(v string) (float64, error) {
	x, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(x) || x < MinSpeed || x > MaxSpeed {
		return 0, fmt.Errorf("speed %q: want a number from %g to %g", v, float64(MinSpeed), float64(MaxSpeed))
	}
	return x, nil
}
