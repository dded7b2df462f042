package source

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring"
)

type collector struct {
	mu     sync.Mutex
	frames []frame.Frame
}

func (c *collector) add(f frame.Frame) {
	c.mu.Lock()
	c.frames = append(c.frames, f)
	c.mu.Unlock()
}

func (c *collector) seqs() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s []uint64
	for _, f := range c.frames {
		s = append(s, f.Header.FrameSeq)
	}
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, what, cond)
}

func mapped(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skip("no /proc/self/maps")
	}
	return strings.Count(string(b), path)
}

// createRing creates a 1 MiB ring file in a new temporary directory; the
// writer is closed when the test ends.
func createRing(t *testing.T) (string, *shmring.Writer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "frames")
	w, err := shmring.CreateWriter(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return path, w
}

// openRing opens a ring source on path; it is closed when the test ends.
func openRing(t *testing.T, path string) *Ring {
	t.Helper()
	src, err := OpenRing(shmring.ReaderConfig{Path: path}, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// writeH264 commits frame seq, a keyframe when key, with payload.
func writeH264(t *testing.T, w *shmring.Writer, seq uint64, key bool, payload []byte) {
	t.Helper()
	h := shmring.Header{FrameSeq: seq, Codec: shmring.CodecH264}
	if key {
		h.Flags = shmring.FlagKeyframe
	}
	if _, err := w.WriteFrame(h, payload); err != nil {
		t.Fatal(err)
	}
}

func TestRingSharesReaderAndReplaysGOP(t *testing.T) {
	t.Parallel()
	path, w := createRing(t)
	writerMaps := mapped(t, path)
	src, err := OpenRing(shmring.ReaderConfig{Path: path}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var first collector
	cancel := src.Subscribe(first.add)
	write := func(seq uint64, key bool) {
		t.Helper()
		writeH264(t, w, seq, key, []byte{byte(seq), 1, 2, 3})
		// One slot, latest wins: let the reader see each frame.
		waitFor(t, "the reader to take the frame", func() bool { return src.Reader().Stats().Frames >= seq })
	}
	write(1, true)
	write(2, false)
	write(3, true)
	write(4, false)
	waitFor(t, "4 frames", func() bool { return len(first.seqs()) == 4 })

	var late collector
	cancelLate := src.Subscribe(late.add)
	defer cancelLate()
	if got := late.seqs(); len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Fatalf("late subscriber got %v, want the current GOP [3 4]", got)
	}
	cancel()
	write(5, false)
	waitFor(t, "frame 5 for the late subscriber", func() bool { return len(late.seqs()) == 3 })
	if n := len(first.seqs()); n != 4 {
		t.Fatalf("cancelled subscriber got %d frames, want 4", n)
	}
	if src.LastArrival().IsZero() {
		t.Error("LastArrival is zero after frames")
	}
	if mapped(t, path) <= writerMaps {
		t.Fatal("ring not mapped by the reader while reading")
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if n := mapped(t, path); n != writerMaps {
		t.Fatalf("%d mappings of the ring after Close, want the writer's %d", n, writerMaps)
	}
}

func TestRingGapKeepsGOP(t *testing.T) {
	t.Parallel()
	path, w := createRing(t)
	src := openRing(t, path)
	var all collector
	defer src.Subscribe(all.add)()
	for i, f := range []struct {
		seq uint64
		key bool
	}{{1, true}, {2, false}, {7, false}} { // 3..6 never written: a gap
		writeH264(t, w, f.seq, f.key, []byte{1})
		waitFor(t, fmt.Sprintf("frame %d", f.seq), func() bool { return len(all.seqs()) == i+1 })
	}
	all.mu.Lock()
	disc := all.frames[2].Discontinuity
	all.mu.Unlock()
	if !disc {
		t.Fatal("frame after a gap not marked as a discontinuity")
	}
	var late collector
	defer src.Subscribe(late.add)()
	if got := late.seqs(); len(got) != 3 || got[0] != 1 || got[2] != 7 {
		t.Fatalf("late subscriber after a gap got %v, want the keyframe and what followed, as connected ones got", got)
	}
}

// A subscriber that panics must not stop the shared reader: the others keep
// getting frames and the video age keeps advancing.
func TestRingSurvivesPanickingSubscriber(t *testing.T) {
	t.Parallel()
	path, w := createRing(t)
	src := openRing(t, path)
	cancelBad := src.Subscribe(func(f frame.Frame) {
		if f.Header.FrameSeq == 2 {
			panic("subscriber bug")
		}
	})
	defer cancelBad()
	var good collector
	defer src.Subscribe(good.add)()
	for seq := uint64(1); seq <= 4; seq++ {
		writeH264(t, w, seq, seq == 1, []byte{byte(seq), 1, 2, 3})
		want := int(seq)
		waitFor(t, fmt.Sprintf("frame %d", seq), func() bool { return len(good.seqs()) >= want })
	}
	if got := fmt.Sprint(good.seqs()); got != "[1 2 3 4]" {
		t.Fatalf("frames after a subscriber panic: %s, want [1 2 3 4]", got)
	}
	good.mu.Lock()
	fourth := good.frames[3].Arrived
	good.mu.Unlock()
	if la := src.LastArrival(); la.Before(fourth) {
		t.Fatalf("video age from %v, before frame 4 arrived at %v: LastArrival stopped after a subscriber panic", la, fourth)
	}
}

// A writer restart in place whose first keyframe the reader missed: the
// kept GOP goes at once and subscribers hear of it before any frame, the new
// run's deltas are held back (keyframe gating off), and the new run starts
// at its keyframe. A late subscriber never gets the old run's GOP followed by
// the new run's deltas.
func TestRingRestartDropsGOP(t *testing.T) {
	t.Parallel()
	path, w := createRing(t)
	src := openRing(t, path)
	var all collector
	defer src.Subscribe(all.add)()
	breaks := make(chan frame.Break, 16)
	defer src.NotifyBreaks(func(b frame.Break) { breaks <- b })()
	for seq := uint64(1); seq <= 3; seq++ {
		writeH264(t, w, seq, seq == 1, []byte{byte(seq)})
		waitFor(t, fmt.Sprintf("frame %d", seq), func() bool { return len(all.seqs()) == int(seq) })
	}
	w.Close()
	w2, err := shmring.CreateWriter(path, 1<<20) // the same file: its control region zeroed
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	// The new run's keyframe was overwritten before the reader looked. A
	// test cannot make the reader look late (a loaded machine may run it
	// between two commits), so the keyframe is left out: the first commit
	// the reader finds in the new run holds a delta.
	writeH264(t, w2, 2, false, []byte{0x20})
	if b := testwait.Recv(t, breaks, "the restart"); !b.Restart {
		t.Fatalf("break %+v, want a restart", b)
	}
	var late collector
	defer src.Subscribe(late.add)()
	if got := late.seqs(); len(got) != 0 {
		t.Fatalf("subscriber after the restart got %v, want nothing (the old run's GOP dropped)", got)
	}
	writeH264(t, w2, 3, false, []byte{0x30})
	writeH264(t, w2, 4, true, []byte{0x40})
	waitFor(t, "the new run's keyframe", func() bool { return len(late.seqs()) == 1 })
	if got := fmt.Sprint(all.seqs()); got != "[1 2 3 4]" {
		t.Fatalf("connected subscriber got %s, want [1 2 3 4]: the old run, then the new run from its keyframe", got)
	}
	all.mu.Lock()
	f := all.frames[3]
	all.mu.Unlock()
	if !f.Header.Keyframe() || !f.Discontinuity || f.Payload[0] != 0x40 {
		t.Fatalf("first frame of the new run %+v, want keyframe 4 marked as a discontinuity", f.Header)
	}
	if got := fmt.Sprint(late.seqs()); got != "[4]" {
		t.Fatalf("late subscriber got %s, want [4]", got)
	}
}

// A gap is reported at once, before the frame after it.
func TestRingGapNotifies(t *testing.T) {
	t.Parallel()
	path, w := createRing(t)
	src := openRing(t, path)
	var all collector
	defer src.Subscribe(all.add)()
	breaks := make(chan frame.Break, 16)
	defer src.NotifyBreaks(func(b frame.Break) {
		if n := len(all.seqs()); n != 1 {
			t.Errorf("break reported after %d frames, want before the frame after the gap", n)
		}
		breaks <- b
	})()
	writeH264(t, w, 1, true, []byte{1})
	waitFor(t, "frame 1", func() bool { return len(all.seqs()) == 1 })
	writeH264(t, w, 5, false, []byte{5})
	if b := testwait.Recv(t, breaks, "the gap"); b.Restart {
		t.Fatalf("break %+v, want a gap", b)
	}
	waitFor(t, "frame 5", func() bool { return len(all.seqs()) == 2 })
}

// TestRingStartsOnStart: NewRing maps nothing and reads nothing (caddy
// validate provisions the reader and must not attach it); Start does, once;
// a ring closed before it started stays closed.
func TestRingStartsOnStart(t *testing.T) {
	t.Parallel()
	path, w := createRing(t)
	writerMaps := mapped(t, path)
	src, err := NewRing(shmring.ReaderConfig{Path: path}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	writeH264(t, w, 1, true, []byte{1, 2, 3})
	if st := src.Reader().Stats(); st.Polls != 0 || st.Attached || mapped(t, path) != writerMaps {
		t.Fatalf("before Start: %+v, %d mappings (the writer's: %d)", st, mapped(t, path), writerMaps)
	}
	src.Start()
	src.Start() // a second Start (a reloaded config) starts nothing more
	waitFor(t, "the frame", func() bool { return src.Reader().Stats().Frames == 1 })
	if n := mapped(t, path); n != writerMaps+1 {
		t.Errorf("%d mappings after Start, want the writer's %d and one", n, writerMaps)
	}
	src.Close()
	if n := mapped(t, path); n != writerMaps {
		t.Errorf("%d mappings after Close, want the writer's %d", n, writerMaps)
	}

	idle, err := NewRing(shmring.ReaderConfig{Path: path}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Close returns at once, and without the error of a reader that did
	// not stop: there is no reader to wait for.
	if err := idle.Close(); err != nil {
		t.Fatalf("Close of a ring never started: %v", err)
	}
	idle.Start()
	if st := idle.Reader().Stats(); st.Polls != 0 || mapped(t, path) != writerMaps {
		t.Errorf("Start after Close read the ring: %+v", st)
	}
}
