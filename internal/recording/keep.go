package recording

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Keep's defaults and bounds.
const (
	// DefaultKeepBefore and DefaultKeepAfter are the window a keep copies
	// when the command names none: the last 2 minutes and the next 30 s.
	DefaultKeepBefore = 2 * time.Minute
	DefaultKeepAfter  = 30 * time.Second
	// MaxKeepBefore and MaxKeepAfter bound the window a command may ask for.
	MaxKeepBefore = 10 * time.Minute
	MaxKeepAfter  = 5 * time.Minute
	// DefaultKeepMax is how many kept windows a recording may have.
	DefaultKeepMax = 32
	// DefaultKeepMaxBytes is how many bytes its kept windows may hold.
	DefaultKeepMaxBytes = 2 << 30
	// KeepIngress is the first token of the subjects a copy publishes on;
	// the kept stream stores each record under its recorded subject.
	KeepIngress = "sdr_keep"
	// ActionKeep is the command's action.
	ActionKeep = "keep"
	// keepBatch and keepBatchBytes bound what a copy reads at once, and
	// keepInFlight the publishes it awaits: a copy shares the recorder's
	// NATS connection with the live records.
	keepBatch      = 64
	keepBatchBytes = 4 << 20
	keepInFlight   = 32
	// keepNameMax is the longest keep name.
	keepNameMax = 32
)

// Metadata keys of a kept window's JetStream stream.
const (
	MetaKeepRecording = "sdr_keep_recording"
	MetaKeepName      = "sdr_keep_name"
	MetaKeepFrom      = "sdr_keep_from"
	MetaKeepTo        = "sdr_keep_to"
	MetaKeepStream    = "sdr_keep_stream"
)

// KeepRequest is one keep: copy the window from At-Before to At+After into
// a kept stream named after Name.
type KeepRequest struct {
	// Name names the kept window ([A-Za-z0-9_-], at most 32); empty: the
	// time of the keep, keep-20261204T102233Z.
	Name string
	// Before and After bound the window around At; both zero take the
	// defaults.
	Before, After time.Duration
	// At is when the keep was asked for; zero: now.
	At time.Time
	// Stream is the sdr_stream stream whose client asked, for the record.
	Stream string
}

// Kept is a kept window.
type Kept struct {
	// Name is the keep's name.
	Name string `json:"name"`
	// Stream is the kept window's JetStream stream (caddy sdr-export
	// --stream, /stream/ws?replay=...&kept=<name>).
	Stream string `json:"stream"`
	// From and To bound the window by record time.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Bytes is what the kept stream holds.
	Bytes uint64 `json:"bytes"`
	// Copying is true while the copy runs.
	Copying bool `json:"copying,omitempty"`
}

// KeepError is a keep refused before any copy started: the message says
// why, for the client's ack.
type KeepError struct{ Reason string }

func (e *KeepError) Error() string { return e.Reason }

func refuse(format string, args ...any) error {
	return &KeepError{Reason: fmt.Sprintf(format, args...)}
}

// ValidateKeepName checks a keep's name: 1 to 32 of [A-Za-z0-9_-].
func ValidateKeepName(name string) error {
	if name == "" || len(name) > keepNameMax {
		return fmt.Errorf("keep name %q: want 1 to %d characters of [A-Za-z0-9_-]", name, keepNameMax)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("keep name %q: want 1 to %d characters of [A-Za-z0-9_-]", name, keepNameMax)
		}
	}
	return nil
}

// ParseKeep reads the data member of a keep command, {"name":"<name>",
// "before_s":<seconds>,"after_s":<seconds>}, every member optional (absent
// or null data: the defaults). The error says what is wrong, for the ack.
func ParseKeep(data []byte) (KeepRequest, error) {
	req := KeepRequest{Before: DefaultKeepBefore, After: DefaultKeepAfter}
	if len(data) == 0 || string(data) == "null" {
		return req, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return req, &KeepError{Reason: `keep: data must be an object {"name":..,"before_s":..,"after_s":..}`}
	}
	seconds := func(key string, max time.Duration) (time.Duration, bool, error) {
		raw, ok := m[key]
		if !ok || string(raw) == "null" {
			return 0, false, nil
		}
		var v float64
		if err := json.Unmarshal(raw, &v); err != nil || v < 0 || time.Duration(v*float64(time.Second)) > max {
			return 0, false, refuse("keep: %s must be a number of seconds from 0 to %g", key, max.Seconds())
		}
		return time.Duration(v * float64(time.Second)), true, nil
	}
	for key, raw := range m {
		switch key {
		case "name":
			if string(raw) != "null" {
				if err := json.Unmarshal(raw, &req.Name); err != nil {
					return req, &KeepError{Reason: "keep: name must be a string"}
				}
				if err := ValidateKeepName(req.Name); err != nil {
					return req, &KeepError{Reason: err.Error()}
				}
			}
		case "before_s", "after_s":
		default:
			return req, refuse("keep: unknown member %q in data (name, before_s, after_s)", truncateKey(key))
		}
	}
	before, hasBefore, err := seconds("before_s", MaxKeepBefore)
	if err != nil {
		return req, err
	}
	after, hasAfter, err := seconds("after_s", MaxKeepAfter)
	if err != nil {
		return req, err
	}
	if hasBefore {
		req.Before = before
	}
	if hasAfter {
		req.After = after
	}
	if req.Before+req.After <= 0 {
		return req, &KeepError{Reason: "keep: the window is empty (before_s and after_s both 0)"}
	}
	return req, nil
}

func truncateKey(k string) string {
	if len(k) > 64 {
		return k[:64]
	}
	return k
}

// KeptStreamName is the JetStream stream of the keep named name of the
// recording in stream recording: <recording>_KEEP_<name>.
func KeptStreamName(recording, name string) string { return recording + "_KEEP_" + name }

// keepState is the recorder's kept windows.
type keepState struct {
	loaded  bool
	loading bool
	windows map[string]Kept // by name
	copying string          // the name of the copy running, "" when none
}

// Keep starts copying the window of req into its kept stream and returns
// the window. It never waits on JetStream: the copy runs on its own
// goroutine, reading the recording and publishing into the kept stream, so
// live video and commands go on unchanged. The error is a *KeepError when
// the keep is refused: a bad name or window, a name already kept, the
// recorder not recording, a copy already running, or the kept windows at
// their bounds (Config.KeepMax, Config.KeepMaxBytes).
func (r *Recorder) Keep(req KeepRequest) (Kept, error) {
	if req.At.IsZero() {
		req.At = time.Now()
	}
	if req.Before == 0 && req.After == 0 {
		req.Before, req.After = DefaultKeepBefore, DefaultKeepAfter
	}
	if req.Before < 0 || req.Before > MaxKeepBefore || req.After < 0 || req.After > MaxKeepAfter {
		return Kept{}, refuse("keep window: before must be 0 to %v and after 0 to %v", MaxKeepBefore, MaxKeepAfter)
	}
	if req.Name == "" {
		req.Name = "keep-" + req.At.UTC().Format("20060102T150405Z")
	}
	if err := ValidateKeepName(req.Name); err != nil {
		return Kept{}, &KeepError{Reason: err.Error()}
	}
	if st := State(r.state.Load()); st != StateRecording {
		return Kept{}, refuse("the recorder is %s, not recording", st)
	}
	k := Kept{Name: req.Name, Stream: KeptStreamName(r.cfg.Stream.Name, req.Name),
		From: req.At.Add(-req.Before), To: req.At.Add(req.After), Copying: true}
	r.keepMu.Lock()
	defer r.keepMu.Unlock()
	ks := &r.keep
	if !ks.loaded {
		r.loadKeptLocked()
		return Kept{}, refuse("the recorder is still listing its kept windows; keep again in a moment")
	}
	if ks.copying != "" {
		return Kept{}, refuse("keep %q is still copying (until %s); keep again when it is done", ks.copying, ks.windows[ks.copying].To.UTC().Format(time.RFC3339))
	}
	if _, ok := ks.windows[k.Name]; ok {
		return Kept{}, refuse("a window named %q is kept already (stream %s): choose another name", k.Name, k.Stream)
	}
	var used uint64
	for _, w := range ks.windows {
		used += w.Bytes
	}
	if len(ks.windows) >= r.cfg.KeepMax {
		return Kept{}, refuse("%d windows are kept, keep_max is %d: delete one (nats stream rm <stream>) or raise keep_max", len(ks.windows), r.cfg.KeepMax)
	}
	if int64(used) >= r.cfg.KeepMaxBytes {
		return Kept{}, refuse("kept windows hold %d bytes, keep_max_bytes is %d: delete one (nats stream rm <stream>) or raise keep_max_bytes", used, r.cfg.KeepMaxBytes)
	}
	ks.windows[k.Name] = k
	ks.copying = k.Name
	r.wg.Add(1)
	go r.copyKept(k, req.Stream, r.cfg.KeepMaxBytes-int64(used))
	return k, nil
}

// KeptWindows returns the recording's kept windows, by start time.
func (r *Recorder) KeptWindows() []Kept {
	r.keepMu.Lock()
	out := make([]Kept, 0, len(r.keep.windows))
	for _, w := range r.keep.windows {
		out = append(out, w)
	}
	r.keepMu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].From.Before(out[j].From) })
	return out
}

// loadKeptLocked lists the kept streams of the recording on a goroutine,
// once at a time. keepMu is held.
func (r *Recorder) loadKeptLocked() {
	if r.keep.loading || r.keep.loaded || r.ctx.Err() != nil {
		return
	}
	r.keep.loading = true
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		defer cancel()
		windows, err := ListKept(ctx, r.js, r.cfg.Stream.Name)
		r.keepMu.Lock()
		defer r.keepMu.Unlock()
		r.keep.loading = false
		if err != nil {
			r.log.Warn("recorder: listing the kept windows", "error", err)
			return
		}
		r.keep.loaded = true
		if r.keep.windows == nil {
			r.keep.windows = map[string]Kept{}
		}
		for _, w := range windows {
			if _, ok := r.keep.windows[w.Name]; !ok {
				r.keep.windows[w.Name] = w
			}
		}
	}()
}

// ListKept returns the kept windows of the recording in the JetStream
// stream recording, read from their streams' metadata.
func ListKept(ctx context.Context, js jetstream.JetStream, recording string) ([]Kept, error) {
	var out []Kept
	l := js.ListStreams(ctx)
	for info := range l.Info() {
		md := info.Config.Metadata
		if md[MetaKeepRecording] != recording || md[MetaKeepName] == "" {
			continue
		}
		w := Kept{Name: md[MetaKeepName], Stream: info.Config.Name, Bytes: info.State.Bytes}
		w.From, _ = time.Parse(time.RFC3339Nano, md[MetaKeepFrom])
		w.To, _ = time.Parse(time.RFC3339Nano, md[MetaKeepTo])
		out = append(out, w)
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("listing the kept windows of recording %q: %w", recording, err)
	}
	return out, nil
}

// copyKept copies the window k into its stream, holding at most budget
// bytes, and marks the copy done.
func (r *Recorder) copyKept(k Kept, stream string, budget int64) {
	defer r.wg.Done()
	n, err := r.copyWindow(k, stream, budget)
	var bytes uint64
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if s, ierr := r.js.Stream(ctx, k.Stream); ierr == nil {
		if info, ierr := s.Info(ctx); ierr == nil {
			bytes = info.State.Bytes
		}
	}
	cancel()
	r.keepMu.Lock()
	r.keep.copying = ""
	if n == 0 && err != nil {
		delete(r.keep.windows, k.Name) // nothing kept: the name is free again
	} else {
		k.Copying, k.Bytes = false, bytes
		r.keep.windows[k.Name] = k
	}
	r.keepMu.Unlock()
	if err != nil {
		r.log.Error("recorder: keep", "name", k.Name, "stream", k.Stream, "records", n, "error", err)
		return
	}
	r.log.Info("recorder: kept", "name", k.Name, "stream", k.Stream, "from", k.From, "to", k.To, "records", n, "bytes", bytes)
}

// copyWindow creates k's stream and republishes into it, in recorded
// order, every record of the recording with From <= time <= To, and the
// video of each stream from its keyframe at or before From, so that the
// window decodes. It follows the recording live until To has passed, and
// returns the number of records copied. The kept stream has no age limit:
// the recording's retention does not touch it.
func (r *Recorder) copyWindow(k Kept, stream string, budget int64) (uint64, error) {
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	prefix := r.cfg.Stream.Prefix
	ingress := KeepIngress + "." + k.Stream + "."
	replicas := max(r.cfg.Stream.Replicas, 1)
	sc := jetstream.StreamConfig{
		Name:        k.Stream,
		Description: fmt.Sprintf("sdr-caddy kept window %q of recording %s", k.Name, r.cfg.Stream.Name),
		Subjects:    []string{ingress + ">"},
		// Stored under the recorded subjects, so that the readers of a
		// recording (replay, timeline, export) read a kept window as one.
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: ingress + ">", Destination: prefix + ">"},
		Retention:        jetstream.LimitsPolicy,
		Discard:          jetstream.DiscardNew,
		MaxBytes:         budget,
		MaxMsgs:          -1,
		Replicas:         replicas,
		Storage:          jetstream.FileStorage,
		Metadata: map[string]string{
			MetaKeepRecording: r.cfg.Stream.Name,
			MetaKeepName:      k.Name,
			MetaKeepFrom:      k.From.UTC().Format(time.RFC3339Nano),
			MetaKeepTo:        k.To.UTC().Format(time.RFC3339Nano),
			MetaKeepStream:    stream,
		},
	}
	if r.cfg.Stream.Memory {
		sc.Storage = jetstream.MemoryStorage
	}
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := r.js.CreateStream(cctx, sc)
	ccancel()
	if err != nil {
		return 0, fmt.Errorf("creating kept stream %q: %w", k.Stream, err)
	}
	var full atomic.Bool
	var pubErr atomic.Value
	js, err := jetstream.New(r.nc, jetstream.WithPublishAsyncMaxPending(keepInFlight),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			full.Store(true)
			pubErr.CompareAndSwap(nil, err)
		}), jetstream.WithPublishAsyncTimeout(MaxStoreDelay))
	if err != nil {
		return 0, fmt.Errorf("keep %q: %w", k.Name, err)
	}
	cons, keySeq, err := r.windowConsumer(ctx, k.From)
	if err != nil {
		return 0, err
	}
	if cons == nil {
		return 0, nil
	}
	// Small batches: the copy shares the recorder's NATS connection, which
	// also carries live records and, with sdr_nats, commands.
	it, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(keepBatch, int(max(keepBatchBytes, 2*r.nc.MaxPayload()))))
	if err != nil {
		return 0, fmt.Errorf("keep %q: reading the recording: %w", k.Name, err)
	}
	defer func() {
		if ci := cons.CachedInfo(); ci != nil {
			dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = r.js.DeleteConsumer(dctx, r.cfg.Stream.Name, ci.Name)
			dcancel()
		}
	}()
	// The records of the window's end are stored at most MaxStoreDelay
	// after To: follow the recording until then.
	deadline := time.NewTimer(time.Until(k.To.Add(MaxStoreDelay)))
	defer deadline.Stop()
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-deadline.C:
		case <-stopped:
		}
		it.Stop()
	}()
	defer close(stopped)
	var n uint64
	for !full.Load() {
		m, err := it.Next()
		if err != nil {
			break // the iterator was stopped: the deadline, or a reload
		}
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		t := recTime(m.Headers(), meta)
		if t.After(k.To.Add(MaxStoreDelay)) {
			break
		}
		if t.After(k.To) {
			continue
		}
		kind, name, err := ParseSubject(prefix, m.Subject())
		if err != nil {
			continue
		}
		if t.Before(k.From) && (kind != KindVideo || keySeq[name] == 0 || meta.Sequence.Stream < keySeq[name]) {
			continue // before the window, and not the lead-in to its video
		}
		out := &nats.Msg{Subject: ingress + strings.TrimPrefix(m.Subject(), prefix), Header: m.Headers(), Data: m.Data()}
		if _, err := js.PublishMsgAsync(out); err != nil {
			pubErr.CompareAndSwap(nil, err)
			break
		}
		n++
	}
	it.Stop()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * MaxStoreDelay):
		return n, fmt.Errorf("keep %q: publishes into the kept stream not acknowledged", k.Name)
	}
	if err, _ := pubErr.Load().(error); err != nil {
		return n, fmt.Errorf("keep %q: the copy stopped (keep_max_bytes reached?): %w", k.Name, err)
	}
	if r.ctx.Err() != nil {
		return n, fmt.Errorf("keep %q: the recorder stopped during the copy; what was copied is kept", k.Name)
	}
	return n, nil
}

// windowConsumer returns an ordered consumer of the recording from the
// earliest of the video keyframes at or before from (by stream, in keySeq)
// and the first record stored at or after from; nil when the recording is
// empty.
func (r *Recorder) windowConsumer(ctx context.Context, from time.Time) (jetstream.Consumer, map[string]uint64, error) {
	name, prefix := r.cfg.Stream.Name, r.cfg.Stream.Prefix
	s, err := r.js.Stream(ctx, name)
	if err != nil {
		return nil, nil, fmt.Errorf("keep: reading recording %q: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("keep: reading recording %q: %w", name, err)
	}
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + ">"}, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from}
	keySeq := map[string]uint64{}
	if info.State.Msgs > 0 {
		var st ReadStats
		keySeq, err = findKeyframes(ctx, r.js, name, prefix, from, info.State.LastSeq, info.State.FirstTime, &st)
		if err != nil {
			return nil, nil, fmt.Errorf("keep: %w", err)
		}
		if start := minSeq(keySeq); start != 0 {
			if seq, err := firstSeqAt(ctx, r.js, name, cc.FilterSubjects, from, info.State.LastSeq); err != nil {
				return nil, nil, fmt.Errorf("keep: %w", err)
			} else if seq != 0 && seq < start {
				start = seq
			}
			cc.DeliverPolicy, cc.OptStartTime, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, nil, start
		}
	}
	cons, err := r.js.OrderedConsumer(ctx, name, cc)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("keep: reading recording %q: %w", name, err)
	}
	return cons, keySeq, nil
}
