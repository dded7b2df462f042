package shmring

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// FuzzParseRegion runs the reader's parse path over arbitrary region bytes:
// no panic, no out-of-range access, and anything accepted is consistent.
func FuzzParseRegion(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join(vectorDir, "region_4096_seq3_keyframe.bin")); err == nil {
		f.Add(b[:128], true)
		f.Add(b, false)
	}
	f.Add(make([]byte, 48), true)
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0, 0, 0, 0, 0}, true)
	seed := alignedCopy(make([]byte, 80))
	storeU64(seed, OffSequence, 9)
	storeU64(seed, OffWriteLen, 64)
	Header{FrameSeq: 9, Size: 32, CRC32: Checksum(make([]byte, 32))}.Put(seed[OffSlot:])
	f.Add(seed, true)
	f.Fuzz(func(t *testing.T, region []byte, verify bool) {
		c, err := ParseRegion(region, verify)
		if err != nil {
			if errors.Is(err, ErrTooSmall) != (len(region) < OffPayload) {
				t.Fatalf("ErrTooSmall mismatch for %d bytes: %v", len(region), err)
			}
			return
		}
		if c.Sequence == 0 || c.WriteLen < HeaderSize || c.WriteLen > uint64(len(region)-ControlSize) ||
			uint64(len(c.Payload)) != c.WriteLen-HeaderSize || c.Header.Size != uint32(len(c.Payload)) {
			t.Fatalf("accepted inconsistent region: %+v", c)
		}
		if verify && Checksum(c.Payload) != c.Header.CRC32 {
			t.Fatal("accepted a CRC mismatch")
		}
	})
}

// A pollScript is a FuzzReaderPolls input: a sequence of writer actions
// (records of pollRecordSize bytes; missing bytes read as 0), each a
// change of the control region and slot made some time after the one
// before. Between actions the reader polls when its sleeps end, as Run
// has it do, each sleep ending late by the record's jitter; a reader that
// would poll more than maxGapPolls times before the action is descheduled
// until it.
type pollScript struct{ b []byte }

const (
	fuzzFrameCap   = 2048 // of a 4096-byte region
	pollRecordSize = 26
	maxGapPolls    = 64
	maxRecords     = 512
)

// pollRecord is one writer action of a pollScript.
type pollRecord struct {
	op    uint8  // bits 0-1 kind, 2-3 sequence change, 4 frame_seq = fs, 5 bad CRC, 6-7 write_len form
	v     uint64 // operand of the sequence change (and write_len's, for wlRaw)
	plen  uint16 // payload length, modulo what the region holds
	fs    uint64 // frame_seq, with op bit 4 (else the previous one + 1)
	flags uint16
	unit  uint8  // bits 0-1 the unit of wait (us, ms, s, min), bits 2-7 how late each sleep ends, in 10 us
	wait  uint32 // time since the previous action
}

// Kinds of action, sequence changes and write_len forms of a pollRecord.
const (
	recCommit   = 0 // a frame into the slot, then write_len and sequence
	recSequence = 1 // the sequence alone
	recZero     = 2 // the control region zeroed (a writer's start)
	recIdle     = 3 // nothing

	seqNext  = 0 // sequence + 1
	seqJump  = 1 // sequence + v (wrapping)
	seqSet   = 2 // sequence = v
	seqStays = 3 // unchanged

	wlExact  = 0 // write_len = 32 + payload, and the header's size agrees
	wlSizeBy = 2 // the header's size is one more than the payload
	wlRaw    = 3 // write_len = v (anything)
)

func (s *pollScript) next() (pollRecord, bool) {
	if len(s.b) == 0 {
		return pollRecord{}, false
	}
	var b [pollRecordSize]byte
	s.b = s.b[copy(b[:], s.b):]
	le := binary.LittleEndian
	return pollRecord{op: b[0], v: le.Uint64(b[1:]), plen: le.Uint16(b[9:]), fs: le.Uint64(b[11:]),
		flags: le.Uint16(b[19:]), unit: b[21], wait: le.Uint32(b[22:])}, true
}

func (p pollRecord) bytes() []byte {
	le := binary.LittleEndian
	b := append(make([]byte, 0, pollRecordSize), p.op)
	b = le.AppendUint64(b, p.v)
	b = le.AppendUint16(b, p.plen)
	b = le.AppendUint64(b, p.fs)
	b = le.AppendUint16(b, p.flags)
	b = append(b, p.unit)
	return le.AppendUint32(b, p.wait)
}

// frames60 is a script of a writer committing n frames of 100 bytes at 60
// fps, op giving each commit's sequence change.
func frames60(n int, op uint8, v uint64) []byte {
	var b []byte
	for range n {
		b = append(b, pollRecord{op: op, v: v, plen: 100, flags: FlagKeyframe, wait: 16667}.bytes()...)
	}
	return b
}

// FuzzReaderPolls drives the reader's poll step (Reader.step, what Run
// calls between its sleeps) through arbitrary sequences of control-region
// states (sequence, write_len, header and payload) over time, on a clock of
// the test's own, and checks every poll:
//   - it returns (all polls of an input within a hang detector), never
//     panics, and asks for a sleep of more than 0 and at most the longest
//     back-off;
//   - a frame it delivers is exactly what the region holds, and what the
//     region holds is a valid commit: a sequence not 0, write_len within
//     the region, the header's size write_len - 32, a matching CRC when
//     checked, and a payload that is not empty (an empty one is dropped as
//     malformed) and within the frame cap (half the region);
//   - progress: a valid commit under a sequence the reader has not seen,
//     whose bytes differ from the last frame delivered, is delivered by the
//     first poll after it; and a last commit after the whole script is.
//
// The first seed is issue 19's break-in: a writer at 60 fps whose commit,
// on its schedule, jumps the sequence by 8.3e11.
func FuzzReaderPolls(f *testing.F) {
	jump := frames60(20, recCommit, 0)
	jump = append(jump, frames60(1, recCommit|seqJump<<2, absurdJump)...)
	jump = append(jump, frames60(5, recCommit, 0)...)
	f.Add(jump, true)
	// The jump undone by the writer's next commit (one hostile write),
	// then the control region zeroed (the writer starting again).
	back := frames60(20, recCommit, 0)
	back = append(back, frames60(1, recSequence|seqJump<<2, absurdJump)...)
	back = append(back, frames60(1, recCommit|seqSet<<2, 21)...)
	back = append(back, pollRecord{op: recZero, wait: 5000}.bytes()...)
	back = append(back, frames60(3, recCommit, 0)...)
	f.Add(back, false)
	// Malformed slots (write_len out of range, a size that disagrees, a
	// bad CRC, a sequence that stays, an empty payload), an hour's stall,
	// a wrapping jump.
	var bad []byte
	for _, r := range []pollRecord{
		{op: recCommit, plen: 0, wait: 1000},
		{op: recCommit | wlRaw<<6, v: 1 << 40, plen: 10, wait: 1000},
		{op: recCommit | wlSizeBy<<6, plen: 10, wait: 1000},
		{op: recCommit | 1<<5, plen: 10, wait: 1000},
		{op: recCommit | seqStays<<2, plen: 11, wait: 1000},
		{op: recCommit, plen: 4000, unit: 3, wait: 60}, // over the cap
		{op: recCommit, plen: 2048, wait: 100},
		{op: recCommit | seqJump<<2, v: 1 << 63, plen: 12, unit: 10 << 2, wait: 3000},
	} {
		bad = append(bad, r.bytes()...)
	}
	f.Add(bad, true)
	f.Add([]byte{}, true)

	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, script []byte, verifyCRC bool) {
		const regionSize = 4096
		region := alignedCopy(make([]byte, regionSize))
		// Scripts of odd length run with pooled payloads: the player holds
		// each delivered frame until the next one and checks that its
		// bytes stayed.
		pooled := len(script)%2 == 1
		r, err := NewReader(ReaderConfig{Path: filepath.Join(dir, "absent"), DisableCRC: !verifyCRC, MaxFrameSize: fuzzFrameCap,
			PooledPayloads: pooled})
		if err != nil {
			t.Fatal(err)
		}
		p := &pollPlayer{t: t, r: r, region: region, verifyCRC: verifyCRC, now: time.Unix(1_700_000_000, 0)}
		r.clock = func() time.Time { return p.now }
		// The region is the mapping. The path does not exist, so the
		// reader keeps it (as it keeps a deleted ring file's).
		r.install(&mapping{mem: region, id: fileID{size: regionSize}})
		defer func() { r.m = nil }()
		done := make(chan struct{}, 1)
		go func() {
			defer func() { done <- struct{}{} }()
			p.play(&pollScript{b: script})
		}()
		select {
		case <-done:
		case <-testwait.After(30 * time.Second):
			t.Fatalf("the polls of a %d-byte script did not return within %s", len(script), testwait.Timeout(30*time.Second))
		}
	})
}

// pollPlayer plays a pollScript against a reader whose mapping is region
// and whose clock reads now, and checks each poll (FuzzReaderPolls).
type pollPlayer struct {
	t         *testing.T
	r         *Reader
	region    []byte
	verifyCRC bool
	now       time.Time

	seq      uint64 // the sequence the region holds
	frameSeq uint64 // of the last frame written
	lastPoll time.Time
	sleep    time.Duration // what the last poll asked for
	lastSeen uint64        // the last sequence other than 0 a poll found
	lastSlot []byte        // header and payload of the last frame delivered
	lastFS   uint64
	polls    int
	got      []Frame
	held     Frame // the last frame delivered, until the next (pooled payloads are released then)
}

// poll runs one step at p.now and checks it; false after a failure.
func (p *pollPlayer) poll() bool {
	t, region := p.t, p.region
	p.got = p.got[:0]
	d := p.r.step(func(f Frame) { p.got = append(p.got, f) })
	p.r.slept, p.sleep, p.lastPoll = d, d, p.now
	p.polls++
	if d <= 0 || d > stalledMaxPoll {
		t.Errorf("poll %d: sleep %v, want within (0, %v]", p.polls, d, stalledMaxPoll)
		return false
	}
	wl := loadU64(region, OffWriteLen)
	valid := p.seq != 0 && wl > HeaderSize && wl <= uint64(len(region)-ControlSize)
	var slot []byte
	var h Header
	if valid {
		slot = region[OffSlot : OffSlot+int(wl)]
		h, _ = ParseHeader(slot)
		valid = uint64(h.Size) == wl-HeaderSize && (!p.verifyCRC || Checksum(slot[HeaderSize:]) == h.CRC32) &&
			wl-HeaderSize <= fuzzFrameCap
	}
	switch {
	case len(p.got) > 1:
		t.Errorf("poll %d delivered %d frames", p.polls, len(p.got))
		return false
	case len(p.got) == 1:
		f := p.got[0]
		if p.held.Payload != nil {
			if !bytes.Equal(p.held.Payload, p.lastSlot[HeaderSize:]) {
				t.Errorf("poll %d: frame_seq %d, still held, lost its payload when the next frame was read", p.polls, p.held.Header.FrameSeq)
				return false
			}
			p.held.Release()
		}
		p.held = f
		if !valid {
			t.Errorf("poll %d delivered frame_seq %d from a region that holds no valid commit (sequence %d, write_len %d)",
				p.polls, f.Header.FrameSeq, p.seq, wl)
			return false
		}
		if f.Sequence != p.seq || f.Header != h || !bytes.Equal(f.Payload, slot[HeaderSize:]) || !f.Arrived.Equal(p.now) {
			t.Errorf("poll %d delivered sequence %d %+v (%d bytes), the region holds sequence %d %+v (%d bytes)",
				p.polls, f.Sequence, f.Header, len(f.Payload), p.seq, h, len(slot)-HeaderSize)
			return false
		}
		p.lastSlot, p.lastFS = bytes.Clone(slot), h.FrameSeq
	case valid && p.seq != p.lastSeen && !bytes.Equal(slot, p.lastSlot):
		t.Errorf("poll %d did not deliver the new commit: sequence %d (last seen %d), %+v", p.polls, p.seq, p.lastSeen, h)
		return false
	}
	if p.seq != 0 {
		p.lastSeen = p.seq
	}
	return true
}

// until polls whenever the reader's sleep ends (late by late) before at,
// then sets the clock to at.
func (p *pollPlayer) until(at time.Time, late time.Duration) bool {
	for range maxGapPolls {
		next := p.lastPoll.Add(p.sleep + late)
		if next.After(at) {
			break
		}
		p.now = next
		if !p.poll() {
			return false
		}
	}
	p.now = at
	return true
}

// write stores a frame into the slot and its write_len.
func (p *pollPlayer) write(frameSeq uint64, n int, flags uint16, badCRC bool, wlForm uint8, rawLen uint64) {
	payload := payloadFor(frameSeq, n)
	h := Header{FrameID: uint64(p.now.UnixNano()), FrameSeq: frameSeq, Size: uint32(n), Flags: flags,
		Codec: CodecH264, CRC32: Checksum(payload)}
	if badCRC {
		h.CRC32 ^= 0x5a5a5a5a
	}
	wl := uint64(HeaderSize + n)
	switch wlForm {
	case wlSizeBy:
		h.Size++
	case wlRaw:
		wl = rawLen
	}
	h.Put(p.region[OffSlot:OffPayload])
	copy(p.region[OffPayload:], payload)
	storeU64(p.region, OffWriteLen, wl)
}

func (p *pollPlayer) play(s *pollScript) {
	p.lastPoll = p.now
	p.sleep = 0
	if !p.poll() {
		return
	}
	units := [...]time.Duration{time.Microsecond, time.Millisecond, time.Second, time.Minute}
	for range maxRecords {
		rec, ok := s.next()
		if !ok {
			break
		}
		late := time.Duration(rec.unit>>2) * 10 * time.Microsecond
		if !p.until(p.now.Add(time.Duration(rec.wait)*units[rec.unit&3]), late) {
			return
		}
		switch kind := rec.op & 3; kind {
		case recCommit, recSequence:
			if kind == recCommit {
				p.frameSeq++
				if rec.op&(1<<4) != 0 {
					p.frameSeq = rec.fs
				}
				n := int(rec.plen) % (len(p.region) - OffPayload + 1)
				p.write(p.frameSeq, n, rec.flags, rec.op&(1<<5) != 0, rec.op>>6, rec.v)
			}
			switch (rec.op >> 2) & 3 {
			case seqNext:
				p.seq++
			case seqJump:
				p.seq += rec.v
			case seqSet:
				p.seq = rec.v
			}
			storeU64(p.region, OffSequence, p.seq)
		case recZero:
			p.seq = 0
			storeU64(p.region, OffSequence, 0)
			storeU64(p.region, OffWriteLen, 0)
		}
	}
	// Whatever came before, a new frame under a new sequence is delivered
	// by the next poll.
	if !p.until(p.now.Add(time.Millisecond), 0) {
		return
	}
	p.seq = p.lastSeen + 1
	if p.seq == 0 {
		p.seq = 1
	}
	p.write(p.lastFS+1, 64, 0, false, wlExact, 0)
	storeU64(p.region, OffSequence, p.seq)
	if next := p.lastPoll.Add(p.sleep); next.After(p.now) {
		p.now = next
	}
	if !p.poll() {
		return
	}
	if len(p.got) != 1 {
		p.t.Errorf("the last commit (sequence %d) was not delivered", p.seq)
	}
}
