package shmring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Errors that ParseRegion (and Inspect) wrap, so callers can tell why a region
// holds no usable frame.
var (
	// ErrEmpty means the sequence is 0: no writer has committed a frame yet.
	ErrEmpty = errors.New("no frame committed (sequence 0)")
	// ErrTooSmall means the region cannot even hold the control region and a header.
	ErrTooSmall = errors.New("region smaller than control region and frame header")
	// ErrWriteLen means write_len lies outside 32 <= write_len <= region size - 16.
	ErrWriteLen = errors.New("write_len out of bounds")
	// ErrSizeMismatch means the header's size is not write_len - 32.
	ErrSizeMismatch = errors.New("header size disagrees with write_len")
	// ErrCRC means the payload does not match the header's CRC-32.
	ErrCRC = errors.New("payload CRC-32 mismatch")
	// ErrTorn means the sequence changed while the slot was being copied.
	ErrTorn = errors.New("torn read (sequence changed during copy)")
	// ErrNotRegular means the ring path names something other than a
	// regular file (after symbolic links): a FIFO, a socket, a device or a
	// directory. It is never opened in a way that could block or act on it.
	ErrNotRegular = errors.New("not a regular file")
)

// maxMapSize bounds a mapping: 1 GiB is far above any frame ring.
const maxMapSize = 1 << 30

// slotStatus is the outcome of one pass of the documented reader order.
type slotStatus uint8

const (
	slotEmpty slotStatus = iota
	slotUnchanged
	slotOK
	slotTorn
	slotWriteLen
	slotSizeMismatch
	slotCRC
	slotOversize
)

func (s slotStatus) err() error {
	switch s {
	case slotEmpty:
		return ErrEmpty
	case slotTorn:
		return ErrTorn
	case slotWriteLen:
		return ErrWriteLen
	case slotSizeMismatch:
		return ErrSizeMismatch
	case slotCRC:
		return ErrCRC
	}
	return nil
}

// loadU64 atomically loads the little-endian u64 at off. b must be 8-byte
// aligned at off (the mapping is page aligned, offsets are 0 and 8) and
// little-endian is the only byte order this package runs on (see endian.go).
func loadU64(b []byte, off int) uint64 {
	_ = b[off+7]
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&b[off])))
}

// storeU64 atomically stores v at off; same rules as loadU64.
func storeU64(b []byte, off int, v uint64) {
	_ = b[off+7]
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&b[off])), v)
}

// slotRead is one pass of the reader order over region (the mapping, or an
// aligned copy of region bytes).
type slotRead struct {
	status   slotStatus
	sequence uint64 // s1, valid unless status is slotEmpty
	writeLen uint64
	header   Header
	payload  []byte // slotOK, slotCRC: the payload as copied, in the scratch buffer
}

// readSlot follows the reader order of docs/ring.md to the letter: load sequence (s1);
// stop if 0 or equal to last; load write_len and bound it; copy the slot;
// load sequence again (s2) and discard on s1 != s2 (or on a write_len that
// changed meanwhile: the writer started the next frame); parse; require
// size == write_len - 32; verify the CRC unless verifyCRC is false.
//
// region must be at least OffPayload bytes long and 8-byte aligned. When
// region is a mapping of a file that shrinks, the loads and the copy can
// fault: the caller contains that (see readGuarded).
func readSlot(region []byte, last uint64, verifyCRC bool) slotRead {
	return readSlotInto(region, last, verifyCRC, 0, nil)
}

// readSlotInto is readSlot copying the slot into *scratch, which it grows
// as needed and which the caller keeps from one read to the next (nil
// allocates a buffer for this read). Nothing is allocated between the two
// loads of the sequence when scratch is large enough: an allocation there
// can wait for the garbage collector (a 200 KB one waits milliseconds in a
// busy process), and a copy that spans the writer's next commit is torn. A
// reader whose every copy is torn that way never delivers, and each torn
// copy's garbage feeds the collector that tears the next one. The payload
// it returns lies in scratch: the Reader copies it out, or delivers
// scratch itself (PooledPayloads), only for a copy that verified.
//
// A frame whose payload exceeds maxPayload (0: no cap) is not copied:
// slotOversize, unless the control region changed meanwhile (slotTorn).
func readSlotInto(region []byte, last uint64, verifyCRC bool, maxPayload uint64, scratch *[]byte) slotRead {
	s1 := loadU64(region, OffSequence)
	if s1 == 0 {
		return slotRead{status: slotEmpty}
	}
	if s1 == last {
		return slotRead{status: slotUnchanged, sequence: s1}
	}
	wl := loadU64(region, OffWriteLen)
	if wl < HeaderSize || wl > uint64(len(region)-ControlSize) {
		// A writer that stores write_len in several steps (CPython's
		// struct.pack_into zero-fills first) can be caught mid-store while it
		// starts the next frame: that is a torn read, not a malformed slot.
		if loadU64(region, OffSequence) != s1 || loadU64(region, OffWriteLen) != wl {
			return slotRead{status: slotTorn, sequence: s1, writeLen: wl}
		}
		return slotRead{status: slotWriteLen, sequence: s1, writeLen: wl}
	}
	if maxPayload > 0 && wl-HeaderSize > maxPayload {
		if loadU64(region, OffSequence) != s1 || loadU64(region, OffWriteLen) != wl {
			return slotRead{status: slotTorn, sequence: s1, writeLen: wl}
		}
		return slotRead{status: slotOversize, sequence: s1, writeLen: wl}
	}
	if scratch == nil {
		scratch = new([]byte)
	}
	if uint64(cap(*scratch)) < wl {
		// Only when a frame is larger than any before it: the allocation
		// lands in the window once, and the grown buffer is kept.
		*scratch = make([]byte, int(wl))
	}
	buf := (*scratch)[:int(wl)]
	copy(buf, region[OffSlot:OffSlot+int(wl)])
	s2 := loadU64(region, OffSequence)
	if s1 != s2 || loadU64(region, OffWriteLen) != wl {
		return slotRead{status: slotTorn, sequence: s1, writeLen: wl}
	}
	h, _ := ParseHeader(buf) // cannot fail: wl >= HeaderSize
	out := slotRead{status: slotOK, sequence: s1, writeLen: wl, header: h}
	if uint64(h.Size) != wl-HeaderSize {
		out.status = slotSizeMismatch
		return out
	}
	body := buf[HeaderSize:len(buf):len(buf)]
	out.payload = body
	if verifyCRC && Checksum(body) != h.CRC32 {
		// Kept for Inspect's report; the Reader drops it.
		out.status = slotCRC
	}
	return out
}

// Committed is the frame a region holds, as ParseRegion and Inspect return it.
type Committed struct {
	Sequence uint64 // the control region's commit counter
	WriteLen uint64 // bytes of header + payload
	Header   Header
	Payload  []byte
}

// ParseRegion decodes the frame committed in region: the bytes of a whole
// ring file, control region first. It runs the reader's parse path (the same
// code the Reader runs against the mapping) with the same checks, in the same
// order, and never panics or reads out of range whatever the bytes are. With
// verifyCRC false the CRC is not checked. The returned payload is a copy.
func ParseRegion(region []byte, verifyCRC bool) (Committed, error) {
	if len(region) < OffPayload {
		return Committed{}, fmt.Errorf("parsing region of %d bytes: %w", len(region), ErrTooSmall)
	}
	aligned := region
	if uintptr(unsafe.Pointer(&region[0]))%8 != 0 {
		aligned = alignedCopy(region)
	}
	s := readSlot(aligned, 0, verifyCRC)
	c := Committed{Sequence: s.sequence, WriteLen: s.writeLen, Header: s.header, Payload: s.payload}
	if err := s.status.err(); err != nil {
		switch s.status {
		case slotWriteLen:
			return c, fmt.Errorf("parsing region of %d bytes: write_len %d: %w", len(region), s.writeLen, err)
		case slotSizeMismatch:
			return c, fmt.Errorf("parsing region: header size %d, write_len %d: %w", s.header.Size, s.writeLen, err)
		case slotCRC:
			return c, fmt.Errorf("parsing region: header CRC %08x, payload CRC %08x: %w", s.header.CRC32, Checksum(s.payload), err)
		}
		return c, fmt.Errorf("parsing region: %w", err)
	}
	return c, nil
}

// alignedCopy copies b into a buffer whose first byte is 8-byte aligned.
func alignedCopy(b []byte) []byte {
	words := make([]uint64, (len(b)+7)/8)
	out := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)[:len(b)]
	copy(out, b)
	return out
}
