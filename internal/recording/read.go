package recording

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/frame"
)

// Record is one recorded message.
type Record struct {
	Kind Kind
	// Time is when sdr-caddy saw it (Sdr-Rec-Time; JetStream's timestamp
	// when the message has none).
	Time time.Time
	// Subject is the original subject: for telemetry and the gate the
	// subject it came on (telemetry.odom, telemetry.safety.video_gate),
	// for video and commands the stream's name.
	Subject string
	// Seq is the JetStream stream sequence of the message (of the first
	// part of a split frame).
	Seq uint64
	// Frame is the frame of a video record, its payload reassembled.
	Frame *frame.Frame
	// Data is the body of the other kinds.
	Data []byte
}

// ReadOptions choose what Read reads.
type ReadOptions struct {
	// Stream is the recording's JetStream stream; default DefaultStream.
	Stream string
	// Prefix is its subjects' prefix; default DefaultPrefix.
	Prefix string
	// From and To bound the window by record time, both included. A zero
	// From reads from the start, a zero To to the end.
	From, To time.Time
	// Kinds are the kinds to read; nil reads all.
	Kinds []Kind
}

// ReadStats count what Read read.
type ReadStats struct {
	Records     uint64 // records passed to fn
	Frames      uint64 // of which video frames
	LeadIn      uint64 // video frames before From, from the keyframe at or before it
	Incomplete  uint64 // split frames skipped because a part was missing
	Undecodable uint64 // video frames skipped because no keyframe came before them in the window
	Malformed   uint64 // messages that are not records (skipped)
	Duplicates  uint64 // video frames recorded twice within DuplicateWindow frames (two configurations overlapping in a reload), skipped
	Messages    uint64 // JetStream messages read
}

// KeyframeLookback is how far before From Read looks for the keyframe to
// start video at first; it doubles until it finds one or reaches the
// start of the recording. The recorder asks for a keyframe every 2 s by
// default, so the first look finds one.
const KeyframeLookback = 5 * time.Second

// MaxStoreDelay bounds how much later than a record's time the recorder
// stores it (time in the recorder's queue and in flight): Read stops at the
// first record whose time is more than this after To, and the keyframe
// scan reads this far past From.
const MaxStoreDelay = 5 * time.Second

// Read calls fn for every record with From <= Time <= To in recorded
// order (the order JetStream stored them: per subject, the order sdr-caddy
// saw them). Video starts at the keyframe at or before From, so that the
// first frame is decodable: those earlier frames are delivered too, with
// their own Time (counted in LeadIn). A stream with no keyframe at or
// before From starts at its first keyframe after From. Parts are
// reassembled; a frame with a missing part is skipped and counted. Read
// reads the stream as it is when Read starts: records stored after that
// are not read. It returns fn's error, or ctx's.
//
// Cost: besides the window, Read reads the headers only (no bodies) of the
// video messages from From-KeyframeLookback (more when that holds no
// keyframe) to From+MaxStoreDelay and of the first record stored at or
// after From, then the window from the earliest keyframe found (or that
// record, when it was stored before the keyframe), and the records up to
// MaxStoreDelay past To.
func Read(ctx context.Context, js jetstream.JetStream, opts ReadOptions, fn func(Record) error) (ReadStats, error) {
	var st ReadStats
	if opts.Stream == "" {
		opts.Stream = DefaultStream
	}
	prefix := NormPrefix(opts.Prefix)
	want := [4]bool{}
	if opts.Kinds == nil {
		want = [4]bool{true, true, true, true}
	}
	for _, k := range opts.Kinds {
		if k < 0 || int(k) >= len(want) {
			return st, fmt.Errorf("reading recording %q: unknown kind %d", opts.Stream, int(k))
		}
		want[k] = true
	}
	var filters []string
	for k, ok := range want {
		if ok {
			filters = append(filters, prefix+Kind(k).String()+".>")
		}
	}
	if len(filters) == 0 {
		return st, nil
	}
	s, err := js.Stream(ctx, opts.Stream)
	if err != nil {
		return st, fmt.Errorf("reading recording %q: %w", opts.Stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return st, fmt.Errorf("reading recording %q: %w", opts.Stream, err)
	}
	lastSeq := info.State.LastSeq
	if info.State.Msgs == 0 || lastSeq == 0 {
		return st, nil
	}
	if !opts.From.IsZero() && info.State.LastTime.Before(opts.From) {
		// JetStream stores a message after sdr-caddy saw it: nothing
		// stored before From was seen at or after it.
		return st, nil
	}

	cc := jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy}
	keySeq := map[string]uint64{} // video stream -> sequence of its keyframe at or before From
	if !opts.From.IsZero() {
		cc.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		from := opts.From
		cc.OptStartTime = &from
		if want[KindVideo] {
			keySeq, err = findKeyframes(ctx, js, opts.Stream, prefix, opts.From, lastSeq, info.State.FirstTime, &st)
			if err != nil {
				return st, err
			}
			if start := minSeq(keySeq); start != 0 {
				// Start at the earliest keyframe, or earlier at the first
				// record stored at or after From: records of other kinds
				// reach JetStream on other goroutines than frames, and one
				// seen after From may be stored before that keyframe. (A
				// record is stored after it was seen, so nothing seen at
				// or after From was stored before From.)
				if seq, err := firstSeqAt(ctx, js, opts.Stream, filters, from, lastSeq); err != nil {
					return st, err
				} else if seq != 0 && seq < start {
					start = seq
				}
				cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
				cc.OptStartTime, cc.OptStartSeq = nil, start
			}
		}
	}
	cons, err := js.OrderedConsumer(ctx, opts.Stream, cc)
	if err != nil {
		return st, fmt.Errorf("reading recording %q: %w", opts.Stream, err)
	}
	r := reader{opts: opts, prefix: prefix, keySeq: keySeq, asm: map[string]*assembly{}, started: map[string]bool{}, last: map[string]*recentFrames{}, st: &st, fn: fn}
	err = consume(ctx, js, opts.Stream, cons, lastSeq, r.msg)
	return st, err
}

// errStop ends a consume loop early without an error.
var errStop = errors.New("stop")

// consume calls fn with the consumer's messages up to sequence lastSeq,
// until fn returns an error (errStop: none) or ctx ends.
//
// The consumer is deleted when consume returns, so that a reader that
// seeks often (a replay) leaves no consumers behind on the server.
func consume(ctx context.Context, js jetstream.JetStream, stream string, cons jetstream.Consumer, lastSeq uint64, fn func(jetstream.Msg, *jetstream.MsgMetadata) error) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		return fmt.Errorf("reading recording: %w", err)
	}
	defer func() {
		it.Stop()
		if ci := cons.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = js.DeleteConsumer(dctx, stream, ci.Name) // else the server drops it after 5 minutes
			cancel()
		}
	}()
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return nil // nothing from the start position on
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			it.Stop()
		case <-stopped:
			it.Stop()
		}
	}()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading recording: %w", err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading recording: %w", err)
		}
		if meta.Sequence.Stream > lastSeq {
			return nil
		}
		if err := fn(m, meta); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
		if meta.Sequence.Stream >= lastSeq || meta.NumPending == 0 {
			return nil
		}
	}
}

// findKeyframes returns, for each video stream, the sequence of the last
// keyframe seen at or before from. It reads headers only, from
// from-KeyframeLookback (doubling while a look finds video but no keyframe
// and the recording goes back further) to from+MaxStoreDelay.
func findKeyframes(ctx context.Context, js jetstream.JetStream, stream, prefix string, from time.Time, lastSeq uint64, first time.Time, st *ReadStats) (map[string]uint64, error) {
	for back := KeyframeLookback; ; back *= 2 {
		start := from.Add(-back)
		keys := map[string]uint64{}
		noKey := false
		cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{prefix + KindVideo.String() + ".>"},
			DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
			OptStartTime:   &start,
			HeadersOnly:    true,
		})
		if err != nil {
			return nil, fmt.Errorf("looking for keyframes in recording %q: %w", stream, err)
		}
		seen := map[string]bool{}
		err = consume(ctx, js, stream, cons, lastSeq, func(m jetstream.Msg, meta *jetstream.MsgMetadata) error {
			st.Messages++
			t := recTime(m.Headers(), meta)
			if t.After(from.Add(MaxStoreDelay)) {
				return errStop
			}
			if t.After(from) {
				return nil
			}
			_, name, err := ParseSubject(prefix, m.Subject())
			if err != nil {
				return nil
			}
			seen[name] = true
			h := m.Headers()
			if h.Get(HeaderKeyframe) == "1" && (h.Get(HeaderPart) == "" || h.Get(HeaderPart) == "0") {
				keys[name] = meta.Sequence.Stream
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("looking for keyframes in recording %q: %w", stream, err)
		}
		for name := range seen {
			if keys[name] == 0 {
				noKey = true
			}
		}
		if !noKey || !start.After(first) {
			return keys, nil
		}
	}
}

// firstSeqAt returns the sequence of the first record (of filters) that
// JetStream stored at or after t, up to lastSeq; 0 when there is none. It
// reads one message's headers.
func firstSeqAt(ctx context.Context, js jetstream.JetStream, stream string, filters []string, t time.Time, lastSeq uint64) (uint64, error) {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: filters,
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &t,
		HeadersOnly:    true,
	})
	if err != nil {
		return 0, fmt.Errorf("reading recording %q: %w", stream, err)
	}
	var seq uint64
	err = consume(ctx, js, stream, cons, lastSeq, func(_ jetstream.Msg, meta *jetstream.MsgMetadata) error {
		seq = meta.Sequence.Stream
		return errStop
	})
	if err != nil {
		return 0, fmt.Errorf("reading recording %q: %w", stream, err)
	}
	return seq, nil
}

func minSeq(m map[string]uint64) uint64 {
	var lo uint64
	for _, s := range m {
		if lo == 0 || s < lo {
			lo = s
		}
	}
	return lo
}

// recTime returns a message's Sdr-Rec-Time, or JetStream's timestamp.
func recTime(h nats.Header, meta *jetstream.MsgMetadata) time.Time {
	if v := h.Get(HeaderRecTime); v != "" {
		if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
			return time.Unix(0, ns)
		}
	}
	return meta.Timestamp
}

// assembly is a split frame being put back together.
type assembly struct {
	header frame.Header
	buf    []byte
	seq    uint64
	time   time.Time
}

type reader struct {
	opts    ReadOptions
	prefix  string
	keySeq  map[string]uint64
	asm     map[string]*assembly
	started map[string]bool          // video streams that delivered their first keyframe
	last    map[string]*recentFrames // the headers of each video stream's last frames
	st      *ReadStats
	fn      func(Record) error
}

func (r *reader) msg(m jetstream.Msg, meta *jetstream.MsgMetadata) error {
	r.st.Messages++
	t := recTime(m.Headers(), meta)
	if !r.opts.To.IsZero() && t.After(r.opts.To.Add(MaxStoreDelay)) {
		return errStop
	}
	kind, name, err := ParseSubject(r.prefix, m.Subject())
	if err != nil {
		r.st.Malformed++
		return nil
	}
	if kind != KindVideo {
		if !r.inWindow(t) {
			return nil
		}
		return r.deliver(Record{Kind: kind, Time: t, Subject: name, Seq: meta.Sequence.Stream, Data: m.Data()})
	}
	return r.video(m, meta, name, t)
}

func (r *reader) inWindow(t time.Time) bool {
	return (r.opts.From.IsZero() || !t.Before(r.opts.From)) && (r.opts.To.IsZero() || !t.After(r.opts.To))
}

func (r *reader) deliver(rec Record) error {
	r.st.Records++
	return r.fn(rec)
}

// video takes one video message, reassembles split frames, and delivers
// whole frames from each stream's keyframe on.
func (r *reader) video(m jetstream.Msg, meta *jetstream.MsgMetadata, name string, t time.Time) error {
	data := m.Data()
	h, err := frame.ParseHeader(data)
	if err != nil {
		r.st.Malformed++
		return nil
	}
	slice := data[frame.HeaderSize:]
	var f frame.Frame
	seq := meta.Sequence.Stream
	if p := m.Headers().Get(HeaderPart); p != "" {
		off, err := strconv.Atoi(p)
		if err != nil || off < 0 {
			r.st.Malformed++
			return nil
		}
		a := r.asm[name]
		if off == 0 {
			if a != nil {
				r.st.Incomplete++
			}
			a = &assembly{header: h, buf: make([]byte, 0, h.Size), seq: seq, time: t}
			r.asm[name] = a
		} else if a == nil || a.header != h || off != len(a.buf) {
			if a != nil {
				r.st.Incomplete++
				delete(r.asm, name)
			}
			return nil
		}
		if len(a.buf)+len(slice) > int(h.Size) {
			r.st.Incomplete++
			delete(r.asm, name)
			return nil
		}
		a.buf = append(a.buf, slice...)
		if len(a.buf) < int(h.Size) {
			return nil
		}
		delete(r.asm, name)
		f, seq, t = frame.Frame{Header: a.header, Payload: a.buf}, a.seq, a.time
	} else {
		if a := r.asm[name]; a != nil {
			r.st.Incomplete++
			delete(r.asm, name)
		}
		if int(h.Size) != len(slice) {
			r.st.Malformed++
			return nil
		}
		f = frame.Frame{Header: h, Payload: slice}
	}
	if !r.opts.To.IsZero() && t.After(r.opts.To) {
		return nil
	}
	leadIn := !r.opts.From.IsZero() && t.Before(r.opts.From)
	if ks, ok := r.keySeq[name]; leadIn && (!ok || seq < ks) {
		return nil // before this stream's keyframe at or before From
	}
	recent := r.last[name]
	if recent == nil {
		recent = &recentFrames{seen: map[frame.Header]struct{}{}}
		r.last[name] = recent
	}
	if !recent.add(f.Header) {
		r.st.Duplicates++
		return nil
	}
	if !r.started[name] {
		if !f.Header.Keyframe() {
			r.st.Undecodable++
			return nil
		}
		r.started[name] = true
	}
	f.Arrived = t
	r.st.Frames++
	if leadIn {
		r.st.LeadIn++
	}
	return r.deliver(Record{Kind: KindVideo, Time: t, Subject: name, Seq: seq, Frame: &f})
}

// DuplicateWindow is how many of a stream's latest frames Read remembers
// to skip a frame recorded again: during a reload the recorders of both
// configurations record, each publishing its gathered frames in bursts, so
// the two copies of a frame need not be stored next to each other.
const DuplicateWindow = 256

// recentFrames are the headers of a stream's last DuplicateWindow frames.
type recentFrames struct {
	ring [DuplicateWindow]frame.Header
	n    int
	seen map[frame.Header]struct{}
}

// add remembers h and reports whether it is new: false for a header among
// the last DuplicateWindow ones.
func (rf *recentFrames) add(h frame.Header) bool {
	if _, dup := rf.seen[h]; dup {
		return false
	}
	i := rf.n % DuplicateWindow
	if rf.n >= DuplicateWindow {
		delete(rf.seen, rf.ring[i])
	}
	rf.ring[i] = h
	rf.seen[h] = struct{}{}
	rf.n++
	return true
}
