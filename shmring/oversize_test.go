package shmring

import (
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// commitHeaderOnly commits frame frameSeq of size payload bytes by storing
// its header, write_len and sequence only: the payload is what the slot
// holds (in a fresh sparse file, zeros that take no memory).
func commitHeaderOnly(w *Writer, frameSeq uint64, size int, crc uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	Header{FrameSeq: frameSeq, Size: uint32(size), Codec: CodecH264, CRC32: crc}.Put(w.m.mem[OffSlot:OffPayload])
	storeU64(w.m.mem, OffWriteLen, uint64(HeaderSize+size))
	w.sequence++
	w.frameSeq = frameSeq
	storeU64(w.m.mem, OffSequence, w.sequence)
}

// zerosCRC is the CRC-32 of n zero bytes, computed without n bytes.
func zerosCRC(n int) uint32 {
	zeros := make([]byte, 1<<20)
	var c uint32
	for n > 0 {
		k := min(n, len(zeros))
		c = crc32.Update(c, crc32.IEEETable, zeros[:k])
		n -= k
	}
	return c
}

// rss is the process's resident set in bytes (Linux), or -1.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return -1
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return -1
	}
	return pages * int64(os.Getpagesize())
}

// Issue 19's break-in: a 256 MiB ring file holding a 100 MiB frame. The
// file is mapped whole, its size logged and counted as the old server did
// with a size it did not expect; the frame is dropped before any copy and
// counted; the process's heap and resident set do not grow by its size;
// and the frames after it flow. (The file is sparse: the test needs none of
// its 256 MiB. Not parallel, so that other tests' allocations do not blur
// the measurement.)
func TestReaderDropsOversizeFrame(t *testing.T) {
	const (
		ringSize = 256 << 20
		huge     = 100 << 20
	)
	path := filepath.Join(t.TempDir(), "frames")
	w := createWriter(t, path, ringSize)
	logs := &logLines{}
	frames, r := collect(t, ReaderConfig{Path: path, Size: DefaultSize, Logger: slog.New(logs)}, 16)
	writeAndWait(t, w, frames, Header{Flags: FlagKeyframe}, 1)
	if st := r.Stats(); st.SizeMismatch != 1 || !logs.has("ring file size differs from the configured size; using the file's size") {
		t.Errorf("a 256 MiB file where 4 MiB are configured: stats %+v; want it mapped, counted and logged", st)
	}
	// The slot's payload bytes are zero again (frame 1 wrote 100 there).
	clear(w.m.mem[OffPayload : OffPayload+100])
	crc := zerosCRC(huge)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	rssBefore := rss()
	commitHeaderOnly(w, 2, huge, crc)
	eventually(t, 30*time.Second, "the reader to look at the 100 MiB frame", func() bool { return r.Sequence() == w.Sequence() })
	f := writeAndWait(t, w, frames, Header{}, 3)
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	rssAfter := rss()

	if f.Gap != 1 {
		t.Errorf("frame 3 after the dropped frame: gap %d, want 1", f.Gap)
	}
	st := r.Stats()
	if st.Oversize != 1 || st.Frames != 2 {
		t.Errorf("stats %+v: want the 100 MiB frame dropped and counted (Oversize 1), 2 frames delivered", st)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > huge/4 {
		t.Errorf("%d bytes allocated while the reader dropped a %d-byte frame: it was copied", alloc, huge)
	}
	if rssBefore > 0 && rssAfter-rssBefore > huge/2 {
		t.Errorf("resident set grew from %d to %d bytes around a dropped %d-byte frame", rssBefore, rssAfter, huge)
	}
	if n := logs.count("frame larger than the cap dropped", "payload_bytes=104857600"); n != 1 {
		t.Errorf("the dropped frame logged %d times, want once with its size", n)
	}
}

// bufferCaps returns the capacities of the reader's copy buffers: the one
// it copies into next, the last frame's, and the largest in its pool.
func bufferCaps(r *Reader) (scratch, prev, pooled int) {
	if r.scratch != nil {
		scratch = cap(r.scratch.b)
	}
	prev = cap(r.prevBytes())
	r.pool.mu.Lock()
	defer r.pool.mu.Unlock()
	for _, b := range r.pool.free {
		pooled = max(pooled, cap(b.b))
	}
	return scratch, prev, pooled
}

// A frame under the cap but larger than keepBuffer is copied; the reader
// does not keep buffers of its size once frames stop needing them, and
// keeps them (no allocation per frame) while they do.
func TestReaderReleasesLargeBuffers(t *testing.T) {
	t.Parallel()
	const large = 3 * keepBuffer
	path, w := createRing(t, 4*keepBuffer)
	r := attachReader(t, path)
	now := time.Now()
	r.clock = func() time.Time { return now }
	var got []Frame
	fn := func(f Frame) { got = append(got, f) }
	seq := uint64(0)
	big := payloadFor(0, large)
	write := func(n int) {
		t.Helper()
		seq++
		if _, err := w.WriteFrame(Header{FrameSeq: seq, Codec: CodecH264}, big[:n]); err != nil {
			t.Fatal(err)
		}
		now = now.Add(33 * time.Millisecond)
		got = got[:0]
		r.step(fn)
		if len(got) != 1 || got[0].Header.FrameSeq != seq {
			t.Fatalf("frame %d not delivered", seq)
		}
	}
	// A steady stream of large frames keeps its two buffers.
	arrays := map[unsafe.Pointer]bool{}
	for range 30 {
		write(large)
		for _, b := range []*slotBuffer{r.scratch, r.prevSlot} {
			if b != nil && cap(b.b) > 0 {
				arrays[unsafe.Pointer(unsafe.SliceData(b.b[:1]))] = true
			}
		}
	}
	if len(arrays) > 2 {
		t.Errorf("%d buffers allocated for 30 large frames, want 2", len(arrays))
	}
	// Then small frames only: within a few checks, no large buffer is kept.
	for range 30 {
		write(1000)
	}
	if s, p, f := bufferCaps(r); s > keepBuffer || p > keepBuffer || f > keepBuffer {
		t.Errorf("after a second of small frames the reader keeps buffers of %d, %d and %d (pooled) bytes, want at most %d", s, p, f, keepBuffer)
	}
	// The last frame's bytes are still there to tell its own late commit.
	if n := len(r.prevBytes()); n != HeaderSize+1000 {
		t.Errorf("prevSlot holds %d bytes, want the last frame's %d", n, HeaderSize+1000)
	}
}

func TestReaderConfigMaxFrameSize(t *testing.T) {
	t.Parallel()
	if _, err := NewReader(ReaderConfig{Path: "x", MaxFrameSize: -1}); err == nil || !strings.Contains(err.Error(), "max frame size") {
		t.Errorf("negative MaxFrameSize: %v", err)
	}
	r, err := NewReader(ReaderConfig{Path: "x"})
	if err != nil || r.maxPayload != DefaultMaxFrameSize {
		t.Errorf("default cap %d (%v), want %d", r.maxPayload, err, DefaultMaxFrameSize)
	}
}

// `caddy sdr-ring watch` shows the frames dropped for the cap per interval.
func TestWindowShowsOversize(t *testing.T) {
	t.Parallel()
	d := Stats{Oversize: 5, Frames: 9}.sub(Stats{Oversize: 3, Frames: 1})
	if d.Oversize != 2 {
		t.Fatalf("oversize in the interval %d, want 2", d.Oversize)
	}
	w := Window{Total: Stats{Oversize: 5, Attached: true}, Delta: d, Age: -1}
	if s := w.String(); !strings.Contains(s, " oversize=2 ") {
		t.Errorf("window line %q lacks oversize=2", s)
	}
}
