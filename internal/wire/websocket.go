package wire

// WebSocket framing (RFC 6455) for the server side of /stream/ws.
//
// sdr_stream frames every message itself instead of going through a
// websocket.Conn: each video frame is framed once into a complete,
// unmasked server frame that every client's connection writes unchanged
// (several at a time with one writev), and one goroutine per connection is
// the only writer, so control frames (pong, close) can never interleave with
// a video frame half written.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/sdr-os/sdr-caddy/frame"
)

// WebSocket opcodes.
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// WebSocket close codes sdr_stream sends.
const (
	CloseNormal          uint16 = 1000
	CloseGoingAway       uint16 = 1001
	CloseProtocolError   uint16 = 1002
	CloseInvalidData     uint16 = 1007
	CloseMessageTooBig   uint16 = 1009
	CloseServiceRestart  uint16 = 1012
	CloseTryAgainLater   uint16 = 1013
	CloseKeyframeTimeout uint16 = 4000 // application code: no keyframe within the IDR timeout
)

// ValidCloseCode reports whether a peer may send code in a close frame
// (RFC 6455 7.4 and the IANA registry): 1000-1003, 1007-1014 and the
// 3000-4999 left to libraries and applications. 1004-1006 and 1015 are
// reserved or never sent, the rest of 0-2999 is unassigned, and a close
// frame carrying one of them is answered with 1002.
func ValidCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// maxFrameHeader is the longest server frame header: 2 bytes and a 64-bit length.
const maxFrameHeader = 10

// AppendFrameHeader appends the header of one unmasked, final server frame
// with the given opcode and payload length.
func AppendFrameHeader(dst []byte, opcode byte, n int) []byte {
	b0 := 0x80 | opcode
	switch {
	case n <= 125:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// AppendBinaryFrame appends msg as one unmasked binary server frame.
func AppendBinaryFrame(dst, msg []byte) []byte {
	dst = AppendFrameHeader(dst, OpBinary, len(msg))
	return append(dst, msg...)
}

// VideoFrame returns a complete binary WebSocket frame carrying the VIDEO
// message for h and payload, built with one allocation.
func VideoFrame(h frame.Header, payload []byte) []byte {
	dst := make([]byte, 0, MaxVideoFrameHead+len(payload))
	return append(AppendVideoFrameHead(dst, h, len(payload)), payload...)
}

// MaxVideoFrameHead is the longest VideoFrameHead: a frame header with a
// 64-bit length, the type byte and the 32-byte frame header.
const MaxVideoFrameHead = maxFrameHeader + 1 + frame.HeaderSize

// AppendVideoFrameHead appends what a binary WebSocket frame carrying the
// VIDEO message for h and a payload of n bytes holds before the payload:
// the frame header, the type byte and h. That followed by the payload is
// VideoFrame, byte for byte.
func AppendVideoFrameHead(dst []byte, h frame.Header, n int) []byte {
	dst = AppendFrameHeader(dst, OpBinary, VideoSize(n))
	return AppendVideo(dst, h, nil)
}

// CloseFrame returns a close frame with code and reason; the reason is cut
// to fit the 125-byte limit of control frames, between two characters (a
// reason that is not UTF-8 makes the peer fail the connection).
func CloseFrame(code uint16, reason string) []byte {
	if len(reason) > 123 {
		n := 123
		for n > 0 && !utf8.RuneStart(reason[n]) {
			n--
		}
		reason = reason[:n]
	}
	dst := AppendFrameHeader(make([]byte, 0, 4+len(reason)), OpClose, 2+len(reason))
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, reason...)
}

// ControlFrame returns a ping or pong frame echoing payload (at most 125 bytes).
func ControlFrame(opcode byte, payload []byte) []byte {
	if len(payload) > 125 {
		payload = payload[:125]
	}
	return append(AppendFrameHeader(make([]byte, 0, 2+len(payload)), opcode, len(payload)), payload...)
}

// ProtocolError is a violation of RFC 6455 or of our limits by the client;
// Code is the close code to answer with.
type ProtocolError struct {
	Code   uint16
	Reason string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("websocket protocol error %d: %s", e.Code, e.Reason)
}

// ErrClosed is returned by ClientReader.Next after the client's close frame.
var ErrClosed = errors.New("websocket closed by client")

// Message is one complete message (or control frame) read from a client.
type Message struct {
	Opcode byte   // OpText, OpBinary, OpPing, OpPong or OpClose
	Data   []byte // valid until the next call to Next
}

// ClientReader reads the masked frames a client sends, reassembles
// fragmented messages up to a size limit, and returns control frames as they
// come.
type ClientReader struct {
	r      *bufio.Reader
	max    int
	msg    []byte
	ctl    [125]byte
	fragOp byte
	inFrag bool
}

// NewClientReader reads from r; messages larger than maxMessage bytes fail
// with close code 1009.
func NewClientReader(r *bufio.Reader, maxMessage int) *ClientReader {
	return &ClientReader{r: r, max: maxMessage}
}

// Next returns the next message or control frame. After a close frame it
// returns the close frame (Opcode OpClose) once; protocol violations are
// returned as *ProtocolError.
func (c *ClientReader) Next() (Message, error) {
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			return Message{}, err
		}
		fin := hdr[0]&0x80 != 0
		if hdr[0]&0x70 != 0 {
			return Message{}, &ProtocolError{CloseProtocolError, "reserved bits set"}
		}
		op := hdr[0] & 0x0f
		if hdr[1]&0x80 == 0 {
			return Message{}, &ProtocolError{CloseProtocolError, "client frame not masked"}
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(c.r, b[:]); err != nil {
				return Message{}, err
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(c.r, b[:]); err != nil {
				return Message{}, err
			}
			n = binary.BigEndian.Uint64(b[:])
			if n>>63 != 0 {
				return Message{}, &ProtocolError{CloseProtocolError, "frame length with the high bit set"}
			}
		}
		var mask [4]byte
		if _, err := io.ReadFull(c.r, mask[:]); err != nil {
			return Message{}, err
		}
		if op >= 0x8 {
			if !fin || n > 125 {
				return Message{}, &ProtocolError{CloseProtocolError, "fragmented or oversized control frame"}
			}
			b := c.ctl[:n]
			if _, err := io.ReadFull(c.r, b); err != nil {
				return Message{}, err
			}
			unmask(b, mask, 0)
			switch op {
			case OpClose:
				if n == 1 {
					return Message{}, &ProtocolError{CloseProtocolError, "close frame with a 1-byte body"}
				}
				if n >= 2 {
					if code := binary.BigEndian.Uint16(b); !ValidCloseCode(code) {
						return Message{}, &ProtocolError{CloseProtocolError, fmt.Sprintf("close code %d may not be sent", code)}
					}
					if !utf8.Valid(b[2:]) {
						return Message{}, &ProtocolError{CloseProtocolError, "close reason not valid UTF-8"}
					}
				}
				return Message{Opcode: OpClose, Data: b}, nil
			case OpPing, OpPong:
				return Message{Opcode: op, Data: b}, nil
			default:
				return Message{}, &ProtocolError{CloseProtocolError, fmt.Sprintf("unknown control opcode %#x", op)}
			}
		}
		switch op {
		case OpText, OpBinary:
			if c.inFrag {
				return Message{}, &ProtocolError{CloseProtocolError, "new message inside a fragmented one"}
			}
			c.fragOp, c.msg = op, c.msg[:0]
		case OpContinuation:
			if !c.inFrag {
				return Message{}, &ProtocolError{CloseProtocolError, "continuation without a message"}
			}
		default:
			return Message{}, &ProtocolError{CloseProtocolError, fmt.Sprintf("unknown data opcode %#x", op)}
		}
		if uint64(len(c.msg))+n > uint64(c.max) {
			return Message{}, &ProtocolError{CloseMessageTooBig, fmt.Sprintf("message over %d bytes", c.max)}
		}
		start := len(c.msg)
		c.msg = append(c.msg, make([]byte, n)...)
		if _, err := io.ReadFull(c.r, c.msg[start:]); err != nil {
			return Message{}, err
		}
		unmask(c.msg[start:], mask, 0)
		c.inFrag = !fin
		if fin {
			if c.fragOp == OpText && !utf8.Valid(c.msg) {
				return Message{}, &ProtocolError{CloseInvalidData, "text message not valid UTF-8"}
			}
			m := Message{Opcode: c.fragOp, Data: c.msg}
			if cap(c.msg) > 4096 {
				c.msg = nil // do not keep a large buffer per idle client
			}
			return m, nil
		}
	}
}

func unmask(b []byte, key [4]byte, pos int) {
	for i := range b {
		b[i] ^= key[(pos+i)&3]
	}
}

// AppendClientFrame appends one masked client frame (used by tests and the
// load generator, which play the browser).
func AppendClientFrame(dst []byte, opcode byte, fin bool, key [4]byte, payload []byte) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	n := len(payload)
	switch {
	case n <= 125:
		dst = append(dst, b0, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, b0, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	unmask(dst[start:], key, 0)
	return dst
}
