package shmring

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// The Python 3 writer and reader of tests/python, written from docs/ring.md
// with the standard library only: an implementation independent of this one.
const pyRing = "../tests/python/sdr_ring.py"

func python(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not on PATH (scripts/deps.sh installs it); skipping the cross-language test")
	}
	return py
}

// checkPattern reports whether p is the deterministic payload of frame_seq.
func checkPattern(seq uint64, p []byte) bool {
	return bytes.Equal(p, payloadFor(seq, len(p)))
}

// TestPythonWriterGoReader: Python writes 10,000 frames at 1 kHz with random
// sizes and keyframes; the Go reader delivers only frames whose CRC verifies,
// in order, with every frame it did not deliver counted as a gap.
func TestPythonWriterGoReader(t *testing.T) {
	t.Parallel()
	py := python(t)
	const n = 10000
	path := filepath.Join(t.TempDir(), "ipc", "frames")
	frames, r := collect(t, ReaderConfig{Path: path, Size: 1 << 20, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}, n+1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, pyRing, "write", path, "--size", "1048576", "--frames", "10000",
		"--rate", "1000", "--seed", "7", "--max-bytes", "65536").CombinedOutput()
	if err != nil {
		t.Fatalf("python writer: %v\n%s", err, out)
	}
	var summary struct{ Frames, Keyframes, Sequence int }
	if err := json.Unmarshal(bytes.TrimSpace(out), &summary); err != nil || summary.Sequence != n {
		t.Fatalf("python writer summary %q: %v", out, err)
	}
	var got []Frame
	for {
		f := next(t, frames, 10*time.Second)
		got = append(got, f)
		if f.Header.FrameSeq == n {
			break
		}
	}
	var prev, gaps, keys uint64
	for i, f := range got {
		if Checksum(f.Payload) != f.Header.CRC32 || int(f.Header.Size) != len(f.Payload) || !checkPattern(f.Header.FrameSeq, f.Payload) {
			t.Fatalf("frame %d (frame_seq %d) does not verify", i, f.Header.FrameSeq)
		}
		if f.Header.FrameSeq <= prev || f.Restart {
			t.Fatalf("frame_seq %d after %d (restart %v)", f.Header.FrameSeq, prev, f.Restart)
		}
		if i > 0 && f.Gap != f.Header.FrameSeq-prev-1 {
			t.Fatalf("frame_seq %d after %d with Gap %d", f.Header.FrameSeq, prev, f.Gap)
		}
		if f.Sequence != f.Header.FrameSeq && f.Sequence+1 != f.Header.FrameSeq {
			t.Fatalf("sequence %d, frame_seq %d (the writer commits both from 1; the slot may hold the next frame whole before its sequence)", f.Sequence, f.Header.FrameSeq)
		}
		if i > 0 {
			gaps += f.Gap
		}
		if f.Header.Keyframe() {
			keys++
		}
		prev = f.Header.FrameSeq
	}
	first := got[0].Header.FrameSeq
	st := r.Stats()
	if uint64(len(got))+gaps != n-first+1 || st.Gaps != gaps || st.Frames != uint64(len(got)) {
		t.Errorf("%d delivered + %d gaps != %d frames from %d; stats %+v", len(got), gaps, n-first+1, first, st)
	}
	// How many a reader that polls sees depends on the machine's load
	// (speed is bench/ring's); a few hundred shows it went on reading.
	if len(got) < n/100 {
		t.Errorf("only %d of %d frames delivered", len(got), n)
	}
	if keys == 0 {
		t.Error("no keyframe delivered")
	}
	t.Logf("delivered %d/%d (first %d), %d keyframes, gaps %d, torn %d, crc failures %d, polls %d, period %v",
		len(got), n, first, keys, gaps, st.TornReads, st.CRCFailures, st.Polls, r.Period())
}

// TestGoWriterPythonReader: the Python reader reads back what the Go writer commits.
func TestGoWriterPythonReader(t *testing.T) {
	t.Parallel()
	py := python(t)
	const n = 2000
	path := filepath.Join(t.TempDir(), "frames")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, pyRing, "read", path, "--until-seq", "2000", "--timeout", "45")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<16), 1<<20)
	if !lines.Scan() {
		t.Fatalf("python reader did not start: %s", stderr.String())
	}
	w := createWriter(t, path, 1<<20) // closed after the deferred cancel: the writer goroutine stops first
	rnd := rand.New(rand.NewPCG(3, 4))
	want := make(map[uint64]Header, n)
	written := make(chan struct{})
	go func() {
		defer close(written)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := uint64(1); i <= n && ctx.Err() == nil; i++ {
			<-tick.C
			flags := uint16(0)
			if i%60 == 1 {
				flags = FlagKeyframe
			}
			h, err := w.WriteFrame(Header{Flags: flags, Codec: CodecHEVC}, payloadFor(i, 1+rnd.IntN(100000)))
			if err != nil {
				if ctx.Err() == nil {
					t.Error(err)
				}
				return
			}
			want[i] = h // read only after the reader exits
		}
	}()
	type line struct {
		Summary     bool   `json:"summary"`
		Sequence    uint64 `json:"sequence"`
		FrameID     uint64 `json:"frame_id"`
		FrameSeq    uint64 `json:"frame_seq"`
		Size        uint32 `json:"size"`
		Flags       uint16 `json:"flags"`
		Codec       uint16 `json:"codec"`
		CRC32       uint32 `json:"crc32"`
		PayloadCRC  uint32 `json:"payload_crc"`
		PatternOK   bool   `json:"pattern_ok"`
		Frames      int    `json:"frames"`
		CRCFailures int    `json:"crc_failures"`
	}
	var got []line
	var sum line
	for lines.Scan() {
		var l line
		if err := json.Unmarshal(lines.Bytes(), &l); err != nil {
			t.Fatalf("python reader line %q: %v", lines.Text(), err)
		}
		if l.Summary {
			sum = l
			break
		}
		got = append(got, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("python reader: %v (summary %+v)\n%s", err, sum, stderr.String())
	}
	<-written
	if len(got) == 0 || got[len(got)-1].FrameSeq != n {
		t.Fatalf("python reader got %d frames, summary %+v", len(got), sum)
	}
	var prev uint64
	for _, l := range got {
		h := want[l.FrameSeq]
		if l.FrameSeq <= prev || !l.PatternOK || l.PayloadCRC != l.CRC32 || l.CRC32 != h.CRC32 ||
			l.Size != h.Size || l.FrameID != h.FrameID || l.Flags != h.Flags || Codec(l.Codec) != CodecHEVC || (l.Sequence != l.FrameSeq && l.Sequence+1 != l.FrameSeq) {
			t.Fatalf("python read %+v, Go wrote %+v (previous frame_seq %d)", l, h, prev)
		}
		prev = l.FrameSeq
	}
	t.Logf("python reader verified %d of %d frames (crc failures %d)", len(got), n, sum.CRCFailures)
}

// TestTornWritesNeverDelivered: a writer (in another process) rewrites the
// slot continuously and advances the sequence only now and then. Every frame
// the reader delivers must match its CRC and its content pattern.
func TestTornWritesNeverDelivered(t *testing.T) {
	t.Parallel()
	py := python(t)
	path := filepath.Join(t.TempDir(), "frames")
	frames, r := collect(t, ReaderConfig{Path: path}, 1<<16)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, pyRing, "write", path, "--size", "1048576", "--torn", "2",
		"--min-bytes", "1000", "--max-bytes", "200000")
	done := make(chan error, 1)
	var out []byte
	go func() {
		var err error
		out, err = cmd.CombinedOutput()
		done <- err
	}()
	var n int
	check := func(f Frame) {
		n++
		if Checksum(f.Payload) != f.Header.CRC32 || !checkPattern(f.Header.FrameSeq, f.Payload) {
			t.Fatalf("delivered a torn frame: frame_seq %d, %d bytes", f.Header.FrameSeq, len(f.Payload))
		}
	}
wait:
	for {
		select {
		case f := <-frames:
			check(f)
		case err := <-done:
			if err != nil {
				t.Fatalf("python torn writer: %v\n%s", err, out)
			}
			break wait
		}
	}
	// The writer is gone: once the reader has polled twice more, it has
	// handed on whatever the last commit holds.
	p0 := r.Stats().Polls
	testwait.For(t, "two more polls of the ring", func() bool { return r.Stats().Polls >= p0+2 })
	for len(frames) > 0 {
		check(<-frames)
	}
	st := r.Stats()
	if n == 0 {
		t.Fatalf("no frame delivered; stats %+v", st)
	}
	t.Logf("writer %s; delivered %d, discarded: torn %d, crc %d, malformed %d", bytes.TrimSpace(out), n, st.TornReads, st.CRCFailures, st.Malformed)
}

// TestTornWritesInProcess is the same hazard with a Go goroutine as the
// writer, which rewrites far faster than Python, with the reader's CRC check
// both on (nothing torn may pass) and off (a torn frame may pass: the test
// logs how many, showing what the check defends against).
func TestTornWritesInProcess(t *testing.T) {
	t.Parallel()
	for _, crcOff := range []bool{false, true} {
		path, w := createRing(t, 1<<20)
		frames, r := collect(t, ReaderConfig{Path: path, DisableCRC: crcOff}, 1<<16)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		done := make(chan struct{})
		go func() {
			defer close(done)
			mem := w.m.mem
			rnd := rand.New(rand.NewPCG(1, 2))
			var seq uint64
			for i := uint64(1); ctx.Err() == nil; i++ {
				p := payloadFor(i, 1000+rnd.IntN(300000))
				Header{FrameSeq: i, Size: uint32(len(p)), CRC32: Checksum(p)}.Put(mem[OffSlot:])
				copy(mem[OffPayload:], p)
				storeU64(mem, OffWriteLen, uint64(HeaderSize+len(p)))
				if i%20 == 0 {
					seq++
					storeU64(mem, OffSequence, seq)
				}
			}
		}()
		var n, bad int
	loop:
		for {
			select {
			case f := <-frames:
				n++
				if Checksum(f.Payload) != f.Header.CRC32 || !checkPattern(f.Header.FrameSeq, f.Payload) {
					bad++
				}
			case <-done:
				break loop
			}
		}
		cancel()
		w.Close()
		st := r.Stats()
		if !crcOff && bad > 0 {
			t.Fatalf("CRC on: %d of %d delivered frames torn; stats %+v", bad, n, st)
		}
		t.Logf("crc off=%v: delivered %d, torn among them %d; discarded torn %d, crc %d, malformed %d",
			crcOff, n, bad, st.TornReads, st.CRCFailures, st.Malformed)
	}
}
