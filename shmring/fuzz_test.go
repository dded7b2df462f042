package shmring

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
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
