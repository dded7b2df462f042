// Package recording is the format of sdr-caddy's flight recorder on
// JetStream, its writer side (the subjects, headers and bodies of each
// record, and the stream that holds them) and its reader.
//
// One JetStream stream holds one recording (default name SDR_REC). Its
// subjects sit under a prefix (default "rec."):
//
//	rec.video.<stream>               video frames of one sdr_stream stream
//	rec.telemetry.<original subject> relayed telemetry, the body as it came
//	rec.command.<stream>             every command after validation (CommandBody, JSON)
//	rec.gate.<original subject>      the safety gate's state (telemetry.safety.video_gate), the body it published
//
// A video message's body is exactly the natsvideo wire form: the 32-byte
// frame header followed by the payload, split into parts (each again the
// header and a slice of the payload, with the Sdr-Part header holding the
// slice's byte offset) when the frame does not fit in the server's
// max_payload. Every part also carries the frame's fields as NATS headers,
// for inspection with the nats CLI:
//
//	Sdr-Frame-Seq  the header's frame_seq, decimal
//	Sdr-Frame-Id   the header's frame_id, decimal (sdr-caddy's writers put the commit time in Unix ns there)
//	Sdr-Keyframe   1 for a keyframe, 0 otherwise
//	Sdr-Codec      the codec's name: h264, hevc, jpeg, rgba, ...
//	Sdr-Size       the whole payload's size in bytes
//
// Every message of every kind carries Sdr-Rec-Time: the Unix time in
// nanoseconds at which sdr-caddy saw it (a frame: when its source read it;
// telemetry and gate transitions: when the NATS message came in; commands:
// when the command path judged them). The reader windows by it; a message
// without it falls back to JetStream's own timestamp.
//
// The package imports nothing from Caddy.
package recording

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/natsvideo"
)

// Defaults of a recording.
const (
	// DefaultStream is the JetStream stream of a recording.
	DefaultStream = "SDR_REC"
	// DefaultPrefix is the prefix of a recording's subjects.
	DefaultPrefix = "rec."
)

// NATS headers of recorded messages.
const (
	HeaderRecTime  = "Sdr-Rec-Time"
	HeaderFrameSeq = "Sdr-Frame-Seq"
	HeaderFrameID  = "Sdr-Frame-Id"
	HeaderKeyframe = "Sdr-Keyframe"
	HeaderCodec    = "Sdr-Codec"
	HeaderSize     = "Sdr-Size"
	// HeaderPart is natsvideo.HeaderPart: the byte offset of a part's slice.
	HeaderPart = natsvideo.HeaderPart
)

// Command outcomes, CommandBody.Outcome.
const (
	OutcomePublished = "published"
	OutcomeRejected  = "rejected"
	OutcomeGated     = "gated"
	// OutcomeControl is take_control or release_control answered by the
	// stream's control lease: never published.
	OutcomeControl = "control"
	// OutcomeKept is a keep the recorder took (Recorder.Keep): its window
	// is being copied into a kept stream.
	OutcomeKept = "kept"
)

// Kind is the kind of a record.
type Kind int

// The kinds of records.
const (
	KindVideo Kind = iota
	KindTelemetry
	KindCommand
	KindGate
)

var kindNames = [...]string{"video", "telemetry", "command", "gate"}

// String returns "video", "telemetry", "command" or "gate".
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, error) {
	for i, n := range kindNames {
		if n == s {
			return Kind(i), nil
		}
	}
	return 0, fmt.Errorf("unknown record kind %q: want video, telemetry, command or gate", s)
}

// NormPrefix returns prefix with exactly one trailing dot, DefaultPrefix
// when empty.
func NormPrefix(prefix string) string {
	if prefix == "" {
		return DefaultPrefix
	}
	return strings.TrimSuffix(prefix, ".") + "."
}

// Subject returns the subject of a record: prefix + kind + "." + name,
// name being the stream name (video, command, gate) or the original
// subject (telemetry).
func Subject(prefix string, k Kind, name string) string {
	return NormPrefix(prefix) + k.String() + "." + name
}

// ParseSubject splits a recorded subject into its kind and name.
func ParseSubject(prefix, subject string) (Kind, string, error) {
	rest, ok := strings.CutPrefix(subject, NormPrefix(prefix))
	if !ok {
		return 0, "", fmt.Errorf("subject %q is not under %q", subject, NormPrefix(prefix))
	}
	kind, name, ok := strings.Cut(rest, ".")
	if !ok || name == "" {
		return 0, "", fmt.Errorf("subject %q has no name after its kind", subject)
	}
	k, err := ParseKind(kind)
	if err != nil {
		return 0, "", fmt.Errorf("subject %q: %w", subject, err)
	}
	return k, name, nil
}

// ParseTime reads a moment of a recording as replay, export and the admin
// API take it: an RFC 3339 time (2026-12-04T02:30:00Z; a "+" of an offset
// that a URL turned into a space is read back), "now", or a negative
// duration before now (-30s, -2m). A time after now is refused. what names
// the value in the error.
func ParseTime(what, v string, now time.Time) (time.Time, error) {
	bad := func(why string) error {
		return fmt.Errorf("%s %q: %s; want an RFC 3339 time (2026-12-04T02:30:00Z), now, or a negative duration before now (-30s)", what, v, why)
	}
	switch {
	case v == "":
		return time.Time{}, bad("empty")
	case v == "now":
		return now, nil
	case strings.HasPrefix(v, "-"):
		d, err := time.ParseDuration(v)
		if err != nil {
			return time.Time{}, bad("not a duration")
		}
		if d >= 0 {
			return time.Time{}, bad("not before now")
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil && strings.Contains(v, " ") {
		t, err = time.Parse(time.RFC3339Nano, strings.ReplaceAll(v, " ", "+"))
	}
	if err != nil {
		return time.Time{}, bad("not a time")
	}
	if t.After(now) {
		return time.Time{}, bad("in the future")
	}
	return t, nil
}

// ValidateStreamName checks the name of a recording's JetStream stream.
func ValidateStreamName(name string) error {
	if name == "" || strings.ContainsAny(name, ".*> \t\r\n/\\") || len(name) > 255 {
		return fmt.Errorf("stream %q: a JetStream stream name is 1 to 255 characters without dots, wildcards, slashes or whitespace", name)
	}
	return nil
}

// ValidateName checks that a stream name or a telemetry subject can be
// one or more subject tokens: no wildcards, whitespace or empty tokens.
func ValidateName(name string) error { return natsvideo.ValidateTokens("name", name) }

// CommandBody is the body of a recorded command.
type CommandBody struct {
	// Action is the command's action.
	Action string `json:"action"`
	// Payload is the command as received, raw JSON.
	Payload json.RawMessage `json:"payload"`
	// Outcome is OutcomePublished, OutcomeRejected or OutcomeGated.
	Outcome string `json:"outcome"`
	// Reason says why a command was not published.
	Reason string `json:"reason,omitempty"`
	// Client names the client: its remote address or id.
	Client string `json:"client,omitempty"`
}

// recTimeHeader returns headers holding Sdr-Rec-Time t.
func recTimeHeader(t time.Time) nats.Header {
	return nats.Header{HeaderRecTime: []string{strconv.FormatInt(t.UnixNano(), 10)}}
}

// videoHeaderBytes bounds the NATS header block of a video message besides
// Sdr-Part (which natsvideo's split leaves room for): the names and values
// of the headers above, at their longest.
const videoHeaderBytes = 256

// VideoMsgs returns the messages of one frame of stream, seen at t, for a
// server whose max_payload is maxPayload: one message, or the parts of a
// frame too large for one.
func VideoMsgs(prefix, stream string, f frame.Frame, t time.Time, maxPayload int64) ([]*nats.Msg, error) {
	msgs, _, err := AppendVideoMsgs(nil, nil, prefix, stream, f, t, maxPayload)
	return msgs, err
}

// AppendVideoMsgs appends VideoMsgs' messages to msgs. The data of a frame
// that fits one message is appended to buf, and buf returned with it, so
// that a writer that publishes the messages at once (the NATS client copies
// what it publishes) can build the next ones in the same memory; the parts
// of a larger frame have their own.
func AppendVideoMsgs(msgs []*nats.Msg, buf []byte, prefix, stream string, f frame.Frame, t time.Time, maxPayload int64) ([]*nats.Msg, []byte, error) {
	subj := Subject(prefix, KindVideo, stream)
	hdr := func() nats.Header {
		h := recTimeHeader(t)
		h[HeaderFrameSeq] = []string{strconv.FormatUint(f.Header.FrameSeq, 10)}
		h[HeaderFrameID] = []string{strconv.FormatUint(f.Header.FrameID, 10)}
		h[HeaderKeyframe] = []string{"0"}
		if f.Header.Keyframe() {
			h[HeaderKeyframe] = []string{"1"}
		}
		h[HeaderCodec] = []string{f.Header.Codec.String()}
		h[HeaderSize] = []string{strconv.Itoa(len(f.Payload))}
		return h
	}
	if natsvideo.Fits(f, maxPayload, videoHeaderBytes) {
		start := len(buf)
		buf = slices.Grow(buf, frame.HeaderSize+len(f.Payload))[:start+frame.HeaderSize]
		f.Header.Put(buf[start:])
		buf = append(buf, f.Payload...)
		return append(msgs, &nats.Msg{Subject: subj, Header: hdr(), Data: buf[start:len(buf):len(buf)]}), buf, nil
	}
	n := len(msgs)
	err := natsvideo.SplitFrame(f, maxPayload, videoHeaderBytes, func(off int, data []byte) error {
		h := hdr()
		h[HeaderPart] = []string{strconv.Itoa(off)}
		msgs = append(msgs, &nats.Msg{Subject: subj, Header: h, Data: data})
		return nil
	})
	if err != nil {
		return msgs[:n], buf, fmt.Errorf("splitting frame %d of %q: %w", f.Header.FrameSeq, stream, err)
	}
	return msgs, buf, nil
}

// TelemetryMsg returns the record of a telemetry message on subject, seen at t.
func TelemetryMsg(prefix, subject string, body []byte, t time.Time) *nats.Msg {
	return &nats.Msg{Subject: Subject(prefix, KindTelemetry, subject), Header: recTimeHeader(t), Data: body}
}

// GateMsg returns the record of a gate message on subject (the gates of
// every stream publish on telemetry.safety.video_gate), the body as the
// gate published it, seen at t.
func GateMsg(prefix, subject string, body []byte, t time.Time) *nats.Msg {
	return &nats.Msg{Subject: Subject(prefix, KindGate, subject), Header: recTimeHeader(t), Data: body}
}

// CommandMsg returns the record of a command of stream, judged at t.
func CommandMsg(prefix, stream string, c CommandBody, t time.Time) (*nats.Msg, error) {
	if len(c.Payload) == 0 || !json.Valid(c.Payload) {
		// A command that was rejected as malformed is still recorded:
		// its bytes go in as a JSON string.
		s, _ := json.Marshal(string(c.Payload))
		c.Payload = s
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding the record of command %q: %w", c.Action, err)
	}
	return &nats.Msg{Subject: Subject(prefix, KindCommand, stream), Header: recTimeHeader(t), Data: body}, nil
}

// StreamConfig is the JetStream stream of a recording.
type StreamConfig struct {
	// Name is the stream's name; default DefaultStream.
	Name string
	// Prefix is the subjects' prefix; default DefaultPrefix.
	Prefix string
	// MaxAge drops records older than this (0: kept until MaxBytes).
	MaxAge time.Duration
	// MaxBytes drops the oldest records beyond this size (0: no bound).
	MaxBytes int64
	// Replicas is the number of copies in a cluster; default 1.
	Replicas int
	// Memory keeps the stream in memory instead of files.
	Memory bool
}

// EnsureStream creates the recording's stream, or updates it to cfg when
// it exists. Old records are discarded when a limit is reached, like a
// dashcam.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultStream
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	sc := jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "sdr-caddy flight recorder",
		Subjects:    []string{NormPrefix(cfg.Prefix) + ">"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    cfg.MaxBytes,
		MaxMsgs:     -1,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	}
	if cfg.MaxBytes <= 0 {
		sc.MaxBytes = -1
	}
	if cfg.Memory {
		sc.Storage = jetstream.MemoryStorage
	}
	s, err := js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("creating or updating recording stream %q: %w", cfg.Name, err)
	}
	return s, nil
}
