package frame

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// HeaderSize is the size of the frame header.
const HeaderSize = 32

// Flags of a frame header.
const (
	FlagKeyframe   uint16 = 0x0001
	FlagWrapMarker uint16 = 0x0002
)

// Codec is the codec field of a frame header.
type Codec uint16

// Encoded codecs (the encoded-frame ring) and raw pixel formats (the raw ring).
const (
	CodecH264 Codec = 1
	CodecHEVC Codec = 2
	CodecJPEG Codec = 3

	CodecRGBA  Codec = 16
	CodecBGRA  Codec = 17
	CodecNV12  Codec = 18
	CodecI420  Codec = 19
	CodecRGB24 Codec = 20
)

// IsRaw reports whether c is one of the raw pixel formats (16..31).
func (c Codec) IsRaw() bool { return c >= 16 && c <= 31 }

// String names the codec the way logs and metrics show it.
func (c Codec) String() string {
	switch c {
	case CodecH264:
		return "h264"
	case CodecHEVC:
		return "hevc"
	case CodecJPEG:
		return "jpeg"
	case CodecRGBA:
		return "rgba"
	case CodecBGRA:
		return "bgra"
	case CodecNV12:
		return "nv12"
	case CodecI420:
		return "i420"
	case CodecRGB24:
		return "rgb24"
	}
	return fmt.Sprintf("codec(%d)", uint16(c))
}

// Header is the 32-byte frame header that precedes every payload in the ring
// and, unchanged, every 0x01 VIDEO message on /stream/ws.
type Header struct {
	FrameID  uint64 // application id; sdr-caddy's writers put the commit time in Unix ns here
	FrameSeq uint64 // monotonic per writer run
	Size     uint32 // payload bytes
	Flags    uint16
	Codec    Codec
	CRC32    uint32 // IEEE CRC-32 of the payload, 0 when the writer runs with CRC off
	Reserved uint32
}

// Keyframe reports whether the KEYFRAME flag is set.
func (h Header) Keyframe() bool { return h.Flags&FlagKeyframe != 0 }

// Put encodes h into b, which must hold at least HeaderSize bytes.
func (h Header) Put(b []byte) {
	_ = b[HeaderSize-1]
	binary.LittleEndian.PutUint64(b[0:], h.FrameID)
	binary.LittleEndian.PutUint64(b[8:], h.FrameSeq)
	binary.LittleEndian.PutUint32(b[16:], h.Size)
	binary.LittleEndian.PutUint16(b[20:], h.Flags)
	binary.LittleEndian.PutUint16(b[22:], uint16(h.Codec))
	binary.LittleEndian.PutUint32(b[24:], h.CRC32)
	binary.LittleEndian.PutUint32(b[28:], h.Reserved)
}

// Bytes returns the 32-byte encoding of h.
func (h Header) Bytes() []byte {
	b := make([]byte, HeaderSize)
	h.Put(b)
	return b
}

// ParseHeader decodes a header from the first HeaderSize bytes of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("parsing frame header: %d bytes, need %d", len(b), HeaderSize)
	}
	return Header{
		FrameID:  binary.LittleEndian.Uint64(b[0:]),
		FrameSeq: binary.LittleEndian.Uint64(b[8:]),
		Size:     binary.LittleEndian.Uint32(b[16:]),
		Flags:    binary.LittleEndian.Uint16(b[20:]),
		Codec:    Codec(binary.LittleEndian.Uint16(b[22:])),
		CRC32:    binary.LittleEndian.Uint32(b[24:]),
		Reserved: binary.LittleEndian.Uint32(b[28:]),
	}, nil
}

// Checksum is the CRC the header carries: zlib's (IEEE) CRC-32 of the payload.
func Checksum(payload []byte) uint32 { return crc32.ChecksumIEEE(payload) }
