// Package shmring reads and writes the shared-memory frame ring that the
// simulator (or sdr-caddy's own encoder) fills with frames: one control region
// and one slot, "latest wins". The layout is fixed by the peers already in
// production; see docs/ring.md.
//
// The same layout carries two rings: the encoded-frame ring (codecs 1..3,
// DefaultPath) and the raw-frame ring that feeds the encoder (codecs 16..20,
// DefaultRawPath), whose payloads start with a RawDescriptor.
//
// Reading: NewReader(ReaderConfig{Path: ...}) then Run(ctx, fn) on a
// goroutine of its own. Run waits for an absent file, maps it read-only, and
// calls fn with every verified frame in order; Stats, LastArrival, Sequence
// and Period are safe to call at any time. The reader learns the writer's
// frame period and sleeps until shortly before the next frame is due, so it
// costs almost nothing while waiting, and backs off while the writer is
// stalled or absent. It remaps a replaced or resized file and contains the
// memory fault of a file truncated under its mapping.
//
// Writing: CreateWriter(path, size, opts...) then WriteFrame(header,
// payload), which fills in size, CRC-32, frame_seq and frame_id and returns
// the header as stored (callers that also hand the frame on in-process need
// exactly those bytes).
//
// ParseRegion runs the reader's parse path over plain bytes (a copy of a ring
// file). Inspect (one look at a ring file) and Watch (a live view, one Window
// per interval) are what the `caddy sdr-ring` subcommand shows.
//
// The package imports nothing from Caddy.
package shmring

import "github.com/sdr-os/sdr-caddy/frame"

// Layout of the mapped file. All integers are little-endian.
const (
	// OffSequence is the offset of the u64 commit counter, stored last by the writer.
	OffSequence = 0
	// OffWriteLen is the offset of the u64 count of header+payload bytes in the slot.
	OffWriteLen = 8
	// OffSlot is where the frame header starts; the payload follows it.
	OffSlot = 16
	// ControlSize is the size of the control region (sequence and write_len).
	ControlSize = 16
	// HeaderSize is the size of the frame header (frame.HeaderSize).
	HeaderSize = frame.HeaderSize
	// OffPayload is where the payload starts.
	OffPayload = OffSlot + HeaderSize
)

// Default paths and sizes of the two rings.
const (
	DefaultPath    = "/dev/shm/sdr_os_ipc/frames"
	DefaultSize    = 4 << 20
	DefaultRawPath = "/dev/shm/sdr_os_ipc/raw"
	DefaultRawSize = 64 << 20
)

// The frame header and its codec field belong to the frame, not to the ring:
// package frame defines them, and the names below are the same types and
// values, kept so that code written against shmring goes on compiling.
type (
	// Header is frame.Header.
	Header = frame.Header
	// Codec is frame.Codec.
	Codec = frame.Codec
)

// Flags of a frame header (frame.FlagKeyframe, frame.FlagWrapMarker).
const (
	FlagKeyframe   = frame.FlagKeyframe
	FlagWrapMarker = frame.FlagWrapMarker
)

// Codecs (frame.CodecH264 and the others).
const (
	CodecH264 = frame.CodecH264
	CodecHEVC = frame.CodecHEVC
	CodecJPEG = frame.CodecJPEG

	CodecRGBA  = frame.CodecRGBA
	CodecBGRA  = frame.CodecBGRA
	CodecNV12  = frame.CodecNV12
	CodecI420  = frame.CodecI420
	CodecRGB24 = frame.CodecRGB24
)

// ParseHeader is frame.ParseHeader.
func ParseHeader(b []byte) (Header, error) { return frame.ParseHeader(b) }

// Checksum is frame.Checksum.
func Checksum(payload []byte) uint32 { return frame.Checksum(payload) }
