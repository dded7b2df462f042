package shmring

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// TestReaderKeepsUpWithFastLargeFrames is the scenario of a stall reported
// with sdr_stream in the built binary: a writer committing 200 KB frames
// every 3 ms, keyframe gating on, a reader in a busy process (a live heap of
// pointers and a goroutine allocating 200 KB buffers, like the hub's wire
// copies, keep the garbage collector running). The reader must keep going:
// it delivers keyframes and delta frames while the writer commits, follows
// the writer to its last commit, and ends with its context. The writer is
// the Python one (another process, like the simulator) when python3 is
// there, else a goroutine.
//
// CRC failures are not judged: every frame has the same size, so a copy
// that the writer's next frame overwrites before its commit keeps the
// sequence and write_len, and only the CRC tells; a starved reader meets
// that more often.
//
// The cause of that stall (an allocation between the two loads of the
// sequence, tearing every copy) is proven gone by
// TestReadSlotAllocatesOutsideTheCopy. How long the reader may lag is speed,
// which a loaded machine decides: the longest stall is logged here, and
// bench/ring measures commit-to-delivery latency (max_us).
func TestReaderKeepsUpWithFastLargeFrames(t *testing.T) {
	testwait.SkipRealTime(t)
	if testing.Short() {
		t.Skip("runs 10 s")
	}
	const (
		period = 3 * time.Millisecond
		size   = 200_000
		runFor = 10 * time.Second
	)
	path := filepath.Join(t.TempDir(), "frames")
	r, err := NewReader(ReaderConfig{Path: path, KeyframeGating: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The busy process.
	type node struct {
		next *node
		pad  [6]*int
	}
	live := make([]*node, 0, 500_000)
	for range cap(live) {
		live = append(live, &node{})
	}
	busyDone := make(chan struct{})
	go func() {
		defer close(busyDone)
		for ctx.Err() == nil {
			b := make([]byte, size)
			copy(b, b)
			time.Sleep(100 * time.Microsecond) // the subject: the busy process allocates all the time
		}
	}()

	runDone := make(chan error, 1)
	var delivered, keyframes atomic.Int64
	go func() {
		runDone <- r.Run(ctx, func(f Frame) {
			delivered.Add(1)
			if f.Header.Keyframe() {
				keyframes.Add(1)
			}
			_ = append([]byte(nil), f.Payload...) // the hub's wire copy
		})
	}()

	wctx, wcancel := context.WithTimeout(ctx, runFor+2*time.Second)
	defer wcancel()
	writerDone := make(chan error, 1)
	if py, err := exec.LookPath("python3"); err == nil {
		cmd := exec.CommandContext(wctx, py, pyRing, "write", path, "--size", "4194304", "--frames", "3333",
			"--rate", "333", "--min-bytes", "200000", "--max-bytes", "200000", "--key-every", "60")
		go func() {
			out, err := cmd.CombinedOutput()
			if err != nil && wctx.Err() == nil {
				t.Logf("python writer: %s", out)
				writerDone <- err
				return
			}
			writerDone <- nil
		}()
	} else {
		w := createWriter(t, path, 4<<20)
		go func() {
			payload := make([]byte, size)
			tick := time.NewTicker(period)
			defer tick.Stop()
			for i := uint64(1); i <= uint64(runFor/period); i++ {
				select {
				case <-wctx.Done():
					writerDone <- nil
					return
				case <-tick.C:
				}
				payload[0], payload[size-1] = byte(i), byte(i>>8)
				flags := uint16(0)
				if i%60 == 1 {
					flags = FlagKeyframe
				}
				if _, err := w.WriteFrame(Header{Flags: flags, Codec: CodecH264}, payload); err != nil {
					writerDone <- err
					return
				}
			}
			writerDone <- nil
		}()
	}

	// Sample what the health JSON and the safety gate read, from the first
	// commit seen until the writer ends, for the log: the longest time
	// either stood still while the writer committed.
	var (
		lastSeq, worstSeqAt uint64
		seqAt, arrAt        time.Time
		lastArr             time.Time
		worstSeq, worstArr  time.Duration
	)
	sample := time.NewTicker(10 * time.Millisecond)
	defer sample.Stop()
	hang := testwait.After(runFor + 20*time.Second)
	var werr error
	for finished := false; !finished; {
		select {
		case werr = <-writerDone:
			finished = true
			continue
		case <-hang:
			t.Fatalf("the writer did not finish within %v", testwait.Timeout(runFor+20*time.Second))
		case <-sample.C:
		}
		now := time.Now()
		s, a := r.Sequence(), r.LastArrival()
		switch {
		case lastSeq == 0:
			if s != 0 {
				lastSeq, seqAt, lastArr, arrAt = s, now, a, now
			}
			continue
		case s != lastSeq:
			lastSeq, seqAt = s, now
		case now.Sub(seqAt) > worstSeq:
			worstSeq, worstSeqAt = now.Sub(seqAt), s
		}
		if !a.Equal(lastArr) {
			lastArr, arrAt = a, now
		} else if now.Sub(arrAt) > worstArr {
			worstArr = now.Sub(arrAt)
		}
	}
	if werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	// What the reader delivered while the writer committed.
	during, keysDuring := delivered.Load(), keyframes.Load()
	in, err := Inspect(path, false)
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, fmt.Sprintf("the reader to see the writer's last commit (sequence %d)", in.Sequence), func() bool {
		return r.Sequence() == in.Sequence
	})
	cancel()
	if err := testwait.Recv(t, runDone, "the reader to end with its context"); err != nil {
		t.Fatal(err)
	}
	<-busyDone
	st := r.Stats()
	t.Logf("reader seq %d, delivered %d (%d keyframes) while the writer ran; longest stall (speed, not judged here): sequence %v (at %d), arrival %v; %+v (live heap %d)",
		r.Sequence(), during, keysDuring, worstSeq, worstSeqAt, worstArr, st, len(live))
	if keysDuring == 0 || during == keysDuring {
		t.Errorf("while the writer committed the reader delivered %d frames, %d of them keyframes: want keyframes and delta frames", during, keysDuring)
	}
}

// A copy allocates nothing once the scratch buffer has grown, whether it
// verifies or fails (torn, or a CRC mismatch): no allocation (which can
// wait for the garbage collector for milliseconds) lies between the two
// loads of the sequence, and failed copies leave no garbage behind. The
// Reader copies a verified payload out after the copy (or, with
// PooledPayloads, delivers the buffer itself).
func TestReadSlotAllocatesOutsideTheCopy(t *testing.T) {
	p := payloadFor(9, 200_000)
	region := alignedCopy(make([]byte, OffPayload+len(p)))
	Header{FrameSeq: 9, Size: uint32(len(p)), Codec: CodecH264, CRC32: Checksum(p)}.Put(region[OffSlot:OffPayload])
	copy(region[OffPayload:], p)
	storeU64(region, OffWriteLen, uint64(HeaderSize+len(p)))
	storeU64(region, OffSequence, 3)
	var scratch []byte
	if s := readSlotInto(region, 0, true, 0, &scratch); s.status != slotOK || !bytes.Equal(s.payload, p) || cap(s.payload) != len(p) {
		t.Fatalf("first read: status %d, payload %d bytes (cap %d)", s.status, len(s.payload), cap(s.payload))
	}
	if n := testing.AllocsPerRun(20, func() { readSlotInto(region, 0, true, 0, &scratch) }); n != 0 {
		t.Errorf("a verified read allocated %v times, want 0", n)
	}
	region[OffPayload+100] ^= 0xff
	if n := testing.AllocsPerRun(20, func() {
		if s := readSlotInto(region, 0, true, 0, &scratch); s.status != slotCRC {
			t.Fatalf("status %d, want a CRC failure", s.status)
		}
	}); n != 0 {
		t.Errorf("a copy that failed its CRC allocated %v times, want 0", n)
	}
}
