package shmring

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// ReaderConfig configures a Reader.
type ReaderConfig struct {
	// Path is the ring file, for example DefaultPath. Required.
	Path string
	// Size is the size the ring file is expected to have, control region
	// included. 0 takes the file's size. A file of another size is still
	// mapped at its real size (mapping more would fault); each such mapping
	// is counted in Stats.SizeMismatch and logged.
	Size int64
	// DisableCRC skips the CRC-32 check. Needed when the writer runs with CRC
	// off (its headers carry 0); it gives up the only defence against a frame
	// torn by a writer that overwrote the slot during the copy.
	DisableCRC bool
	// KeyframeGating makes the reader forward nothing after attaching, a
	// frame-sequence gap or a writer restart until a KEYFRAME arrives. Off by
	// default, like the old service (its encoder used intra refresh).
	KeyframeGating bool
	// RestartGating makes the reader forward nothing after a writer restart
	// until a KEYFRAME of the new run arrives, also with KeyframeGating off:
	// the deltas of a new encoder run do not continue the pictures of the
	// old one. For encoded rings; raw frames carry no KEYFRAME flag.
	RestartGating bool
	// OnBreak, when set, is called from Run's goroutine as soon as the
	// reader detects a writer restart (restart true) or frames it missed (a
	// forward frame_seq gap), before the frame that shows it is delivered or
	// held back. It must not block.
	OnBreak func(restart bool)
	// MaxFrameSize is the largest payload, in bytes, the reader copies and
	// delivers. A frame with a larger payload is dropped before any of it
	// is copied, counted in Stats.Oversize and logged; the ring file itself
	// may be larger (it is mapped whole). 0 takes DefaultMaxFrameSize.
	MaxFrameSize int64
	// OnOversize, when set, is called from Run's goroutine with the payload
	// size of each frame dropped for exceeding MaxFrameSize. It must not
	// block.
	OnOversize func(size uint64)
	// PooledPayloads delivers each payload in the buffer the reader copied
	// and verified the frame in, instead of a fresh copy: no payload-sized
	// allocation per frame in steady state (a raw frame is megabytes). The
	// receiver must call Frame.Release once it is done with the payload
	// and must not touch it after; the buffer goes back to the reader when
	// the last reference (Frame.Retain adds one) is released. A frame that
	// is never released only costs the reader a new buffer later: the
	// reader never copies into a buffer that a frame still references.
	PooledPayloads bool
	// Logger receives attach, remap, restart and fault events. nil discards them.
	Logger *slog.Logger
}

// DefaultMaxFrameSize is the default ReaderConfig.MaxFrameSize: 32 MiB, far
// above any encoded frame (a 4K H.264 keyframe is a few MB) and the most one
// frame of the encoded-frame ring may pin in memory.
const DefaultMaxFrameSize = 32 << 20

// DefaultRawMaxFrameSize is the frame cap sdr_encoder gives its raw-frame
// ring reader: the whole default raw ring (64 MiB), so that every frame
// that ring holds passes; 4K RGBA is about 33 MB.
const DefaultRawMaxFrameSize = DefaultRawSize

// Frame is one verified frame as the Reader delivers it.
type Frame struct {
	// Header is the 32-byte frame header as the writer stored it.
	Header Header
	// Payload is freshly allocated for this frame and the receiver owns
	// it; with ReaderConfig.PooledPayloads it lies in a buffer of the
	// reader, valid until Release.
	Payload []byte
	// Sequence is the control region's commit counter read with this frame.
	// A writer that has already stored the next frame whole (write_len
	// included) but not yet its sequence is read as that next frame: then
	// Sequence is one less than the frame's own commit, and the commit that
	// follows is not delivered twice.
	Sequence uint64
	// Arrived is when the reader found the frame.
	Arrived time.Time
	// Gap is how many frames of this writer run the receiver did not get
	// just before this one: frames the reader missed (the writer was faster,
	// or a copy was torn or failed its CRC) and frames held back by keyframe
	// gating.
	Gap uint64
	// Restart is set on the first frame delivered after the writer restarted
	// (sequence or frame_seq went backwards, the control region was zeroed,
	// or the file was replaced by a new one).
	Restart bool

	ref *payloadRef // the payload's buffer (PooledPayloads), else nil
}

// Release hands a pooled payload back (ReaderConfig.PooledPayloads): once
// every reference is released the reader copies later frames into its
// buffer, so Payload must not be touched after. Calls after the first on
// the same frame do nothing, and so does Release on a frame of a reader
// without PooledPayloads, whose payload the receiver owns.
func (f Frame) Release() {
	if f.ref != nil {
		f.ref.release()
	}
}

// Retain returns the frame with a reference of its own to a pooled
// payload, for a receiver that hands one frame to several consumers: the
// payload stays valid until the original and every retained frame are
// released. Call it before f is released. Without PooledPayloads it
// returns f.
func (f Frame) Retain() Frame {
	if f.ref != nil {
		f.ref.buf.refs.Add(1)
		f.ref = &payloadRef{buf: f.ref.buf}
	}
	return f
}

// Stats is a snapshot of a Reader's counters, all monotonic since NewReader
// except Attached.
type Stats struct {
	Frames        uint64 // frames delivered
	Bytes         uint64 // payload bytes delivered
	TornReads     uint64 // copies discarded because the slot changed during the copy: sequence, write_len, or a header size that disagrees with write_len
	CRCFailures   uint64 // copies discarded because the payload failed its CRC
	Malformed     uint64 // commits discarded for a write_len out of bounds (read twice) or an empty payload
	Gaps          uint64 // frames missed: the sum of forward frame_seq gaps
	Restarts      uint64 // writer restarts detected
	Remaps        uint64 // mappings after the first (new inode, new size, after a fault)
	Faults        uint64 // memory faults (SIGBUS of a truncated mapping) contained
	SizeMismatch  uint64 // mappings of a file whose size differs from ReaderConfig.Size
	KeyframeWaits uint64 // verified frames held back by keyframe or restart gating
	Oversize      uint64 // frames dropped, before any copy, for a payload over ReaderConfig.MaxFrameSize
	Polls         uint64 // times the control region was read (the cost of waiting)
	Attached      bool   // a mapping is held now
}

// Reader reads frames from one ring file. Create it with NewReader, run it
// with Run; Stats, LastArrival, Sequence and Period may be called from any
// goroutine at any time.
type Reader struct {
	cfg        ReaderConfig
	log        *slog.Logger
	maxPayload uint64 // the frame cap in force

	running atomic.Bool

	frames, bytes, torn, crc, malformed, gaps, restarts, remaps,
	faults, sizeMismatch, keyframeWaits, polls, oversize atomic.Uint64
	attached    atomic.Bool
	watchers    atomic.Int64
	sequence    atomic.Uint64
	lastArrival atomic.Int64 // Unix ns, 0 = never
	heartbeat   atomic.Int64 // Unix ns of Run's last loop, 0 = never
	attachErr   atomic.Pointer[error]
	period      atomic.Int64 // learned frame period in ns, 0 = unknown

	// State of the Run goroutine only.
	clock          func() time.Time // time.Now; tests drive step with their own
	m              *mapping
	prev           fileID // the last file mapped
	maps           uint64
	lastSeq        uint64 // last sequence handled (0 = none)
	lastFrameSeq   uint64
	haveFrameSeq   bool // lastFrameSeq belongs to the current writer run
	pendingGap     uint64
	pendingRestart bool
	awaitKeyframe  bool
	mode           pollMode      // how the sleep before this poll was chosen
	slept          time.Duration // how long that sleep was meant to be
	hr             *hrSleeper    // precise sleeps (Linux); nil until the first
	hrFailed       bool          // no timerfd: precise sleeps use nanosleep
	cad            cadence
	nextCheck      time.Time
	waitReason     string      // why the file could not be mapped, as last logged
	zeroSince      time.Time   // when the polls began to read sequence 0 after a non-zero one
	jumpLogged     time.Time   // when an absurd sequence jump was last logged
	oversizeLogged time.Time   // when a frame over the cap was last logged
	oversizeAt     uint64      // Stats.Oversize then
	tornRun        int         // consecutive torn copies
	pool           slotPool    // copy buffers no one references
	scratch        *slotBuffer // the slot is copied here first (see readSlotInto); nil: take one from pool
	prevSlot       *slotBuffer // header and payload of the frame lastFrameSeq names, as read; nil before the first
	slotPeak       uint64      // the largest slot copied since the last trimBuffers
}

// How often the reader stats the path to notice a replaced or resized file.
const checkEvery = 200 * time.Millisecond

// An absurd sequence jump (cadence.observe), and a frame over the cap, are
// logged at most this often.
const jumpLogEvery = time.Minute

// keepBuffer is the largest copy buffer the reader keeps when frames no
// longer need it (trimBuffers).
const keepBuffer = 4 << 20

// NewReader validates cfg and returns a Reader. It opens nothing: Run maps
// the file, and waits for it when it does not exist yet.
func NewReader(cfg ReaderConfig) (*Reader, error) {
	if cfg.Path == "" {
		return nil, errors.New("ring reader: path is empty")
	}
	if cfg.Size < 0 || (cfg.Size > 0 && cfg.Size < OffPayload) {
		return nil, fmt.Errorf("ring reader for %s: size %d is neither 0 (the file's size) nor at least %d", cfg.Path, cfg.Size, OffPayload)
	}
	if cfg.Size > maxMapSize {
		return nil, fmt.Errorf("ring reader for %s: size %d exceeds %d", cfg.Path, cfg.Size, int64(maxMapSize))
	}
	if cfg.MaxFrameSize < 0 {
		return nil, fmt.Errorf("ring reader for %s: max frame size %d is negative", cfg.Path, cfg.MaxFrameSize)
	}
	maxPayload := uint64(cfg.MaxFrameSize)
	if maxPayload == 0 {
		maxPayload = DefaultMaxFrameSize
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reader{cfg: cfg, log: log.With("ring", cfg.Path), maxPayload: maxPayload,
		awaitKeyframe: cfg.KeyframeGating, clock: time.Now}, nil
}

// Config returns the configuration the reader was created with.
func (r *Reader) Config() ReaderConfig { return r.cfg }

// Stats returns a snapshot of the counters.
func (r *Reader) Stats() Stats {
	return Stats{
		Frames:        r.frames.Load(),
		Bytes:         r.bytes.Load(),
		TornReads:     r.torn.Load(),
		CRCFailures:   r.crc.Load(),
		Malformed:     r.malformed.Load(),
		Gaps:          r.gaps.Load(),
		Restarts:      r.restarts.Load(),
		Remaps:        r.remaps.Load(),
		Faults:        r.faults.Load(),
		SizeMismatch:  r.sizeMismatch.Load(),
		KeyframeWaits: r.keyframeWaits.Load(),
		Oversize:      r.oversize.Load(),
		Polls:         r.polls.Load(),
		Attached:      r.attached.Load(),
	}
}

// LastArrival is when the reader last found a verified frame, including
// frames held back by keyframe gating (the safety gate counts them as fresh
// video); zero if it never found one.
func (r *Reader) LastArrival() time.Time {
	ns := r.lastArrival.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Heartbeat is when Run last went round its loop: while it runs it polls
// the ring, or tries to map the file, at least every 500 ms, so an older
// heartbeat means the reader is stuck (or Run has returned). Zero before
// Run.
func (r *Reader) Heartbeat() time.Time {
	ns := r.heartbeat.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// AttachError is why the last attempt to map the ring file failed (an
// fs.ErrNotExist while the writer has not created it); nil once the file
// is mapped, and before the first attempt.
func (r *Reader) AttachError() error {
	if e := r.attachErr.Load(); e != nil {
		return *e
	}
	return nil
}

// WaitingForWriter reports whether err, an AttachError, means that the
// writer has not created the ring yet (the file is absent or shorter than a
// control region), as opposed to a fault such as a permission error.
func WaitingForWriter(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, errShort)
}

// Sequence is the last control-region sequence the reader saw (the health
// JSON's shm_seq); 0 before the first commit.
func (r *Reader) Sequence() uint64 { return r.sequence.Load() }

// Period is the writer's frame period as the reader learned it; 0 while unknown.
func (r *Reader) Period() time.Duration { return time.Duration(r.period.Load()) }

// Watch tells the reader that its frames are being watched live (a client
// is connected, an encoder consumes them): until the returned function is
// called, a writer that pauses is polled at least every 5 ms, and at least
// twice per learned frame period, so that the frame that ends the pause is
// read before the writer replaces it with the next. Unwatched, the polls
// of a paused writer back off to one per 100 ms. Calls nest; safe from any
// goroutine.
func (r *Reader) Watch() (unwatch func()) {
	r.watchers.Add(1)
	var once sync.Once
	return func() { once.Do(func() { r.watchers.Add(-1) }) }
}

// Watched reports whether anyone watches the reader's frames now.
func (r *Reader) Watched() bool { return r.watchers.Load() > 0 }

// idleCap is the longest poll interval of a paused writer while the frames
// are watched, 0 while they are not.
func (r *Reader) idleCap() time.Duration {
	if r.watchers.Load() <= 0 {
		return 0
	}
	return watchedPoll(r.cad.period)
}

// Run reads frames until ctx ends, then returns nil. It waits for a file that
// does not exist (or is too short) yet, remaps a file that was replaced or
// resized, and survives a file truncated under its mapping. fn is called from
// Run's goroutine, in order, with every verified frame; it must not block.
// Run may be called once.
func (r *Reader) Run(ctx context.Context, fn func(Frame)) error {
	if fn == nil {
		return fmt.Errorf("reading ring %s: nil frame callback", r.cfg.Path)
	}
	if !r.running.CompareAndSwap(false, true) {
		return fmt.Errorf("reading ring %s: Run called twice", r.cfg.Path)
	}
	defer r.detach()
	defer func() {
		r.dropBuffers()
		if r.hr != nil {
			r.hr.close()
			r.hr = nil
		}
	}()

	var timer *time.Timer
	absentWait := 10 * time.Millisecond
	r.heartbeat.Store(time.Now().UnixNano())
	for ctx.Err() == nil {
		var d time.Duration
		if r.m == nil {
			if err := r.attach(); err != nil {
				r.attachErr.Store(&err)
				r.logWaiting(err)
				d = absentWait
				absentWait = min(2*absentWait, absentMaxPoll)
			} else {
				r.attachErr.Store(nil)
				absentWait = 10 * time.Millisecond
			}
		}
		precise := false
		if r.m != nil {
			d = r.step(fn)
			r.slept = d
			// A paused writer whose frames are watched is polled every
			// few milliseconds: on the timerfd that costs half of what
			// the runtime's timer does (its wake-ups also wake an idle
			// thread to look for work).
			precise = r.m != nil && (!r.cad.idle() || r.watchers.Load() > 0)
		}
		t0 := time.Now()
		r.heartbeat.Store(t0.UnixNano())
		if !r.sleep(ctx, &timer, d, precise) {
			break
		}
		if precise && d > 0 {
			r.cad.overslept(time.Since(t0) - d)
		}
	}
	if timer != nil {
		timer.Stop()
	}
	return nil
}

// sleep waits d, or less when ctx ends; it reports whether ctx is still live.
// Precise waits (a writer committing at its period, or a paused one whose
// frames are watched) use the timerfd or nanosleep, in chunks
// of at most 8 ms: the runtime leaves a goroutine's P with it through a
// syscall shorter than 10 ms when another P is idle, and ctx is seen soon
// after it ends. The other waits (a stalled or absent writer) use a runtime
// timer that ctx interrupts, which lets the whole process go idle.
func (r *Reader) sleep(ctx context.Context, timer **time.Timer, d time.Duration, precise bool) bool {
	const chunk = 8 * time.Millisecond
	switch {
	case d <= 0:
	case precise && d <= 100*time.Millisecond:
		for d > 0 && ctx.Err() == nil {
			s := min(d, chunk)
			r.preciseSleep(s)
			d -= s
		}
	default:
		if *timer == nil {
			*timer = time.NewTimer(d)
		} else {
			(*timer).Reset(d)
		}
		select {
		case <-ctx.Done():
		case <-(*timer).C:
		}
	}
	return ctx.Err() == nil
}

// preciseSleep sleeps d on the reader's timerfd (Linux), or, where there
// is none or it fails, with nanosleep.
func (r *Reader) preciseSleep(d time.Duration) {
	if r.hr == nil && !r.hrFailed {
		hr, err := newHRSleeper()
		if err != nil {
			r.hrFailed = true
		} else {
			r.hr = hr
		}
	}
	if r.hr != nil {
		err := r.hr.sleep(d)
		if err == nil {
			return
		}
		r.log.Warn("timerfd sleep failed; sleeping with nanosleep", "error", err)
		r.hr.close()
		r.hr, r.hrFailed = nil, true
	}
	preciseSleep(d)
}

// preciseSleep sleeps d with the thread's timer slack (how late the kernel
// may end a sleep; 50 us by default) lowered to 1 us for this one sleep. The
// goroutine stays on its thread for the three calls, and the thread gets its
// slack back.
func preciseSleep(d time.Duration) {
	runtime.LockOSThread()
	restore := setTimerSlack(1000)
	nanosleep(d)
	restore()
	runtime.UnlockOSThread()
}

// logWaiting logs why the reader cannot map the file yet: once, and again
// when the reason changes.
func (r *Reader) logWaiting(err error) {
	reason := err.Error()
	if reason == r.waitReason {
		return
	}
	r.waitReason = reason
	switch {
	case WaitingForWriter(err):
		r.log.Info("waiting for ring file", "reason", reason)
	case errors.Is(err, ErrNotRegular):
		r.log.Warn("ring path is not a regular file; waiting for one", "error", reason)
	default:
		r.log.Warn("cannot map ring file; retrying", "error", reason)
	}
}

// attach maps the file. A file with another inode than the last one mapped
// belongs to a new writer run.
func (r *Reader) attach() error {
	m, err := mapFile(r.cfg.Path, false)
	if err != nil {
		return err
	}
	r.install(m)
	return nil
}

// install makes m the reader's mapping.
func (r *Reader) install(m *mapping) {
	r.waitReason = ""
	r.maps++
	if r.maps > 1 {
		r.remaps.Add(1)
	}
	if r.maps > 1 && (m.id.dev != r.prev.dev || m.id.ino != r.prev.ino) {
		// A replaced file: a new writer run, whose sequence starts over.
		r.lastSeq = 0
		r.noteRestart("file replaced")
	}
	if r.cfg.Size > 0 && m.id.size != r.cfg.Size {
		r.sizeMismatch.Add(1)
		r.log.Warn("ring file size differs from the configured size; using the file's size",
			"file_size", m.id.size, "configured_size", r.cfg.Size)
	}
	r.m, r.prev = m, m.id
	r.attached.Store(true)
	now := r.clock()
	r.cad.reset(now)
	r.mode, r.slept = modeCoarse, 0
	r.zeroSince = time.Time{}
	r.nextCheck = now.Add(checkEvery)
	r.log.Info("attached to ring file", "size", m.id.size, "inode", m.id.ino, "remap", r.maps > 1)
}

func (r *Reader) detach() {
	if r.m == nil {
		return
	}
	if err := r.m.unmap(); err != nil {
		r.log.Warn("unmapping ring file", "error", err)
	}
	r.m = nil
	r.attached.Store(false)
	r.period.Store(0)
}

// fileChanged reports whether the path now names another file, or the
// mapped file changed size. An absent path keeps the mapping: a writer that
// still holds the unlinked file keeps writing into it.
func (r *Reader) fileChanged() bool {
	id, err := statPath(r.cfg.Path)
	if err != nil {
		return false
	}
	return id != r.m.id
}

func (r *Reader) noteRestart(why string) {
	r.restarts.Add(1)
	r.pendingRestart = true
	r.haveFrameSeq = false
	if r.cfg.KeyframeGating || r.cfg.RestartGating {
		r.awaitKeyframe = true
	}
	r.log.Info("writer restart detected", "reason", why)
	if r.cfg.OnBreak != nil {
		r.cfg.OnBreak(true)
	}
}

// readGuarded runs one pass of the reader order over mem with memory faults
// turned into panics, and contains them: a file truncated under the mapping
// raises SIGBUS on the next touch, which must not kill the process.
func readGuarded(mem []byte, last uint64, verifyCRC bool, maxPayload uint64, scratch *[]byte) (res slotRead, fault bool) {
	defer func() {
		if e := recover(); e != nil {
			if _, ok := e.(interface{ Addr() uintptr }); ok {
				fault = true
				return
			}
			panic(e)
		}
	}()
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	return readSlotInto(mem, last, verifyCRC, maxPayload, scratch), false
}

// step polls once, handles what it found and returns how long to sleep.
func (r *Reader) step(fn func(Frame)) time.Duration {
	now := r.clock()
	if !now.Before(r.nextCheck) {
		r.nextCheck = now.Add(checkEvery)
		r.trimBuffers()
		if r.fileChanged() {
			r.log.Info("ring file replaced or resized; remapping")
			r.detach()
			return 0
		}
	}
	if r.scratch == nil {
		// Taken before the copy window, at the size of the last frame, so
		// that the copy of a frame of that size allocates nothing.
		r.scratch = r.pool.get(max(int(r.slotPeak), len(r.prevBytes())))
	}
	res, fault := readGuarded(r.m.mem, r.lastSeq, !r.cfg.DisableCRC, r.maxPayload, &r.scratch.b)
	r.polls.Add(1)
	if fault {
		r.faults.Add(1)
		r.log.Warn("memory fault reading the ring (file truncated under the mapping); remapping")
		r.detach()
		return 0
	}
	if res.status != slotEmpty {
		r.zeroSince = time.Time{}
	}
	if res.status != slotTorn {
		r.tornRun = 0
	}
	switch res.status {
	case slotOK, slotTorn, slotSizeMismatch, slotCRC: // copied into scratch (or torn before)
		r.slotPeak = max(r.slotPeak, res.writeLen)
	}
	switch res.status {
	case slotUnchanged:
	case slotEmpty:
		if r.lastSeq == 0 {
			break
		}
		// CPython's struct.pack_into zero-fills before it stores, so a
		// Python writer's sequence can read 0 for an instant, and for as
		// long as the writer is preempted between the two on a loaded
		// machine: believe a reset only when 0 lasts.
		if r.zeroSince.IsZero() {
			r.zeroSince = now
		}
		if zero := now.Sub(r.zeroSince); zero < zeroConfirm {
			r.mode = modeFine
			return clampDur(zero, finePoll, lateMaxPoll)
		}
		// The control region was zeroed: a writer started over.
		r.lastSeq = 0
		r.sequence.Store(0)
		r.noteRestart("sequence reset to 0")
	case slotTorn:
		// A newer frame was committed during the copy: read it at once,
		// unless copies keep tearing (a writer that commits faster than a
		// frame can be copied), which must not become a busy loop.
		r.torn.Add(1)
		r.mode = modeFine
		if r.tornRun++; r.tornRun <= 3 {
			return 0
		}
		return finePoll
	default:
		r.commit(res, now, fn)
	}
	r.cad.idleCap = r.idleCap()
	d, mode := r.cad.next(r.clock())
	r.mode = mode
	return d
}

// commit handles a new sequence: sequencing, gating, delivery.
func (r *Reader) commit(res slotRead, now time.Time, fn func(Frame)) {
	steps := uint64(1)
	if r.lastSeq != 0 {
		if res.sequence < r.lastSeq {
			r.noteRestart(fmt.Sprintf("sequence went back from %d to %d", r.lastSeq, res.sequence))
		} else {
			steps = res.sequence - r.lastSeq
		}
	}
	if r.cad.observe(now, steps, r.mode, r.slept) && now.Sub(r.jumpLogged) >= jumpLogEvery {
		r.jumpLogged = now
		r.log.Warn("ring sequence jumped further than any writer commits; taken as one commit",
			"from", r.lastSeq, "to", res.sequence)
	}
	r.lastSeq = res.sequence
	r.sequence.Store(res.sequence)
	r.period.Store(int64(r.cad.period))

	switch res.status {
	case slotCRC:
		r.crc.Add(1)
		return
	case slotSizeMismatch:
		// With s1 == s2 and write_len unchanged, a header that disagrees
		// with write_len was being rewritten for the next frame.
		r.torn.Add(1)
		return
	case slotWriteLen:
		r.malformed.Add(1)
		return
	case slotOversize:
		r.dropOversize(res.writeLen-HeaderSize, now)
		return
	}
	if len(res.payload) == 0 {
		// A frame with no payload carries no picture: malformed, and lost
		// (the next frame counts it as a gap).
		r.malformed.Add(1)
		return
	}
	h := res.header
	slot := r.scratch.b[:res.writeLen]
	if r.haveFrameSeq {
		switch {
		case h.FrameSeq == r.lastFrameSeq && bytes.Equal(slot, r.prevBytes()):
			// The writer had already stored this frame whole (header,
			// payload and write_len) when the previous sequence was read,
			// so it was handled then; its own commit changes nothing.
			return
		case h.FrameSeq == r.lastFrameSeq:
			// Another frame under the same frame_seq: a writer that does
			// not number every commit. Forwarded, as the old service did.
		case h.FrameSeq < r.lastFrameSeq:
			r.noteRestart(fmt.Sprintf("frame_seq went back from %d to %d", r.lastFrameSeq, h.FrameSeq))
		case h.FrameSeq > r.lastFrameSeq+1:
			gap := h.FrameSeq - r.lastFrameSeq - 1
			r.gaps.Add(gap)
			r.pendingGap += gap
			if r.cfg.KeyframeGating {
				r.awaitKeyframe = true
			}
			if r.cfg.OnBreak != nil {
				r.cfg.OnBreak(false)
			}
		}
	}
	r.lastFrameSeq, r.haveFrameSeq = h.FrameSeq, true
	// Keep this frame's bytes to tell its own late commit from another
	// frame under its frame_seq; the next read copies into a buffer that
	// nothing references (the previous frame's, once its receivers have
	// released it).
	r.scratch.b = slot
	if r.prevSlot != nil {
		r.prevSlot.release()
	}
	r.prevSlot, r.scratch = r.scratch, nil
	r.lastArrival.Store(now.UnixNano())
	if r.awaitKeyframe && !h.Keyframe() {
		r.keyframeWaits.Add(1)
		r.pendingGap++
		return
	}
	r.awaitKeyframe = false
	f := Frame{Header: h, Sequence: res.sequence, Arrived: now,
		Gap: r.pendingGap, Restart: r.pendingRestart}
	if r.cfg.PooledPayloads {
		r.prevSlot.refs.Add(1)
		f.Payload, f.ref = res.payload, &payloadRef{buf: r.prevSlot}
	} else {
		// Copied out only now, after the copy window and for a frame
		// that is delivered.
		f.Payload = append(make([]byte, 0, len(res.payload)), res.payload...)
	}
	r.pendingGap, r.pendingRestart = 0, false
	r.frames.Add(1)
	r.bytes.Add(uint64(len(res.payload)))
	fn(f)
}

// dropOversize counts a frame of size payload bytes dropped for the cap,
// and logs it (the first, then at most once a minute).
func (r *Reader) dropOversize(size uint64, now time.Time) {
	n := r.oversize.Add(1)
	if r.oversizeLogged.IsZero() || now.Sub(r.oversizeLogged) >= jumpLogEvery {
		r.log.Warn("frame larger than the cap dropped", "payload_bytes", size, "max_frame_size", r.maxPayload,
			"dropped_since_last_log", n-r.oversizeAt)
		r.oversizeLogged, r.oversizeAt = now, n
	}
	if r.cfg.OnOversize != nil {
		r.cfg.OnOversize(size)
	}
}

// trimBuffers lets go of copy buffers larger than the frames of the last
// check interval need (twice the largest, at least keepBuffer), so that a
// one-off large frame does not keep its size pinned; buffers that frames
// keep needing are kept, and no allocation lands in the copy window. The
// last frame's bytes (prevSlot, for telling its own late commit) are kept,
// moved into a buffer of their size.
func (r *Reader) trimBuffers() {
	limit := max(keepBuffer, 2*r.slotPeak)
	r.slotPeak = 0
	if r.scratch != nil && uint64(cap(r.scratch.b)) > limit {
		r.scratch = nil // referenced by the reader alone
	}
	if p := r.prevSlot; p != nil && uint64(cap(p.b)) > max(limit, 2*uint64(len(p.b))) {
		r.prevSlot = r.pool.fresh(p.b)
		p.release()
	}
	r.pool.trim(limit)
}

// prevBytes is the last frame's slot as read, nil before the first.
func (r *Reader) prevBytes() []byte {
	if r.prevSlot == nil {
		return nil
	}
	return r.prevSlot.b
}

// dropBuffers releases the reader's references to its buffers when Run
// ends; frames still held keep theirs.
func (r *Reader) dropBuffers() {
	if r.prevSlot != nil {
		r.prevSlot.release()
	}
	r.scratch, r.prevSlot = nil, nil
	r.pool.trim(0)
}
