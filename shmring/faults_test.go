package shmring

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// writeN writes frame_seq from through to, with payloads of varying size and,
// when flags is not nil, the flags it gives each frame.
func writeN(t testing.TB, w *Writer, from, to uint64, flags func(uint64) uint16) {
	t.Helper()
	for i := from; i <= to; i++ {
		f := uint16(0)
		if flags != nil {
			f = flags(i)
		}
		if _, err := w.WriteFrame(Header{FrameSeq: i, Flags: f, Codec: CodecH264}, payloadFor(i, 64+int(i%50))); err != nil {
			t.Fatal(err)
		}
	}
}

// writeAndWait writes frame seq and returns when the reader delivers it; frames
// delivered before it (older ones) are returned too.
func writeAndWait(t testing.TB, w *Writer, ch <-chan Frame, h Header, seq uint64) Frame {
	t.Helper()
	h.FrameSeq = seq
	p := payloadFor(seq, 100)
	if _, err := w.WriteFrame(h, p); err != nil {
		t.Fatal(err)
	}
	for {
		f := next(t, ch, 10*time.Second)
		if f.Header.FrameSeq == seq {
			if !bytes.Equal(f.Payload, p) {
				t.Fatalf("frame %d: payload differs", seq)
			}
			return f
		}
	}
}

func TestReaderWaitsForAbsentFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "not", "yet", "frames")
	logs := &logLines{}
	frames, r := collect(t, ReaderConfig{Path: path, Logger: slog.New(logs)}, 16)
	testwait.For(t, "the reader to log that it waits for the file", func() bool { return logs.has("waiting for ring file") })
	if st := r.Stats(); st.Attached || st.Frames != 0 {
		t.Fatalf("attached to an absent file: %+v", st)
	}
	w := createWriter(t, path, 8192)
	f := writeAndWait(t, w, frames, Header{Flags: FlagKeyframe}, 1)
	if f.Restart || f.Gap != 0 {
		t.Errorf("first frame: %+v", f)
	}
	if st := r.Stats(); !st.Attached || st.Remaps != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestReaderRemapsRecreatedFile(t *testing.T) {
	t.Parallel()
	path, w1 := createRing(t, 8192)
	frames, r := collect(t, ReaderConfig{Path: path}, 64)
	writeAndWait(t, w1, frames, Header{}, 1)
	writeAndWait(t, w1, frames, Header{}, 2)
	before, _ := statPath(path)
	w1.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	// A new file of another size, so the inode surely differs while the
	// old one is still mapped by the reader.
	w2 := createWriter(t, path, 16384)
	after, _ := statPath(path)
	if before.ino == after.ino {
		t.Fatalf("recreated file kept inode %d", before.ino)
	}
	f := writeAndWait(t, w2, frames, Header{}, 1)
	if !f.Restart {
		t.Errorf("frame after a replaced file not flagged Restart: %+v", f)
	}
	st := r.Stats()
	if st.Remaps < 1 || st.Restarts < 1 {
		t.Errorf("stats %+v, want a remap and a restart", st)
	}
}

// TestReaderContainsTruncationFault truncates the file under the reader's
// mapping and makes the reader touch it before it stats the path: the
// SIGBUS must become a counted fault, not a crash.
func TestReaderContainsTruncationFault(t *testing.T) {
	t.Parallel()
	path, w := createRing(t, 1<<20)
	writeN(t, w, 1, 1, nil)
	r := attachReader(t, path)
	var got []Frame
	collectFn := func(f Frame) { got = append(got, f) }
	r.step(collectFn)
	if len(got) != 1 {
		t.Fatalf("got %d frames before truncation", len(got))
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	r.nextCheck = time.Now().Add(time.Hour) // touch before any stat
	r.lastSeq = 0                           // force a read of the slot
	r.step(collectFn)
	if st := r.Stats(); st.Faults != 1 || st.Attached {
		t.Fatalf("after truncation: %+v, want one contained fault and no mapping", st)
	}
	if err := r.attach(); err == nil {
		t.Fatal("attached to an empty file")
	}
	// Whole again: the writer's own mapping becomes valid once the file grows.
	if err := os.Truncate(path, 1<<20); err != nil {
		t.Fatal(err)
	}
	writeN(t, w, 2, 2, nil)
	if err := r.attach(); err != nil {
		t.Fatal(err)
	}
	r.step(collectFn)
	if len(got) != 2 || got[1].Header.FrameSeq != 2 {
		t.Fatalf("after remap: %d frames", len(got))
	}
	if st := r.Stats(); st.Remaps != 1 || st.Faults != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestReaderSurvivesTruncationLive truncates and regrows the file while Run
// reads a writer committing at 200 Hz: the process survives and frames flow
// again. Each truncation lasts until the reader has let go of the file, and
// each regrowth until it has mapped it again, however slow a loaded machine
// makes it notice.
func TestReaderSurvivesTruncationLive(t *testing.T) {
	t.Parallel()
	path, w := createRing(t, 1<<20)
	frames, r := collect(t, ReaderConfig{Path: path}, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := uint64(1); ctx.Err() == nil; i++ {
			<-tick.C
			w.WriteFrame(Header{FrameSeq: i}, payloadFor(i, 1000)) // faults while truncated: an error, ignored here
		}
	}()
	next(t, frames, 5*time.Second)
	for range 5 {
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the reader to let go of the truncated file", func() bool { return !r.Stats().Attached })
		if err := os.Truncate(path, 1<<20); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the reader to map the regrown file", func() bool { return r.Stats().Attached })
	}
	eventually(t, 10*time.Second, "reader remapped", func() bool { return r.Stats().Remaps >= 1 })
	for len(frames) > 0 {
		<-frames
	}
	next(t, frames, 5*time.Second)
	cancel()
	<-done
	t.Logf("stats after truncations: %+v", r.Stats())
}

func TestReaderSizeMismatch(t *testing.T) {
	t.Parallel()
	path, w := createRing(t, 4096)
	frames, r := collect(t, ReaderConfig{Path: path, Size: 8192}, 16)
	writeAndWait(t, w, frames, Header{}, 1)
	if st := r.Stats(); st.SizeMismatch != 1 {
		t.Errorf("SizeMismatch = %d, want 1", st.SizeMismatch)
	}
}

// TestReaderWriterStalled: a writer that stops leaves the reader cheap
// (few polls) and the reader picks the stream up again when it resumes.
func TestReaderWriterStalled(t *testing.T) {
	t.Parallel()
	path, w := createRing(t, 8192)
	frames, r := collect(t, ReaderConfig{Path: path}, 256)
	for i := uint64(1); i <= 30; i++ {
		writeAndWait(t, w, frames, Header{}, i)
		time.Sleep(10 * time.Millisecond) // the subject: the writer's pace
	}
	if p := r.Period(); p < 5*time.Millisecond || p > 50*time.Millisecond {
		t.Logf("learned period %v (10 ms writer on a loaded machine)", p)
	}
	last := r.LastArrival()
	// The subject: the writer stalls. (Real time: the reader sleeps on a
	// timerfd, which a synctest bubble's clock does not drive.)
	time.Sleep(time.Second) // the stall settles into back-off
	p0 := r.Stats().Polls
	time.Sleep(2 * time.Second)
	polls := r.Stats().Polls - p0
	// Back-off tops out at 100 ms: about 20 polls in 2 s; 100 is a
	// generous bound that a busy-waiting reader (thousands) cannot meet. A
	// loaded machine only makes the reader poll less.
	if polls > 100 {
		t.Errorf("%d polls in 2 s of a stalled writer", polls)
	}
	if !r.LastArrival().Equal(last) {
		t.Error("LastArrival moved while the writer was stalled")
	}
	f := writeAndWait(t, w, frames, Header{}, 31)
	if f.Gap != 0 || f.Restart {
		t.Errorf("resumed frame %+v", f)
	}
}

func TestReaderGapsAndRestarts(t *testing.T) {
	t.Parallel()
	path, w := createRing(t, 8192)
	frames, r := collect(t, ReaderConfig{Path: path}, 64)
	writeAndWait(t, w, frames, Header{}, 1)
	f := writeAndWait(t, w, frames, Header{}, 5) // 2..4 never written
	if f.Gap != 3 || f.Restart {
		t.Errorf("after a gap of 3: %+v", f)
	}
	f = writeAndWait(t, w, frames, Header{}, 2) // frame_seq backwards
	if !f.Restart {
		t.Errorf("frame_seq backwards not flagged: %+v", f)
	}
	w.Close()
	// A writer restart in place: same file, control region zeroed.
	w2 := createWriter(t, path, 8192)
	f = writeAndWait(t, w2, frames, Header{}, 1)
	if !f.Restart || f.Sequence != 1 {
		t.Errorf("after an in-place restart: %+v", f)
	}
	st := r.Stats()
	if st.Gaps != 3 || st.Restarts < 2 || st.Remaps != 0 {
		t.Errorf("stats %+v", st)
	}
}

// A frame whose payload is empty carries no picture: it is dropped and
// counted malformed, never delivered, and the next frame counts it missed
// (with keyframe gating, it waits for a keyframe as after any loss).
func TestReaderDropsZeroLengthFrames(t *testing.T) {
	t.Parallel()
	path, w := createRing(t, 8192)
	frames, r := collect(t, ReaderConfig{Path: path}, 64)
	writeAndWait(t, w, frames, Header{Flags: FlagKeyframe}, 1)
	if _, err := w.WriteFrame(Header{FrameSeq: 2, Flags: FlagKeyframe}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the empty frame counted malformed", func() bool { return r.Stats().Malformed == 1 })
	f := writeAndWait(t, w, frames, Header{}, 3)
	if f.Gap != 1 {
		t.Errorf("frame after the empty one: Gap %d, want 1", f.Gap)
	}
	if st := r.Stats(); st.Frames != 2 || st.Malformed != 1 || len(frames) != 0 {
		t.Errorf("delivered %d frames (%d more waiting), %d malformed; want 2 and 1", st.Frames, len(frames), st.Malformed)
	}
}

func TestReaderKeyframeGating(t *testing.T) {
	t.Parallel()
	path, w := createRing(t, 8192)
	frames, r := collect(t, ReaderConfig{Path: path, KeyframeGating: true}, 64)
	// Delta frames before the first keyframe are held back but count as arrivals.
	w.WriteFrame(Header{FrameSeq: 1}, payloadFor(1, 10))
	eventually(t, 5*time.Second, "held-back frame", func() bool { return r.Stats().KeyframeWaits == 1 })
	if r.LastArrival().IsZero() {
		t.Error("held-back frame not counted as an arrival")
	}
	f := writeAndWait(t, w, frames, Header{Flags: FlagKeyframe}, 2)
	if f.Gap != 1 {
		t.Errorf("first keyframe Gap = %d, want 1 (the held-back frame)", f.Gap)
	}
	writeAndWait(t, w, frames, Header{}, 3)
	// A gap closes the gate until the next keyframe.
	w.WriteFrame(Header{FrameSeq: 10}, payloadFor(10, 10))
	eventually(t, 5*time.Second, "held-back frame after gap", func() bool { return r.Stats().KeyframeWaits == 2 })
	f = writeAndWait(t, w, frames, Header{Flags: FlagKeyframe}, 11)
	if f.Gap != 7 {
		t.Errorf("keyframe after gap: Gap = %d, want 6 missed + 1 held back", f.Gap)
	}
	if len(frames) != 0 {
		t.Errorf("%d unexpected frames delivered", len(frames))
	}
}

// A Python writer's struct.pack_into zero-fills the sequence before it
// stores the new value; preempted in between, it leaves 0 there for
// milliseconds. That is no restart: the frames go on unflagged. Only a 0
// that lasts is one.
func TestSequenceZeroForAWhileIsNoRestart(t *testing.T) {
	t.Parallel()
	path, w := createRing(t, 8192)
	frames, r := collect(t, ReaderConfig{Path: path}, 64)
	writeAndWait(t, w, frames, Header{}, 1)
	writeAndWait(t, w, frames, Header{}, 2)
	seq := (*uint64)(unsafe.Pointer(&w.m.mem[OffSequence]))
	// The 0 lasts until the reader has polled it (a poll may have begun
	// before the store: three polls), and must last less than zeroConfirm
	// for the reader to judge it a blip; a starved test can leave it there
	// longer (the reader's clock is real: it sleeps on a timerfd, which
	// synctest does not drive). Such a try is no test of the blip: it is
	// made again with the next frame.
	frameSeq := uint64(3)
	testwait.For(t, "a 0 that lasted less than zeroConfirm", func() bool {
		restarts, polls := r.Stats().Restarts, r.Stats().Polls
		held := atomic.LoadUint64(seq)
		start := time.Now()
		atomic.StoreUint64(seq, 0) // the subject: a preempted writer's 0
		eventually(t, 10*time.Second, "the reader to poll the 0", func() bool { return r.Stats().Polls >= polls+3 })
		atomic.StoreUint64(seq, held)
		lasted := time.Since(start)
		f := writeAndWait(t, w, frames, Header{}, frameSeq)
		frameSeq++
		if lasted >= zeroConfirm {
			t.Logf("the 0 lasted %v, not a blip: again", lasted)
			return false
		}
		if f.Restart || f.Gap != 0 {
			t.Errorf("after %v of sequence 0: %+v", lasted, f)
		}
		if n := r.Stats().Restarts - restarts; n != 0 {
			t.Errorf("%d restarts after %v of sequence 0, want 0", n, lasted)
		}
		return true
	})
	// A 0 that stays is a writer that started over.
	restarts := r.Stats().Restarts
	atomic.StoreUint64(seq, 0)
	eventually(t, 5*time.Second, "restart after a lasting 0", func() bool { return r.Stats().Restarts == restarts+1 })
}
