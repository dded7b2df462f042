package recording

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// Defaults of a Recorder.
const (
	// DefaultIDRInterval is how often the recorder asks a stream's producer
	// for a keyframe when none came in that time.
	DefaultIDRInterval = 2 * time.Second
	// DefaultQueue is how many frames of one stream (and how many other
	// records) may wait for the recorder before new ones are dropped.
	DefaultQueue = 256
	// DefaultMaxInFlight bounds the asynchronous publishes awaiting
	// JetStream's acknowledgement.
	DefaultMaxInFlight = 256
	// DefaultBatch is how long the recorder gathers a stream's frames
	// before it publishes them one after another: JetStream then takes
	// them (and answers their acknowledgement) in one burst instead of
	// waking the client, the server, the stream and the store once per
	// frame. At 60 frames/s, bursts every 100 ms cost about as much CPU as
	// the frames' bytes; every 500 ms, the recorder cost a third less in
	// all (docs/recorder.md). A burst in flight when JetStream restarts
	// may be lost, so this stays well below a second.
	DefaultBatch = 500 * time.Millisecond
	// DefaultMaxAge and DefaultMaxBytes are the dashcam's limits.
	DefaultMaxAge   = 10 * time.Minute
	DefaultMaxBytes = 2 << 30
	// GateSubject is where the safety gate publishes its state.
	GateSubject = "telemetry.safety.video_gate"
)

// DefaultSubjects are the telemetry subjects recorded by default: those
// the relay forwards by default.
var DefaultSubjects = []string{"telemetry.>"}

// Config sets up a Recorder. Zero fields take the defaults.
type Config struct {
	// Stream is the recording's JetStream stream and its limits.
	Stream StreamConfig
	// IDRInterval is how often a stream's producer is asked for a keyframe
	// when none came in that time; negative: never.
	IDRInterval time.Duration
	// Queue is how many frames of one stream, and how many other records,
	// may wait to be published before new ones are dropped.
	Queue int
	// MaxInFlight bounds the publishes awaiting JetStream's acknowledgement.
	MaxInFlight int
	// Batch is how long a stream's frames are gathered before they are
	// published (each still its own message); zero takes DefaultBatch,
	// negative publishes each frame when it comes. It must stay well
	// below MaxStoreDelay.
	Batch time.Duration
	// Subjects are the telemetry subjects (NATS patterns) recorded; nil
	// takes DefaultSubjects. The gate's subject is recorded as gate records.
	Subjects []string
	// KeepMax bounds the number of kept windows (Recorder.Keep); default
	// DefaultKeepMax.
	KeepMax int
	// KeepMaxBytes bounds the bytes the kept windows hold together; default
	// DefaultKeepMaxBytes.
	KeepMaxBytes int64
	// Logger receives the recorder's logs; nil discards them.
	Logger *slog.Logger
}

// State is the recorder's state.
type State int32

// The recorder's states.
const (
	// StateStarting: the recording's stream is not set up yet.
	StateStarting State = iota
	// StateRecording: records are published.
	StateRecording
	// StateStopped: JetStream ran out of storage; nothing is recorded until
	// the configuration is loaded again.
	StateStopped
	// StateClosed: Close was called.
	StateClosed
	// StatePaused: recording, paused by the operator (Pause): records are
	// neither taken nor counted as dropped, and no keyframe is asked for,
	// until Resume. Stats report it; the recorder's own state stays
	// StateRecording (or StateStarting) underneath.
	StatePaused
)

func (s State) String() string {
	switch s {
	case StateStarting:
		return "starting"
	case StateRecording:
		return "recording"
	case StateStopped:
		return "stopped"
	case StateClosed:
		return "closed"
	case StatePaused:
		return "paused"
	}
	return fmt.Sprintf("state(%d)", int32(s))
}

// Stats are a Recorder's counters.
type Stats struct {
	State State
	// Records counts the records published, by kind (index Kind).
	Records [4]uint64
	// Frames counts the frames published, by stream.
	Frames map[string]uint64
	// Bytes counts the bytes of the bodies published.
	Bytes uint64
	// Dropped counts the records dropped (a full queue, not recording), by kind.
	Dropped [4]uint64
	// Errors counts the records JetStream refused or did not acknowledge
	// (for video, every message of a burst whose acknowledgement failed).
	Errors uint64
	// KeyframeRequests counts the keyframes asked for by the recorder.
	KeyframeRequests uint64
}

// Recorder records video, telemetry, commands and gate transitions into
// a JetStream stream. Live video and commands never wait for it: frames
// and other records go through bounded queues, and a full queue drops.
type Recorder struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	cfg Config
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	state atomic.Int32
	// paused is set by Pause, cleared by Resume, under pauseMu.
	paused  atomic.Bool
	pauseMu sync.Mutex
	// recording is closed when the recorder first records: until then
	// (setting up the stream) records wait in the queues.
	recording chan struct{}
	events    chan *nats.Msg
	subs      []*nats.Subscription
	subsMu    sync.Mutex
	streams   sync.Map // name -> *videoStream
	attachMu  sync.Mutex

	records, dropped       [4]atomic.Uint64
	bytes, errs, keyframes atomic.Uint64
	lastErrLog             atomic.Int64
	// bursts holds, for the acknowledged last message of each video
	// burst in flight, how many messages its acknowledgement stands for.
	bursts sync.Map // *nats.Msg -> int

	keepMu sync.Mutex
	keep   keepState
}

// New returns a recorder on nc; Start sets up the stream and begins.
func New(nc *nats.Conn, cfg Config) (*Recorder, error) {
	if nc == nil {
		return nil, errors.New("recorder: no nats connection")
	}
	if cfg.Stream.Name == "" {
		cfg.Stream.Name = DefaultStream
	}
	cfg.Stream.Prefix = NormPrefix(cfg.Stream.Prefix)
	if cfg.IDRInterval == 0 {
		cfg.IDRInterval = DefaultIDRInterval
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Batch >= MaxStoreDelay {
		return nil, fmt.Errorf("recorder: batch %s: must be below %s, the longest a record may wait to be stored", cfg.Batch, MaxStoreDelay)
	}
	if cfg.Subjects == nil {
		cfg.Subjects = DefaultSubjects
	}
	if cfg.KeepMax <= 0 {
		cfg.KeepMax = DefaultKeepMax
	}
	if cfg.KeepMaxBytes <= 0 {
		cfg.KeepMaxBytes = DefaultKeepMaxBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{nc: nc, cfg: cfg, log: cfg.Logger, events: make(chan *nats.Msg, cfg.Queue), recording: make(chan struct{})}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxInFlight),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) { r.fail(m, err) }),
		jetstream.WithPublishAsyncTimeout(MaxStoreDelay))
	if err != nil {
		return nil, fmt.Errorf("recorder: %w", err)
	}
	r.js = js
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// JetStream returns the recorder's JetStream client.
func (r *Recorder) JetStream() jetstream.JetStream { return r.js }

// Start sets up the recording's stream, retrying until JetStream answers,
// then subscribes to telemetry and the gate and begins publishing. It
// returns at once.
func (r *Recorder) Start() {
	r.wg.Add(2)
	go r.run()
	go r.publishEvents()
}

func (r *Recorder) run() {
	defer r.wg.Done()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		_, err := EnsureStream(ctx, r.js, r.cfg.Stream)
		cancel()
		if err == nil {
			break
		}
		if r.ctx.Err() != nil {
			return
		}
		r.log.Warn("recorder: setting up the recording stream, retrying", "stream", r.cfg.Stream.Name, "error", err, "retry_in", wait)
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	if err := r.subscribe(); err != nil {
		r.log.Error("recorder: not recording", "error", err)
		return
	}
	if r.state.CompareAndSwap(int32(StateStarting), int32(StateRecording)) {
		close(r.recording)
		r.log.Info("recorder: recording", "stream", r.cfg.Stream.Name, "prefix", r.cfg.Stream.Prefix,
			"max_age", r.cfg.Stream.MaxAge, "max_bytes", r.cfg.Stream.MaxBytes)
	}
	r.keepMu.Lock()
	r.loadKeptLocked()
	r.keepMu.Unlock()
}

// subscribe takes the telemetry subjects and the gate's.
func (r *Recorder) subscribe() error {
	r.subsMu.Lock()
	defer r.subsMu.Unlock()
	add := func(subject string, fn nats.MsgHandler) error {
		s, err := r.nc.Subscribe(subject, fn)
		if err != nil {
			return fmt.Errorf("subscribing to %q: %w", subject, err)
		}
		// Lossy like the relay: a recorder that falls behind drops.
		_ = s.SetPendingLimits(r.cfg.Queue*4, 64<<20)
		r.subs = append(r.subs, s)
		return nil
	}
	gateCovered := false
	for _, subj := range r.cfg.Subjects {
		if err := add(subj, r.telemetry); err != nil {
			return err
		}
		if SubjectMatches(subj, GateSubject) {
			gateCovered = true
		}
	}
	if !gateCovered {
		return add(GateSubject, r.telemetry)
	}
	return nil
}

// telemetry records one NATS message: the gate's as a gate record, the
// others as telemetry.
func (r *Recorder) telemetry(m *nats.Msg) {
	now := time.Now()
	if m.Subject == GateSubject {
		r.enqueue(KindGate, GateMsg(r.cfg.Stream.Prefix, m.Subject, m.Data, now))
		return
	}
	if !r.covered(m.Subject) {
		return // the gate's own subscription
	}
	r.enqueue(KindTelemetry, TelemetryMsg(r.cfg.Stream.Prefix, m.Subject, m.Data, now))
}

func (r *Recorder) covered(subject string) bool {
	for _, p := range r.cfg.Subjects {
		if SubjectMatches(p, subject) {
			return true
		}
	}
	return false
}

// SubjectMatches reports whether the NATS pattern p (with * and >) matches subject.
func SubjectMatches(p, subject string) bool {
	pt, st := splitTokens(p), splitTokens(subject)
	for i, t := range pt {
		if t == ">" {
			return len(st) > i
		}
		if i >= len(st) || (t != "*" && t != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}

func splitTokens(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

// enqueue hands a non-video record to the publisher, or drops it.
func (r *Recorder) enqueue(k Kind, m *nats.Msg) {
	if !r.take(k) {
		return
	}
	select {
	case r.events <- m:
	default:
		r.dropped[k].Add(1)
	}
}

func (r *Recorder) publishEvents() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case m := <-r.events:
			if !r.waitRecording(r.ctx) {
				return
			}
			k, _, err := ParseSubject(r.cfg.Stream.Prefix, m.Subject)
			if err != nil {
				continue
			}
			r.publish(k, m)
		}
	}
}

// take reports whether a record of kind k is taken into the queues: while
// recording, and while the stream is set up (they wait in the queue), but
// not while paused. A record not taken is counted as dropped, unless the
// recorder is paused.
func (r *Recorder) take(k Kind) bool {
	if r.paused.Load() {
		return false
	}
	if s := State(r.state.Load()); s == StateRecording || s == StateStarting {
		return true
	}
	r.dropped[k].Add(1)
	return false
}

// Pause stops taking records until Resume: video frames, telemetry,
// commands and gate transitions that come meanwhile are not recorded, and
// no keyframe is asked for. What was taken before is still written, and a
// keep may still copy what is recorded. It reports whether the recorder was
// not paused already.
func (r *Recorder) Pause() bool {
	r.pauseMu.Lock()
	defer r.pauseMu.Unlock()
	if r.paused.Load() {
		return false
	}
	r.paused.Store(true)
	r.log.Info("recorder: paused", "stream", r.cfg.Stream.Name)
	return true
}

// Resume takes records again after Pause. Each stream's recording goes on
// at its next keyframe, which the recorder asks its producer for, so that
// what follows the gap decodes. It reports whether the recorder was paused.
func (r *Recorder) Resume() bool {
	r.pauseMu.Lock()
	defer r.pauseMu.Unlock()
	if !r.paused.Load() {
		return false
	}
	// Before the pause ends: no stream's delta may slip in before the wait.
	r.streams.Range(func(_, s any) bool {
		s.(*videoStream).keyWait.Store(true)
		return true
	})
	r.paused.Store(false)
	r.streams.Range(func(_, s any) bool {
		select {
		case s.(*videoStream).resumed <- struct{}{}:
		default:
		}
		return true
	})
	r.log.Info("recorder: resumed", "stream", r.cfg.Stream.Name)
	return true
}

// waitRecording waits until the recorder first records, or ctx ends.
func (r *Recorder) waitRecording(ctx context.Context) bool {
	select {
	case <-r.recording:
		return true
	case <-ctx.Done():
		return false
	}
}

// publish sends one message asynchronously; it waits only when
// MaxInFlight publishes are unacknowledged (the recorder's own goroutines
// wait, never a live path).
func (r *Recorder) publish(k Kind, m *nats.Msg) bool {
	if State(r.state.Load()) != StateRecording {
		r.dropped[k].Add(1)
		return false
	}
	if _, err := r.js.PublishMsgAsync(m); err != nil {
		r.fail(m, err)
		return false
	}
	r.records[k].Add(1)
	r.bytes.Add(uint64(len(m.Data)))
	return true
}

// fail counts a publish JetStream refused; running out of storage stops
// the recording.
func (r *Recorder) fail(m *nats.Msg, err error) {
	n := uint64(1)
	if b, ok := r.bursts.LoadAndDelete(m); m != nil && ok {
		n = uint64(b.(int))
	}
	r.errs.Add(n)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == errCodeStoreFailed ||
		apiErr.ErrorCode == errCodeInsufficientResources || apiErr.ErrorCode == errCodeStorageResourcesExceeded) {
		if r.state.CompareAndSwap(int32(StateRecording), int32(StateStopped)) {
			r.log.Error("recorder: JetStream is out of storage, recording stopped; free space or lower max_bytes, then reload",
				"stream", r.cfg.Stream.Name, "error", err)
		}
		return
	}
	now := time.Now().UnixNano()
	if last := r.lastErrLog.Load(); now-last > int64(time.Second) && r.lastErrLog.CompareAndSwap(last, now) {
		subject := ""
		if m != nil {
			subject = m.Subject
		}
		r.log.Warn("recorder: publishing a record", "subject", subject, "error", err)
	}
}

// JetStream error codes of a server out of storage.
const (
	errCodeInsufficientResources    jetstream.ErrorCode = 10023
	errCodeStoreFailed              jetstream.ErrorCode = 10077
	errCodeStorageResourcesExceeded jetstream.ErrorCode = 10047
)

// videoStream is one stream's frames on their way to JetStream.
type videoStream struct {
	r       *Recorder
	name    string
	ch      chan frame.Frame
	kr      frame.KeyframeRequester
	frames  atomic.Uint64
	lastKey atomic.Int64 // when the last keyframe came, Unix ns
	stop    func()
	cancel  context.CancelFunc
	done    chan struct{}
	refs    int // handlers attached; guarded by Recorder.attachMu
	// keyWait is set by Resume: the stream's frames are skipped until its
	// next keyframe, which resumed asks run to request.
	keyWait atomic.Bool
	resumed chan struct{}

	// acks are the bursts awaiting JetStream's acknowledgement, oldest
	// first; only run's goroutine touches them.
	acks []burstAck
	// msgs and buf hold a burst's messages and their data while it is
	// published (writeBurst), kept for the next one; run's goroutine only.
	msgs []*nats.Msg
	buf  []byte
}

// maxBurstBuf bounds the memory a stream keeps between bursts for the
// next one's messages; a larger burst's is left to the collector.
const maxBurstBuf = 16 << 20

// burstAck is the acknowledgement of a burst's last message.
type burstAck struct {
	m *nats.Msg
	f jetstream.PubAckFuture
}

// AttachStream records the frames of a stream's source under name, and
// asks kr (nil: nobody) for a keyframe every IDRInterval when none came.
// The source's goroutine never waits: a frame that finds the stream's
// queue full is dropped and counted. detach stops recording the stream.
//
// Several handlers may serve one stream (the same name on two sites):
// each attaches, the first one's source is recorded, and the stream is
// recorded until the last of them detaches.
func (r *Recorder) AttachStream(name string, src frame.Source, kr frame.KeyframeRequester) (detach func(), err error) {
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("recording stream: %w", err)
	}
	if src == nil {
		return nil, fmt.Errorf("recording stream %q: no source", name)
	}
	r.attachMu.Lock()
	defer r.attachMu.Unlock()
	if r.ctx.Err() != nil {
		return nil, fmt.Errorf("recording stream %q: the recorder is closed", name)
	}
	var v *videoStream
	if old, ok := r.streams.Load(name); ok {
		v = old.(*videoStream)
	} else {
		ctx, cancel := context.WithCancel(r.ctx)
		v = &videoStream{r: r, name: name, ch: make(chan frame.Frame, r.cfg.Queue), kr: kr, cancel: cancel,
			done: make(chan struct{}), resumed: make(chan struct{}, 1)}
		r.streams.Store(name, v)
		v.lastKey.Store(time.Now().UnixNano())
		go v.run(ctx)
		v.stop = src.Subscribe(v.enqueue)
	}
	v.refs++
	var once sync.Once
	return func() {
		once.Do(func() {
			r.attachMu.Lock()
			v.refs--
			last := v.refs == 0
			if last {
				r.streams.CompareAndDelete(name, v)
			}
			r.attachMu.Unlock()
			if last {
				v.stop()
				v.cancel()
				<-v.done
			}
		})
	}, nil
}

// enqueue runs on the source's goroutine and never waits.
func (v *videoStream) enqueue(f frame.Frame) {
	if f.Arrived.IsZero() {
		f.Arrived = time.Now()
	}
	if f.Header.Keyframe() {
		v.lastKey.Store(f.Arrived.UnixNano())
	}
	if !v.r.take(KindVideo) {
		return
	}
	if v.keyWait.Load() {
		if !f.Header.Keyframe() {
			return // after a pause: the recording goes on at a keyframe
		}
		v.keyWait.Store(false)
	}
	select {
	case v.ch <- f:
	default:
		v.r.dropped[KindVideo].Add(1)
	}
}

func (v *videoStream) run(ctx context.Context) {
	defer close(v.done)
	defer func() {
		if p := recover(); p != nil {
			v.r.log.Error("recorder: stream writer stopped by a panic", "stream", v.name, "panic", fmt.Sprint(p))
		}
	}()
	var tick <-chan time.Time
	if v.r.cfg.IDRInterval > 0 && v.kr != nil {
		t := time.NewTicker(v.r.cfg.IDRInterval / 2)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			v.writeBurst(nil) // detached or closed: what came is still recorded
			return
		case f := <-v.ch:
			if !v.r.waitRecording(ctx) {
				v.writeBurst(&f) // closed while setting up: counted as dropped
				return
			}
			if v.r.cfg.Batch > 0 {
				v.gather(ctx)
			}
			v.writeBurst(&f)
		case <-v.resumed:
			if v.kr != nil && v.keyWait.Load() {
				v.r.keyframes.Add(1)
				v.kr.RequestKeyframe()
			}
		case now := <-tick:
			if State(v.r.state.Load()) == StateRecording && !v.r.paused.Load() && now.Sub(time.Unix(0, v.lastKey.Load())) >= v.r.cfg.IDRInterval {
				v.r.keyframes.Add(1)
				v.kr.RequestKeyframe()
			}
		}
	}
}

// gather waits Batch (or until ctx ends) after a frame came, so that the
// frames that come meanwhile are published with it in one burst. The
// queue holds them meanwhile; a queue that fills up drops as before.
func (v *videoStream) gather(ctx context.Context) {
	t := time.NewTimer(v.r.cfg.Batch)
	select {
	case <-ctx.Done():
		t.Stop()
	case <-t.C:
	}
}

// writeBurst publishes first (nil: none) and the frames waiting in the
// queue as one burst, each message its own record. Only the burst's last
// message asks JetStream for an acknowledgement: the messages of one
// connection are stored in the order they were sent, so that one
// acknowledgement tells the burst was taken (or, failing, counts every
// message of it as an error), and a full MaxInFlight of bursts in flight
// holds the writer back. Acknowledging each message instead cost a third
// of the recorder's CPU.
func (v *videoStream) writeBurst(first *frame.Frame) {
	v.pruneAcks()
	recording := State(v.r.state.Load()) == StateRecording
	msgs, buf := v.msgs[:0], v.buf[:0]
	defer func() {
		// The client copied what it published: the next burst builds its
		// messages in the same memory. The last message, which the
		// acknowledgement's future holds (and may publish again), has
		// its own copy.
		clear(msgs)
		if cap(buf) > maxBurstBuf {
			buf = nil
		}
		v.msgs, v.buf = msgs[:0], buf[:0]
	}()
	frames := 0
	add := func(f frame.Frame) {
		if !recording {
			v.r.dropped[KindVideo].Add(1)
			return
		}
		var err error
		msgs, buf, err = AppendVideoMsgs(msgs, buf, v.r.cfg.Stream.Prefix, v.name, f, f.Arrived, v.r.nc.MaxPayload())
		if err != nil {
			v.r.fail(nil, err)
			return
		}
		frames++
	}
	if first != nil {
		add(*first)
	}
	for n := len(v.ch); n > 0; n-- {
		add(<-v.ch)
	}
	if len(msgs) == 0 {
		return
	}
	last := msgs[len(msgs)-1]
	last.Data = bytes.Clone(last.Data)
	for _, m := range msgs[:len(msgs)-1] {
		if err := v.r.nc.PublishMsg(m); err != nil {
			// The connection is closed: none of the burst goes. fail
			// counts one of its messages.
			v.r.errs.Add(uint64(len(msgs) - 1))
			v.r.fail(nil, err)
			return
		}
	}
	v.r.bursts.Store(last, len(msgs))
	f, err := v.r.js.PublishMsgAsync(last)
	if err != nil {
		v.r.fail(last, err)
		return
	}
	v.acks = append(v.acks, burstAck{m: last, f: f})
	for _, m := range msgs {
		v.r.bytes.Add(uint64(len(m.Data)))
	}
	v.frames.Add(uint64(frames))
	v.r.records[KindVideo].Add(uint64(frames))
}

// pruneAcks forgets the bursts JetStream acknowledged; a failed one is
// counted and forgotten by the error handler (Recorder.fail).
func (v *videoStream) pruneAcks() {
	for len(v.acks) > 0 {
		a := v.acks[0]
		select {
		case <-a.f.Ok():
			v.r.bursts.Delete(a.m)
		case <-a.f.Err():
		default:
			return
		}
		v.acks[0] = burstAck{}
		v.acks = v.acks[1:]
	}
}

// RecordCommand records a command of stream's client after the command
// path judged it: reply is what the path answered the client (nil: the
// command was published; otherwise the 0x02 message on
// telemetry.command.ack). It never waits.
func (r *Recorder) RecordCommand(stream, client string, body, reply []byte) {
	if !r.take(KindCommand) {
		return
	}
	now := time.Now()
	c := CommandBody{Payload: append(json.RawMessage(nil), body...), Outcome: OutcomePublished, Client: client}
	var cmd struct {
		Action json.RawMessage `json:"action"`
	}
	if json.Unmarshal(body, &cmd) == nil {
		var a string
		if json.Unmarshal(cmd.Action, &a) == nil {
			c.Action = a
		}
	}
	if reply != nil {
		c.Outcome, c.Reason = outcomeOf(reply)
		if c.Action == ActionKeep && c.Outcome == OutcomeControl {
			c.Outcome = OutcomeKept
		}
	}
	m, err := CommandMsg(r.cfg.Stream.Prefix, stream, c, now)
	if err != nil {
		r.fail(nil, err)
		return
	}
	r.enqueue(KindCommand, m)
}

// outcomeOf reads the outcome of a command from the ack the command path
// answered.
func outcomeOf(reply []byte) (outcome, reason string) {
	var a struct {
		Status string `json:"status"`
		Detail string `json:"detail"`
	}
	if _, payload, err := wire.ParseTelemetry(reply); err == nil {
		_ = json.Unmarshal(payload, &a)
	}
	switch a.Status {
	case "gated":
		return OutcomeGated, a.Detail
	case "ok":
		return OutcomeControl, a.Detail
	}
	return OutcomeRejected, a.Detail
}

// Stats returns the recorder's counters.
func (r *Recorder) Stats() Stats {
	st := Stats{State: State(r.state.Load()), Frames: map[string]uint64{}, Bytes: r.bytes.Load(),
		Errors: r.errs.Load(), KeyframeRequests: r.keyframes.Load()}
	if r.paused.Load() && (st.State == StateRecording || st.State == StateStarting) {
		st.State = StatePaused
	}
	for i := range st.Records {
		st.Records[i] = r.records[i].Load()
		st.Dropped[i] = r.dropped[i].Load()
	}
	r.streams.Range(func(k, v any) bool {
		st.Frames[k.(string)] = v.(*videoStream).frames.Load()
		return true
	})
	return st
}

// Close stops recording: it leaves the subscriptions, stops the writers
// and waits up to a second for the publishes in flight.
func (r *Recorder) Close() error {
	r.state.Store(int32(StateClosed))
	r.subsMu.Lock()
	var errs []error
	for _, s := range r.subs {
		if err := s.Unsubscribe(); err != nil && r.nc.Status() != nats.CLOSED {
			errs = append(errs, fmt.Errorf("unsubscribing from %q: %w", s.Subject, err))
		}
	}
	r.subs = nil
	r.subsMu.Unlock()
	r.cancel()
	r.wg.Wait()
	r.streams.Range(func(_, v any) bool {
		<-v.(*videoStream).done
		return true
	})
	select {
	case <-r.js.PublishAsyncComplete():
	case <-time.After(time.Second):
	}
	return errors.Join(errs...)
}
