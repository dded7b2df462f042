package shmring

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// A commit whose frame_seq repeats the previous frame's is forwarded, as the
// old service did, unless its bytes are those of that frame (the frame read
// whole before its own commit, TestReaderNextFrameReadEarly).
func TestReaderRepeatedFrameSeq(t *testing.T) {
	t.Parallel()
	path, w := createRing(t, 8192)
	r := attachReader(t, path)
	var got []Frame
	fn := func(f Frame) { got = append(got, f) }
	write := func(seq, id uint64, p []byte) {
		t.Helper()
		if _, err := w.WriteFrame(Header{FrameSeq: seq, FrameID: id, Codec: CodecH264}, p); err != nil {
			t.Fatal(err)
		}
		r.step(fn)
	}
	write(1, 100, []byte("first"))
	write(1, 100, []byte("other")) // another frame under frame_seq 1
	write(1, 100, []byte("other")) // the same bytes committed again
	write(2, 101, []byte("second"))
	var seqs []string
	for _, f := range got {
		seqs = append(seqs, fmt.Sprintf("%d:%s", f.Header.FrameSeq, f.Payload))
	}
	if fmt.Sprint(seqs) != "[1:first 1:other 2:second]" {
		t.Fatalf("delivered %v, want [1:first 1:other 2:second]", seqs)
	}
	for _, f := range got {
		if f.Gap != 0 || f.Restart {
			t.Errorf("frame %d:%s: gap %d restart %t", f.Header.FrameSeq, f.Payload, f.Gap, f.Restart)
		}
	}
	if st := r.Stats(); st.Restarts != 0 || st.Gaps != 0 || st.Frames != 3 {
		t.Errorf("stats %+v", st)
	}
}

// After a writer restart whose first keyframe the reader missed ("sequence
// went back from 5 to 2"), RestartGating holds the new run's deltas back
// until its keyframe; OnBreak reports the restart before any frame shows it,
// and a forward gap too. Without RestartGating the deltas are forwarded.
func TestReaderRestartGatingAndBreaks(t *testing.T) {
	t.Parallel()
	for _, gating := range []bool{true, false} {
		t.Run(fmt.Sprintf("restart_gating=%t", gating), func(t *testing.T) {
			t.Parallel()
			path, w := createRing(t, 8192)
			var breaks []bool
			r := attachReaderWith(t, path, ReaderConfig{RestartGating: gating, OnBreak: func(restart bool) {
				breaks = append(breaks, restart)
			}})
			var got []Frame
			fn := func(f Frame) { got = append(got, f) }
			key := func(seq uint64) uint16 {
				if seq == 1 || seq == 4 {
					return FlagKeyframe
				}
				return 0
			}
			for seq := uint64(1); seq <= 5; seq++ {
				writeN(t, w, seq, seq, key)
				r.step(fn)
			}
			if len(got) != 5 || len(breaks) != 0 {
				t.Fatalf("first run: %d frames, breaks %v", len(got), breaks)
			}
			got = nil
			w.Close()
			w2 := createWriter(t, path, 8192) // in place: the control region zeroed
			writeN(t, w2, 1, 2, key)          // the keyframe is overwritten before the reader looks
			r.step(fn)
			if fmt.Sprint(breaks) != "[true]" {
				t.Fatalf("breaks after the restart %v, want [true] before any frame of the new run", breaks)
			}
			writeN(t, w2, 3, 3, key)
			r.step(fn)
			writeN(t, w2, 4, 4, key)
			r.step(fn)
			var seqs []uint64
			for _, f := range got {
				seqs = append(seqs, f.Header.FrameSeq)
			}
			want := "[2 3 4]"
			if gating {
				want = "[4]"
			}
			if fmt.Sprint(seqs) != want {
				t.Fatalf("new run delivered %v, want %s", seqs, want)
			}
			if !got[0].Restart {
				t.Errorf("first frame of the new run %+v not marked Restart", got[0].Header)
			}
			if gating && (!got[0].Header.Keyframe() || got[0].Gap != 2) {
				t.Errorf("first frame after the restart %+v gap %d, want the keyframe after 2 held back", got[0].Header, got[0].Gap)
			}
			writeN(t, w2, 7, 7, key) // 5 and 6 missed
			r.step(fn)
			if fmt.Sprint(breaks) != "[true false]" {
				t.Errorf("breaks %v, want [true false]: the gap reported too", breaks)
			}
			if f := got[len(got)-1]; f.Header.FrameSeq != 7 || f.Gap != 2 {
				t.Errorf("after a gap: frame %d gap %d, want 7 forwarded (keyframe gating off) with gap 2", f.Header.FrameSeq, f.Gap)
			}
		})
	}
}

// While watched, a paused writer is polled at least every 5 ms, and at least
// twice per learned period; unwatched, the back-off is left as it was.
func TestReaderWatchCapsBackoff(t *testing.T) {
	t.Parallel()
	path, _ := createRing(t, 8192)
	r := attachReader(t, path)
	if c := r.idleCap(); c != 0 || r.Watched() {
		t.Fatalf("unwatched reader: idle cap %v", c)
	}
	un1, un2 := r.Watch(), r.Watch()
	if c := r.idleCap(); c != maxWatchedPoll {
		t.Errorf("watched, period unknown: idle cap %v, want %v", c, maxWatchedPoll)
	}
	r.cad.period = 4 * time.Millisecond // a 250 fps writer
	if c := r.idleCap(); c != 2*time.Millisecond {
		t.Errorf("watched, 4 ms period: idle cap %v, want 2ms", c)
	}
	un1()
	un1() // once only
	if !r.Watched() {
		t.Fatal("one unwatch of two ended the watch")
	}
	un2()
	if r.Watched() || r.idleCap() != 0 {
		t.Fatal("still watched after both unwatched")
	}
}

// The frame that ends a pause lies in the single slot only until the next
// frame replaces it, 33 ms later at 30 fps: a watched reader reads it every
// time. (Unwatched, it polls a writer paused for a second every 100 ms and
// misses about two thirds of them.)
//
// This is a real-time property: it holds while the process runs. A frame
// after a pause is judged only when the writer's next commit came on time
// (within 50 ms): one that came late means the process was not running (a
// CPU quota spent, a busy machine), and a reader cannot read what it was
// given no time to read. Such frames are logged, not judged; so are the
// frames before the pauses, which only teach the reader the period. That a watched reader polls a
// paused writer every 5 ms at most is TestReaderWatchCapsBackoff's and the
// cadence tests', on no clock.
func TestReaderWatchedReadsFrameAfterPause(t *testing.T) {
	if testing.Short() {
		t.Skip("pauses 6 x 1.1 s")
	}
	testwait.SkipRealTime(t)
	t.Parallel()
	const onTime = 50 * time.Millisecond
	path, w := createRing(t, 1<<16)
	frames, r := collect(t, ReaderConfig{Path: path}, 256)
	defer r.Watch()()
	seq := uint64(0)
	write := func(key bool) {
		seq++
		h := Header{FrameSeq: seq, Codec: CodecH264}
		if key {
			h.Flags = FlagKeyframe
		}
		if _, err := w.WriteFrame(h, payloadFor(seq, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	tick := time.NewTicker(33 * time.Millisecond) // the writer's pace
	defer tick.Stop()
	for range 10 {
		<-tick.C
		write(seq == 0)
	}
	const pauses = 6
	var keys []uint64
	judged := map[uint64]bool{} // frames after a pause replaced on time
	for range pauses {
		time.Sleep(1100 * time.Millisecond) // the subject: the pause
		write(true)
		committed := time.Now()
		keys = append(keys, seq)
		time.Sleep(33 * time.Millisecond) // the subject: the next frame 33 ms later
		if time.Since(committed) <= onTime {
			judged[seq] = true
		}
		write(false)
	}
	last := seq
	var missed, late []uint64
	for got := uint64(0); got != last; {
		f := next(t, frames, 10*time.Second)
		got = f.Header.FrameSeq
		for s := got - f.Gap; s < got; s++ {
			if judged[s] {
				missed = append(missed, s)
			} else {
				late = append(late, s)
			}
		}
		if f.Header.Keyframe() && !bytes.Equal(f.Payload, payloadFor(got, 1000)) {
			t.Fatalf("keyframe %d payload differs", got)
		}
	}
	t.Logf("%d of the %d frames after a pause replaced on time and judged", len(judged), pauses)
	if len(late) > 0 {
		t.Logf("missed frames not judged (not after a pause, or replaced late: the process was not running): %v", late)
	}
	if len(missed) > 0 {
		t.Fatalf("missed frames %v (keyframes after the pauses: %v)", missed, keys)
	}
}
