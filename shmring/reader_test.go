package shmring

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func payloadFor(seq uint64, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(seq*31 + uint64(i))
	}
	return p
}

func TestWriterReaderRoundTrip(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "frames")
	w := createWriter(t, path, 1<<16)
	frames, r := collect(t, ReaderConfig{Path: path, Size: 1 << 16}, 100)
	for i := uint64(1); i <= 20; i++ {
		flags := uint16(0)
		if i%5 == 1 {
			flags = FlagKeyframe
		}
		p := payloadFor(i, int(100*i))
		h, err := w.WriteFrame(Header{Flags: flags, Codec: CodecH264}, p)
		if err != nil {
			t.Fatal(err)
		}
		if h.FrameSeq != i || h.Size != uint32(len(p)) || h.CRC32 != Checksum(p) || h.FrameID == 0 {
			t.Fatalf("stored header %+v", h)
		}
		f := next(t, frames, 5*time.Second)
		if f.Header != h || !bytes.Equal(f.Payload, p) || f.Sequence != i || f.Gap != 0 || f.Restart {
			t.Fatalf("frame %d: got %+v", i, f.Header)
		}
	}
	st := r.Stats()
	if st.Frames != 20 || st.Gaps != 0 || st.CRCFailures != 0 || st.TornReads != 0 || !st.Attached || st.SizeMismatch != 0 {
		t.Errorf("stats %+v", st)
	}
	if r.LastArrival().IsZero() || r.Sequence() != 20 {
		t.Errorf("LastArrival %v, Sequence %d", r.LastArrival(), r.Sequence())
	}
	if _, err := w.WriteFrame(Header{}, make([]byte, 1<<16)); err == nil {
		t.Error("oversized payload accepted")
	}
}

func TestNewReaderRejects(t *testing.T) {
	t.Parallel()
	for _, cfg := range []ReaderConfig{{}, {Path: "x", Size: -1}, {Path: "x", Size: 47}} {
		if _, err := NewReader(cfg); err == nil {
			t.Errorf("NewReader(%+v) accepted", cfg)
		}
	}
	if _, err := CreateWriter(filepath.Join(t.TempDir(), "f"), 47); err == nil {
		t.Error("CreateWriter with size 47 accepted")
	}
}

// TestReaderOrderCatchesTornPayload builds the hazard docs/ring.md names: a
// slot overwritten during the copy while the sequence stayed the same. Only
// the CRC catches it.
func TestReaderOrderCatchesTornPayload(t *testing.T) {
	t.Parallel()
	region := alignedCopy(make([]byte, 4096))
	p := payloadFor(1, 200)
	h := Header{FrameSeq: 1, Size: 200, Codec: CodecH264, CRC32: Checksum(p)}
	h.Put(region[OffSlot:])
	copy(region[OffPayload:], p)
	storeU64(region, OffWriteLen, HeaderSize+200)
	storeU64(region, OffSequence, 1)
	if s := readSlot(region, 0, true); s.status != slotOK || !bytes.Equal(s.payload, p) {
		t.Fatalf("clean slot: %+v", s.status)
	}
	region[OffPayload+100] ^= 0xff // half a newer frame
	if s := readSlot(region, 0, true); s.status != slotCRC {
		t.Errorf("torn slot with CRC on: status %d, want slotCRC", s.status)
	}
	if s := readSlot(region, 0, false); s.status != slotOK {
		t.Errorf("torn slot with CRC off: status %d, want slotOK (the documented trade)", s.status)
	}
	if s := readSlot(region, 1, true); s.status != slotUnchanged {
		t.Errorf("same sequence: status %d, want slotUnchanged", s.status)
	}
	storeU64(region, OffWriteLen, HeaderSize+201)
	if s := readSlot(region, 0, true); s.status != slotSizeMismatch {
		t.Errorf("size != write_len-32: status %d", s.status)
	}
	for _, wl := range []uint64{0, 31, 4096 - 16 + 1, 1 << 63} {
		storeU64(region, OffWriteLen, wl)
		if s := readSlot(region, 0, true); s.status != slotWriteLen {
			t.Errorf("write_len %d: status %d, want slotWriteLen", wl, s.status)
		}
	}
	storeU64(region, OffSequence, 0)
	if s := readSlot(region, 0, true); s.status != slotEmpty {
		t.Errorf("sequence 0: status %d", s.status)
	}
}

func TestParseRegionErrors(t *testing.T) {
	t.Parallel()
	if _, err := ParseRegion(make([]byte, 47), true); err == nil {
		t.Error("47-byte region accepted")
	}
	_, err := ParseRegion(make([]byte, 4096), true)
	if err == nil || fmt.Sprint(err) == "" {
		t.Error("empty region accepted")
	}
}

// TestReaderNextFrameReadEarly: the writer has stored frame 2 whole,
// write_len included, but not yet its sequence. The reader may deliver it
// under sequence 1; the commit of sequence 2 must then neither deliver it
// again nor count as a restart.
func TestReaderNextFrameReadEarly(t *testing.T) {
	t.Parallel()
	path, w := createRing(t, 8192)
	writeN(t, w, 1, 1, nil)
	r := attachReader(t, path)
	var got []Frame
	fn := func(f Frame) { got = append(got, f) }
	r.step(fn)
	// Frame 2 stored whole, sequence still 1; the reader has not read 1 yet
	// from its point of view.
	mem := w.m.mem
	p := payloadFor(2, 77)
	Header{FrameSeq: 2, Size: 77, CRC32: Checksum(p)}.Put(mem[OffSlot:])
	copy(mem[OffPayload:], p)
	storeU64(mem, OffWriteLen, HeaderSize+77)
	r.lastSeq = 0 // as if the reader had not yet seen sequence 1
	r.step(fn)
	storeU64(mem, OffSequence, 2)
	r.step(fn)
	if len(got) != 2 || got[1].Header.FrameSeq != 2 || got[1].Sequence != 1 {
		t.Fatalf("got %d frames: %+v", len(got), got)
	}
	if st := r.Stats(); st.Restarts != 0 || st.Frames != 2 {
		t.Errorf("stats %+v", st)
	}
}
