package timeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/internal/recording"
)

// maxProbes is how many records an update reads one by one (a direct get
// each) before it reads the rest through a consumer: a poll a second
// finds a few new commands, where a consumer's set-up costs more than the
// gets; a first read finds the whole recording.
const maxProbes = 32

// Cache keeps each stream's timeline between reads, so that players that
// poll it read only what was recorded since the last read. Each entry is
// keyed by the JetStream stream's state: its creation time, first and last
// sequence. Unchanged, the timeline is returned as it is; with new
// records, only the command and gate records after the last sequence read
// are read, and the last frame's time looked up; when retention dropped
// records (the first sequence moved on), the markers of the dropped
// records go and the first frame is looked up again. A recreated stream
// (another creation time, or a last sequence that went back) is read
// afresh. The timeline Cache.Read returns is the one Read would return.
//
// The zero Cache is ready to use; it is safe for concurrent use. Reads of
// one stream wait for each other, so that players polling together cost
// one update.
type Cache struct {
	mu      sync.Mutex
	entries map[Options]*entry
}

// entry is one stream's cached timeline; mu is held while it is read or
// updated.
type entry struct {
	mu sync.Mutex
	state
}

// state is what an entry keeps.
type state struct {
	// created, first and last are the JetStream stream's creation time
	// and first and last sequences when the entry was updated; last is 0
	// before the first update.
	created     time.Time
	first, last uint64
	// start and end are the first and last video records of the stream;
	// nil when none is stored.
	start, end *stamp
	// gates are the gate records with a mode, rejected the refused
	// commands' markers, both in sequence order.
	gates    []gateRecord
	rejected []seqMarker
	tl       Timeline
}

type stamp struct {
	seq uint64
	t   time.Time
}

type gateRecord struct {
	stamp
	mode string
}

type seqMarker struct {
	seq uint64
	m   Marker
}

// rawRecord is a command or gate message as read, by direct get or from a
// consumer.
type rawRecord struct {
	seq     uint64
	subject string
	t       time.Time
	data    []byte
}

// Read returns the timeline of opts.Stream in the recording as it is now,
// like Read, from the cache when the recording did not change. The
// returned Markers are shared with the cache and later callers: do not
// modify them.
func (c *Cache) Read(ctx context.Context, js jetstream.JetStream, opts Options) (Timeline, error) {
	if opts.Recording == "" {
		opts.Recording = recording.DefaultStream
	}
	opts.Prefix = recording.NormPrefix(opts.Prefix)
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[Options]*entry{}
	}
	e := c.entries[opts]
	if e == nil {
		e = &entry{}
		c.entries[opts] = e
	}
	c.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	tl, err := e.update(ctx, js, opts)
	if err != nil {
		// Whatever was half done is not trusted: read afresh next time.
		e.state = state{}
		return Timeline{Markers: []Marker{}}, err
	}
	return tl, nil
}

// update brings the entry up to the recording's state and returns the
// timeline.
func (e *entry) update(ctx context.Context, js jetstream.JetStream, opts Options) (Timeline, error) {
	s, err := js.Stream(ctx, opts.Recording)
	if err != nil {
		return Timeline{}, fmt.Errorf("reading the timeline of recording %q: %w", opts.Recording, err)
	}
	info := s.CachedInfo()
	st := info.State
	if !info.Created.Equal(e.created) || st.LastSeq < e.last || (e.last != 0 && st.FirstSeq > e.last+1) {
		// Another stream of the same name, or everything read is gone.
		e.state = state{created: info.Created}
	}
	if e.last != 0 && st.FirstSeq == e.first && st.LastSeq == e.last {
		return e.tl, nil
	}
	if st.Msgs == 0 || st.LastSeq < st.FirstSeq {
		e.state = state{created: info.Created, first: st.FirstSeq, last: st.LastSeq, tl: Timeline{Markers: []Marker{}}}
		return e.tl, nil
	}
	if err := e.extent(ctx, s, opts, st); err != nil {
		return Timeline{}, err
	}
	e.trim(st.FirstSeq)
	from := max(e.last+1, st.FirstSeq)
	if from <= st.LastSeq {
		if err := e.readMarkers(ctx, js, s, opts, from, st.LastSeq); err != nil {
			return Timeline{}, err
		}
	}
	e.first, e.last = st.FirstSeq, st.LastSeq
	e.build()
	return e.tl, nil
}

// extent updates the first and last video records of the stream.
func (e *entry) extent(ctx context.Context, s jetstream.Stream, opts Options, st jetstream.StreamState) error {
	video := recording.Subject(opts.Prefix, recording.KindVideo, opts.Stream)
	// With no frame of the stream before, only the new records may hold
	// the first; a first frame dropped is looked for from the first record.
	from := max(e.last+1, st.FirstSeq)
	if e.start != nil && e.start.seq < st.FirstSeq {
		e.start, e.end = nil, nil
		from = st.FirstSeq
	}
	if e.start == nil {
		m, err := s.GetMsg(ctx, from, jetstream.WithGetMsgSubject(video))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return nil // no video of the stream (yet)
		case err != nil:
			return fmt.Errorf("reading the first frame of %q in recording %q: %w", opts.Stream, opts.Recording, err)
		}
		e.start = &stamp{m.Sequence, recTime(m)}
	}
	if e.end == nil || e.end.seq < st.LastSeq {
		m, err := s.GetLastMsgForSubject(ctx, video)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			e.start, e.end = nil, nil // dropped since
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the last frame of %q in recording %q: %w", opts.Stream, opts.Recording, err)
		}
		e.end = &stamp{m.Sequence, recTime(m)}
	}
	return nil
}

// trim drops the gate records and markers that retention dropped.
func (e *entry) trim(first uint64) {
	g := sort.Search(len(e.gates), func(i int) bool { return e.gates[i].seq >= first })
	e.gates = append(e.gates[:0:0], e.gates[g:]...)
	r := sort.Search(len(e.rejected), func(i int) bool { return e.rejected[i].seq >= first })
	e.rejected = append(e.rejected[:0:0], e.rejected[r:]...)
}

// readMarkers reads the stream's command records and the gate records
// stored from sequence from to last: one by one by direct get while few,
// the rest through an ordered consumer.
func (e *entry) readMarkers(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, opts Options, from, last uint64) error {
	cmdSubject := recording.Subject(opts.Prefix, recording.KindCommand, opts.Stream)
	gateSubject := recording.Subject(opts.Prefix, recording.KindGate, ">")
	next := func(subject string, seq uint64) (*jetstream.RawStreamMsg, error) {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && m.Sequence > last) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading the markers of recording %q: %w", opts.Recording, err)
		}
		return m, nil
	}
	cmd, err := next(cmdSubject, from)
	if err != nil {
		return err
	}
	gate, err := next(gateSubject, from)
	if err != nil {
		return err
	}
	for range maxProbes {
		var m *jetstream.RawStreamMsg
		switch {
		case cmd == nil && gate == nil:
			return nil
		case gate == nil || (cmd != nil && cmd.Sequence < gate.Sequence):
			m = cmd
			if cmd, err = next(cmdSubject, m.Sequence+1); err != nil {
				return err
			}
		default:
			m = gate
			if gate, err = next(gateSubject, m.Sequence+1); err != nil {
				return err
			}
		}
		e.add(opts, rawRecord{seq: m.Sequence, subject: m.Subject, t: recTime(m), data: m.Data})
		from = m.Sequence + 1
	}
	// Many new records: the rest through a consumer.
	if cmd == nil && gate == nil {
		return nil
	}
	if cmd != nil {
		from = cmd.Sequence
	}
	if gate != nil && (cmd == nil || gate.Sequence < from) {
		from = gate.Sequence
	}
	return e.consume(ctx, js, opts, []string{cmdSubject, gateSubject}, from, last)
}

// consume reads the records of subjects from sequence from to last through
// an ordered consumer, deleted when done.
func (e *entry) consume(ctx context.Context, js jetstream.JetStream, opts Options, subjects []string, from, last uint64) error {
	cons, err := js.OrderedConsumer(ctx, opts.Recording, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
	})
	if err != nil {
		return fmt.Errorf("reading the markers of recording %q: %w", opts.Recording, err)
	}
	defer func() {
		if ci := cons.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = js.DeleteConsumer(dctx, opts.Recording, ci.Name)
			cancel()
		}
	}()
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return nil
	}
	for {
		// Every message up to last is stored: a fetch that finds none
		// has read them all.
		batch, err := cons.FetchNoWait(512)
		if err != nil {
			return fmt.Errorf("reading the markers of recording %q: %w", opts.Recording, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			seq := meta.Sequence.Stream
			if seq > last {
				return nil
			}
			e.add(opts, rawRecord{seq: seq, subject: m.Subject(), t: msgTime(m.Headers(), meta.Timestamp), data: m.Data()})
			if seq == last || meta.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("reading the markers of recording %q: %w", opts.Recording, err)
		}
		if n == 0 {
			return nil
		}
	}
}

// add takes one command or gate record, as Read does.
func (e *entry) add(opts Options, r rawRecord) {
	kind, name, err := recording.ParseSubject(opts.Prefix, r.subject)
	if err != nil {
		return
	}
	switch kind {
	case recording.KindGate:
		if mode := gateMode(r.data); mode != "" {
			e.gates = append(e.gates, gateRecord{stamp{r.seq, r.t}, mode})
		}
	case recording.KindCommand:
		if name != opts.Stream {
			return
		}
		if m, ok := rejectedMarker(r.t, r.data); ok {
			e.rejected = append(e.rejected, seqMarker{r.seq, m})
		}
	}
}

// build makes the timeline from the entry: the extent, and the gate's
// transitions merged with the refused commands in recorded order.
func (e *entry) build() {
	tl := Timeline{Markers: make([]Marker, 0, len(e.rejected)+8)}
	if e.start != nil && e.end != nil {
		start, end := e.start.t, e.end.t
		tl.Start, tl.End = &start, &end
	}
	mode := ""
	r := 0
	for _, g := range e.gates {
		for r < len(e.rejected) && e.rejected[r].seq < g.seq {
			tl.Markers = append(tl.Markers, e.rejected[r].m)
			r++
		}
		if m, ok := gateTransition(&mode, g.t, g.mode); ok {
			tl.Markers = append(tl.Markers, m)
		}
	}
	for ; r < len(e.rejected); r++ {
		tl.Markers = append(tl.Markers, e.rejected[r].m)
	}
	e.tl = tl
}

// msgTime is a message's Sdr-Rec-Time, ts without one.
func msgTime(h nats.Header, ts time.Time) time.Time {
	if v := h.Get(recording.HeaderRecTime); v != "" {
		if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
			return time.Unix(0, ns).UTC()
		}
	}
	return ts.UTC()
}

// gateMode is the mode a gate record's body states, "" when it states
// none (not JSON, or gated without a mode). {"gated":false}, which the
// gate publishes when the video comes back, is mode ARMED.
func gateMode(data []byte) string {
	var g struct {
		Gated *bool  `json:"gated"`
		Mode  string `json:"mode"`
	}
	if json.Unmarshal(data, &g) != nil {
		return ""
	}
	if g.Mode == "" && g.Gated != nil && !*g.Gated {
		return "ARMED"
	}
	return g.Mode
}

// gateTransition returns the marker of a gate record of mode after the
// mode before it, *prev, which it updates: a mode that differs from the
// one before, the first one when it is not ARMED.
func gateTransition(prev *string, t time.Time, mode string) (Marker, bool) {
	before := *prev
	*prev = mode
	if mode != before && (before != "" || mode != "ARMED") {
		return Marker{Time: t, Kind: KindGate, Mode: mode}, true
	}
	return Marker{}, false
}

// rejectedMarker returns the marker of a command record that was rejected
// or gated.
func rejectedMarker(t time.Time, data []byte) (Marker, bool) {
	var c recording.CommandBody
	if json.Unmarshal(data, &c) != nil {
		return Marker{}, false
	}
	if c.Outcome != recording.OutcomeRejected && c.Outcome != recording.OutcomeGated {
		return Marker{}, false
	}
	return Marker{Time: t, Kind: KindRejected, Action: c.Action, Outcome: c.Outcome, Reason: c.Reason}, true
}
