// Package natsvideo carries a stream of encoded frames over NATS, so that
// one origin process can feed the fan-out of many edge processes: NATS does
// the distribution (cluster routes, leaf nodes), this package only puts
// frames on a subject and takes them off again.
//
// On the wire, every message on the video subject (video.<stream> by
// default) is the 32-byte frame header exactly as the writer stored it in
// the ring, followed by the payload: the same bytes as a 0x01 message on
// /stream/ws without the type byte. A frame larger than the NATS server's
// max_payload (1 MiB by default) is split into parts: each part is again the
// 32-byte header followed by a slice of the payload, and carries the NATS
// message header Sdr-Part with the byte offset of its slice. Frames that fit
// carry no NATS header at all, except a frame that follows a gap or restart
// at the origin, which carries Sdr-Prev (see HeaderPrev).
//
// Keyframe requests travel the other way on <subject>.force_idr, with the
// body {"cmd_seq":0}. Each edge coalesces its own requests; the origin's
// Publisher coalesces again across all edges before it asks its producer
// (an in-process encoder, or the simulator through command.genesis.force_idr).
//
// Publisher (origin) takes a frame.Source and publishes every frame; Source
// (edge) is a frame.Source fed by a subscription, with frame_seq gap and
// restart detection, keyframe gating, the current GOP replayed to late
// subscribers, and LastArrival stamped on receipt so that the edge's safety
// gate measures the age of the video as the edge sees it.
//
// The package imports nothing from Caddy.
package natsvideo

import (
	"fmt"
	"strings"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/keyreq"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// Subjects and headers of the video protocol over NATS.
const (
	// SubjectPrefix is the prefix of the default video subject of a stream.
	SubjectPrefix = "video."
	// IDRSuffix follows the video subject in the subject of keyframe
	// requests from edges to the origin.
	IDRSuffix = ".force_idr"
	// HeaderPart is the NATS message header of one part of a frame that is
	// larger than the server's max_payload: the decimal byte offset of the
	// part's slice in the payload.
	HeaderPart = "Sdr-Part"
	// HeaderPrev is the NATS message header of a frame that follows a
	// discontinuity at the origin (its reader missed frames, or the writer
	// restarted): the frame_seq of the frame published before it. An edge
	// whose last frame is that one lost nothing in transit, and passes the
	// frame on as the origin's own clients get it.
	HeaderPrev = "Sdr-Prev"
	// IDRBody is the body of a keyframe request, as on command.genesis.force_idr.
	IDRBody = `{"cmd_seq":0}`
	// ForceIDRSubject is where the simulator (and sdr_encoder) listen for
	// keyframe requests.
	ForceIDRSubject = "command.genesis.force_idr"
)

// DefaultIDRCoalesce is the shortest interval between two keyframe requests
// sent on, the old service's SDR_IDR_COALESCE_MS.
const DefaultIDRCoalesce = keyreq.DefaultInterval

// partOverhead is room left in each part for the NATS header block
// ("NATS/1.0\r\nSdr-Part: <offset>\r\n\r\n", about 40 bytes).
const partOverhead = 128

// minPartPayload is the smallest payload slice worth a part; a server whose
// max_payload leaves less than this cannot carry split frames.
const minPartPayload = 1024

// DefaultMaxFrameBytes bounds the payload a Source accepts for one frame.
const DefaultMaxFrameBytes = 64 << 20

// DefaultSubject returns the video subject of a stream: video.<stream>.
func DefaultSubject(stream string) string { return SubjectPrefix + stream }

// IDRSubject returns the subject of keyframe requests for a video subject.
func IDRSubject(subject string) string { return subject + IDRSuffix }

// ValidateSubject checks that subject can be published to: non-empty
// tokens separated by dots, no wildcards, no whitespace.
func ValidateSubject(subject string) error {
	if err := ValidateTokens("video subject", subject); err != nil {
		return err
	}
	if strings.HasSuffix(subject, IDRSuffix) {
		return fmt.Errorf("video subject %q ends in %s, the suffix of keyframe requests", subject, IDRSuffix)
	}
	return nil
}

// ValidateTokens checks that s can be one or more NATS subject tokens: not
// empty, no wildcards, no whitespace, no empty token. what names s in the
// error.
func ValidateTokens(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if strings.ContainsAny(s, " \t\r\n*>") {
		return fmt.Errorf("%s %q: wildcards and whitespace are not allowed", what, s)
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return fmt.Errorf("%s %q has an empty token", what, s)
		}
	}
	return nil
}

// partRoom returns how many payload bytes fit in one part under maxPayload.
func partRoom(maxPayload int64) (int, error) {
	room := int(maxPayload) - shmring.HeaderSize - partOverhead
	if room < minPartPayload {
		return 0, fmt.Errorf("nats server max_payload %d leaves %d bytes per part, need at least %d", maxPayload, room, minPartPayload)
	}
	return room, nil
}

// Fits reports whether f goes on the wire as one message (the frame header
// and the payload) under maxPayload, with headerBytes of NATS headers.
func Fits(f frame.Frame, maxPayload int64, headerBytes int) bool {
	return int64(shmring.HeaderSize+len(f.Payload)+headerBytes) <= maxPayload
}

// SplitFrame cuts f into the parts of the wire form for a server whose
// max_payload is maxPayload, each leaving room for headerBytes of NATS
// headers besides HeaderPart, and calls fn with each part in order: off is
// the byte offset of its slice of the payload (the value of HeaderPart),
// data the frame header followed by the slice; data is fn's to keep. It
// stops at fn's first error and returns it.
func SplitFrame(f frame.Frame, maxPayload int64, headerBytes int, fn func(off int, data []byte) error) error {
	room, err := partRoom(maxPayload - int64(headerBytes))
	if err != nil {
		return err
	}
	for off := 0; off < len(f.Payload); off += room {
		end := min(off+room, len(f.Payload))
		data := make([]byte, shmring.HeaderSize, shmring.HeaderSize+end-off)
		f.Header.Put(data)
		data = append(data, f.Payload[off:end]...)
		if err := fn(off, data); err != nil {
			return err
		}
	}
	return nil
}
