// Package benchstream is what the benchmark programs share about the video
// stream they measure: a raw WebSocket client cheap enough to run hundreds
// of in one process (the handshake, the frame header reader, the pong), the
// load generator built on it (Load, run in a child process with
// RunLoadgen and read by the parent with Measure), and
// H.264 access units that carry their send time through every path: the
// frame header's frame_id carries it to a WebSocket or NATS client, but a
// WebRTC viewer gets only the NAL units, so the time is written inside the
// NAL unit too.
//
// It imports nothing from Caddy and nothing outside the standard library.
package benchstream

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// Dial opens a WebSocket connection to target (ws://host:port/path) with a
// fixed key and no extensions, and returns the connection and the reader
// that holds what followed the handshake. timeout bounds the connect and
// the handshake.
func Dial(target string, timeout time.Duration) (net.Conn, *bufio.Reader, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing %q: %w", target, err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, timeout)
	if err != nil {
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", u.RequestURI(), u.Host)
	br := bufio.NewReaderSize(conn, 32<<10)
	status, err := br.ReadString('\n')
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("handshake with %s: %w", target, err)
	}
	if len(status) < 12 || status[9:12] != "101" {
		conn.Close()
		return nil, nil, fmt.Errorf("handshake with %s: %q", target, status)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("handshake with %s: %w", target, err)
		}
		if l == "\r\n" {
			break
		}
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, nil
}

// WebSocket opcodes the clients look at.
const (
	OpBinary = 0x2
	OpClose  = 0x8
	OpPing   = 0x9
)

// ReadFrameHeader reads the header of one server frame (unmasked, as a
// server sends them) and returns its opcode and payload length.
func ReadFrameHeader(br *bufio.Reader) (op byte, n uint64, err error) {
	var h [2]byte
	if _, err = io.ReadFull(br, h[:]); err != nil {
		return
	}
	op, n = h[0]&0x0f, uint64(h[1]&0x7f)
	switch n {
	case 126:
		var b [2]byte
		_, err = io.ReadFull(br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		_, err = io.ReadFull(br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	return
}

// Pong writes the answer to a ping whose payload was data (at most 125
// bytes), masked with a zero key as a client must mask.
func Pong(w io.Writer, data []byte) error {
	if len(data) > 125 {
		return fmt.Errorf("ping payload of %d bytes: at most 125", len(data))
	}
	f := make([]byte, 0, 6+len(data))
	f = append(f, 0x80|0xA, 0x80|byte(len(data)), 0, 0, 0, 0)
	f = append(f, data...) // a zero mask leaves the payload as it is
	_, err := w.Write(f)
	return err
}

// NAL unit types of the access units AccessUnit makes.
const (
	NALSlice = 1 // a delta frame
	NALIDR   = 5 // a keyframe
)

// stampLen is the send time's length: 16 hex digits after the NAL header.
const stampLen = 16

// AccessUnit returns an Annex-B access unit of size bytes (at least 21):
// one NAL unit of type nalType carrying sent (Unix ns) as 16 hex digits
// after its header, padded with bytes that never form a start code, so
// that a packetizer keeps it one NAL unit.
func AccessUnit(size int, nalType byte, sent time.Time) []byte {
	size = max(size, 5+stampLen)
	p := make([]byte, size)
	copy(p, []byte{0, 0, 0, 1, 0x60 | nalType&0x1f})
	copy(p[5:], fmt.Sprintf("%016x", sent.UnixNano()))
	for i := 5 + stampLen; i < size; i++ {
		p[i] = 0xAA
	}
	return p
}

// SentAt reads the send time from an access unit AccessUnit made, after
// any path that keeps the NAL unit (a WebRTC depacketizer emits it with a
// three- or four-byte start code).
func SentAt(au []byte) (time.Time, bool) {
	i := bytes.Index(au, []byte{0, 0, 1})
	if i < 0 || len(au) < i+4+stampLen {
		return time.Time{}, false
	}
	n, err := strconv.ParseUint(string(au[i+4:i+4+stampLen]), 16, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, int64(n)), true
}

// NALType returns the type of an access unit's first NAL unit, or -1.
func NALType(au []byte) int {
	i := bytes.Index(au, []byte{0, 0, 1})
	if i < 0 || len(au) < i+4 {
		return -1
	}
	return int(au[i+3] & 0x1f)
}
