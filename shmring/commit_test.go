package shmring

import (
	"bytes"
	"fmt"
	"testing"
)

// TestCommitCaughtMidwayNeverVerifies: a reader that copies the slot while
// the Go writer is in the middle of a commit gets the frame before, the
// frame being committed, or a copy that it drops (torn, size mismatch, CRC
// failure): never a mix that verifies, such as the next frame's frame_id,
// frame_seq or flags over the previous frame's payload.
//
// Every state that the ring passes through is tried: each store of the
// commit (commit.store, the writer's own order) done up to each of its
// bytes. A reader's copy spans time, so the header is taken from one state
// and the payload from the same or any later one, with sequence and
// write_len as the reader loads them before and after. (The header itself
// is taken from one state: a reader that loads part of it before the writer
// rewrites it and the rest after needs its own check.)
func TestCommitCaughtMidwayNeverVerifies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		oldSize, newSize int
	}{
		{"sizes differ", 60, 90},
		{"same size", 80, 80},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			frame := func(seq uint64, n int, flags uint16) (Header, []byte) {
				p := payloadFor(seq, n)
				return Header{FrameID: 1000 + seq, FrameSeq: seq, Size: uint32(n), Flags: flags, Codec: CodecH264, CRC32: Checksum(p)}, p
			}
			oldH, oldP := frame(1, tc.oldSize, 0)
			newH, newP := frame(2, tc.newSize, FlagKeyframe)
			cur := alignedCopy(make([]byte, OffPayload+max(tc.oldSize, tc.newSize)))
			if err := commitGuarded(cur, oldH, oldP, 1); err != nil {
				t.Fatal(err)
			}
			// The states of the ring, from the old frame committed to the
			// new one committed: each store applied byte by byte.
			states := [][]byte{bytes.Clone(cur)}
			c := commit{nil, newH, newP, 2}
			for i := range commitStores {
				next := alignedCopy(bytes.Clone(cur))
				c.mem = next
				c.store(i)
				for b := range next {
					if next[b] != cur[b] {
						cur[b] = next[b]
						states = append(states, bytes.Clone(cur))
					}
				}
				copy(cur, next)
			}
			verified := 0
			for a, hdrState := range states {
				s1, wl := loadU64(hdrState, OffSequence), loadU64(hdrState, OffWriteLen)
				for _, bodyState := range states[a:] {
					if loadU64(bodyState, OffSequence) != s1 || loadU64(bodyState, OffWriteLen) != wl {
						continue // the reader sees a torn copy
					}
					region := alignedCopy(bytes.Clone(bodyState))
					copy(region[:OffPayload], hdrState[:OffPayload])
					r := readSlot(region, 0, true)
					if r.status != slotOK {
						continue
					}
					verified++
					got := fmt.Sprintf("%+v %x", r.header, r.payload)
					if got != fmt.Sprintf("%+v %x", oldH, oldP) && got != fmt.Sprintf("%+v %x", newH, newP) {
						t.Fatalf("a copy across the commit verified as %+v with %d payload bytes (old %+v, new %+v)",
							r.header, len(r.payload), oldH, newH)
					}
				}
			}
			if verified == 0 {
				t.Fatal("no state verified: the test reads nothing")
			}
			t.Logf("%d states, %d copies verified, each the old or the new frame", len(states), verified)
		})
	}
}
