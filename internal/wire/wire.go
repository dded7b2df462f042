// Package wire encodes and decodes the binary messages of /stream/ws. The
// layout is fixed by the browsers already in production: the first byte is
// the message type.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/sdr-os/sdr-caddy/frame"
)

// Message types: the first byte of every message.
const (
	TypeVideo     byte = 0x01 // server -> browser: type, 32-byte header, payload
	TypeTelemetry byte = 0x02 // server -> browser: type, u16 LE subject length, subject, payload
	TypeSignaling byte = 0x03 // both: type, JSON
	TypeCommand   byte = 0x04 // browser -> server: type, JSON
)

// MaxSubjectLen is the longest telemetry subject the protocol carries.
const MaxSubjectLen = 256

// ErrSubjectTooLong is returned for a telemetry subject over MaxSubjectLen bytes.
var ErrSubjectTooLong = errors.New("telemetry subject longer than 256 bytes")

// VideoSize is the length of the VIDEO message for a payload of n bytes.
func VideoSize(n int) int { return 1 + frame.HeaderSize + n }

// AppendVideo appends a VIDEO message to dst: the type byte, the header
// exactly as given, and the payload.
func AppendVideo(dst []byte, h frame.Header, payload []byte) []byte {
	dst = append(dst, TypeVideo)
	var hb [frame.HeaderSize]byte
	h.Put(hb[:])
	dst = append(dst, hb[:]...)
	return append(dst, payload...)
}

// AppendTelemetry appends a TELEMETRY message to dst.
func AppendTelemetry(dst []byte, subject string, payload []byte) ([]byte, error) {
	if len(subject) > MaxSubjectLen {
		return dst, fmt.Errorf("encoding telemetry on %.32q...: %w", subject, ErrSubjectTooLong)
	}
	dst = append(dst, TypeTelemetry)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(subject)))
	dst = append(dst, subject...)
	return append(dst, payload...), nil
}

// Telemetry returns a new TELEMETRY message.
func Telemetry(subject string, payload []byte) ([]byte, error) {
	return AppendTelemetry(make([]byte, 0, 3+len(subject)+len(payload)), subject, payload)
}

// ParseTelemetry splits a TELEMETRY message into subject and payload.
func ParseTelemetry(msg []byte) (subject string, payload []byte, err error) {
	if len(msg) < 3 || msg[0] != TypeTelemetry {
		return "", nil, fmt.Errorf("parsing telemetry message: not a 0x02 message of at least 3 bytes (%d bytes)", len(msg))
	}
	n := int(binary.LittleEndian.Uint16(msg[1:3]))
	if n > MaxSubjectLen {
		return "", nil, fmt.Errorf("parsing telemetry message: subject length %d: %w", n, ErrSubjectTooLong)
	}
	if len(msg) < 3+n {
		return "", nil, fmt.Errorf("parsing telemetry message: subject length %d exceeds message (%d bytes)", n, len(msg))
	}
	return string(msg[3 : 3+n]), msg[3+n:], nil
}

// ParseVideo splits a VIDEO message into header and payload.
func ParseVideo(msg []byte) (frame.Header, []byte, error) {
	if len(msg) < 1+frame.HeaderSize || msg[0] != TypeVideo {
		return frame.Header{}, nil, fmt.Errorf("parsing video message: not a 0x01 message of at least 33 bytes (%d bytes)", len(msg))
	}
	h, err := frame.ParseHeader(msg[1:])
	if err != nil {
		return frame.Header{}, nil, err
	}
	return h, msg[1+frame.HeaderSize:], nil
}
