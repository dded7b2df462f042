// Package frame defines an encoded (or raw) video frame as sdr-caddy moves
// it: the 32-byte frame header that precedes every payload in the shared
// memory ring and, unchanged, every 0x01 VIDEO message on /stream/ws; the
// codec field of that header; and Frame, the header with its payload as a
// source hands it on in process, with Source and KeyframeRequester, the two
// small interfaces a producer of frames implements.
//
// The ring (package shmring), the wire codec, the safety gate, WebRTC and the
// encoder (package nvenc) all speak of frames in these terms; none of them
// needs the others to do so. See docs/protocol.md for the header's layout.
//
// The package imports nothing from Caddy, and nothing else of sdr-caddy.
package frame

import "time"

// Frame is one encoded access unit (or raw picture) with its 32-byte header
// exactly as the writer stored it.
type Frame struct {
	// Header is the decoded frame header; Header.Put reproduces the bytes read.
	Header Header
	// Payload is the encoded access unit. It is owned by the frame and must
	// not be modified once the frame has been handed on.
	Payload []byte
	// Arrived is when this process read (or produced) the frame.
	Arrived time.Time
	// Discontinuity is set on the first frame after a writer restart or a
	// frame-sequence gap: whatever came before it can no longer be decoded
	// together with what follows.
	Discontinuity bool
}

// Source is a stream of frames: a ring reader, an in-process encoder, or a
// NATS subject.
type Source interface {
	// Subscribe calls fn for every frame, in order, from one goroutine, until
	// cancel is called. fn must not block.
	Subscribe(fn func(Frame)) (cancel func())
	// LastArrival is when the source last read a frame, including frames it
	// held back while waiting for a keyframe; zero if it never read one. The
	// safety gate measures video age from it.
	LastArrival() time.Time
}

// KeyframeRequester asks the producer of a stream for an IDR frame. Callers
// coalesce; implementations may coalesce again.
type KeyframeRequester interface {
	RequestKeyframe()
}
