package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sdr-os/sdr-caddy/frame"
)

func TestFrameHeaderLengths(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x82, 0}},
		{125, []byte{0x82, 125}},
		{126, []byte{0x82, 126, 0, 126}},
		{65535, []byte{0x82, 126, 0xff, 0xff}},
		{65536, []byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		if got := AppendFrameHeader(nil, OpBinary, tc.n); !bytes.Equal(got, tc.want) {
			t.Errorf("header for %d bytes: %x, want %x", tc.n, got, tc.want)
		}
	}
}

func TestVideoFrameCarriesVideoMessage(t *testing.T) {
	t.Parallel()
	h := frame.Header{FrameID: 1, FrameSeq: 2, Size: 100000, Flags: frame.FlagKeyframe, Codec: frame.CodecH264}
	payload := bytes.Repeat([]byte{7}, 100000)
	f := VideoFrame(h, payload)
	if f[0] != 0x82 || f[1] != 127 {
		t.Fatalf("frame header %x", f[:2])
	}
	n := binary.BigEndian.Uint64(f[2:10])
	if int(n) != VideoSize(len(payload)) || len(f) != 10+int(n) {
		t.Fatalf("length %d in header, frame %d bytes", n, len(f))
	}
	want := AppendVideo(nil, h, payload)
	if !bytes.Equal(f[10:], want) {
		t.Fatal("frame body differs from the VIDEO message")
	}
	if cap(f) != len(f) {
		t.Errorf("frame capacity %d for %d bytes: more than one allocation's worth", cap(f), len(f))
	}
}

// The head of a video frame followed by its payload is VideoFrame, for
// every length encoding of the WebSocket frame header.
func TestVideoFrameHead(t *testing.T) {
	t.Parallel()
	h := frame.Header{FrameID: 1, FrameSeq: 2, Flags: frame.FlagKeyframe, Codec: frame.CodecH264}
	// Messages of 125, 126, 65535 and 65536 bytes are the edges.
	for _, n := range []int{0, 1, 92, 93, 65502, 65503, 1 << 20} {
		payload := bytes.Repeat([]byte{byte(n)}, n)
		h.Size = uint32(n)
		head := AppendVideoFrameHead(nil, h, n)
		if len(head) > MaxVideoFrameHead {
			t.Errorf("%d bytes: head of %d bytes, more than MaxVideoFrameHead %d", n, len(head), MaxVideoFrameHead)
		}
		if got, want := append(head, payload...), VideoFrame(h, payload); !bytes.Equal(got, want) {
			t.Errorf("%d bytes: head and payload differ from VideoFrame (% x... against % x...)", n, got[:len(head)], want[:len(head)])
		}
	}
}

func TestClientReader(t *testing.T) {
	t.Parallel()
	key := [4]byte{1, 2, 3, 4}
	var in []byte
	in = AppendClientFrame(in, OpBinary, true, key, []byte{TypeCommand, '{', '}'})
	in = AppendClientFrame(in, OpPing, true, key, []byte("hi"))
	in = AppendClientFrame(in, OpBinary, false, key, []byte("ab"))
	in = AppendClientFrame(in, OpPong, true, key, nil) // control frames may sit between fragments
	in = AppendClientFrame(in, OpContinuation, true, key, bytes.Repeat([]byte("c"), 300))
	in = AppendClientFrame(in, OpClose, true, key, []byte{0x03, 0xe8})
	r := NewClientReader(bufio.NewReader(bytes.NewReader(in)), 1024)
	want := []Message{
		{OpBinary, []byte{TypeCommand, '{', '}'}},
		{OpPing, []byte("hi")},
		{OpPong, []byte{}},
		{OpBinary, append([]byte("ab"), bytes.Repeat([]byte("c"), 300)...)},
		{OpClose, []byte{0x03, 0xe8}},
	}
	for i, w := range want {
		m, err := r.Next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m.Opcode != w.Opcode || !bytes.Equal(m.Data, w.Data) {
			t.Fatalf("message %d: op %#x %q, want %#x %q", i, m.Opcode, m.Data, w.Opcode, w.Data)
		}
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

func TestClientReaderRejects(t *testing.T) {
	t.Parallel()
	key := [4]byte{9, 9, 9, 9}
	unmasked := AppendFrameHeader(nil, OpBinary, 1)
	unmasked = append(unmasked, 4)
	big := AppendClientFrame(nil, OpBinary, false, key, make([]byte, 600))
	big = AppendClientFrame(big, OpContinuation, true, key, make([]byte, 600))
	for _, tc := range []struct {
		name string
		in   []byte
		code uint16
	}{
		{"unmasked", unmasked, CloseProtocolError},
		{"reserved bits", func() []byte { b := AppendClientFrame(nil, OpBinary, true, key, nil); b[0] |= 0x40; return b }(), CloseProtocolError},
		{"too big", AppendClientFrame(nil, OpBinary, true, key, make([]byte, 1025)), CloseMessageTooBig},
		{"too big in fragments", big, CloseMessageTooBig},
		{"long ping", AppendClientFrame(nil, OpPing, true, key, make([]byte, 126)), CloseProtocolError},
		{"fragmented ping", AppendClientFrame(nil, OpPing, false, key, nil), CloseProtocolError},
		{"stray continuation", AppendClientFrame(nil, OpContinuation, true, key, nil), CloseProtocolError},
		{"unknown opcode", AppendClientFrame(nil, 0x3, true, key, nil), CloseProtocolError},
		{"bad utf-8", AppendClientFrame(nil, OpText, true, key, []byte{0xff, 0xfe}), CloseInvalidData},
		{"huge length", append([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, key[:]...), CloseProtocolError},
		{"close code 999", AppendClientFrame(nil, OpClose, true, key, []byte{0x03, 0xe7}), CloseProtocolError},
		{"close code 0", AppendClientFrame(nil, OpClose, true, key, []byte{0, 0}), CloseProtocolError},
		{"close code 1004", AppendClientFrame(nil, OpClose, true, key, []byte{0x03, 0xec}), CloseProtocolError},
		{"close code 1005", AppendClientFrame(nil, OpClose, true, key, []byte{0x03, 0xed}), CloseProtocolError},
		{"close code 1006", AppendClientFrame(nil, OpClose, true, key, []byte{0x03, 0xee}), CloseProtocolError},
		{"close code 1015", AppendClientFrame(nil, OpClose, true, key, []byte{0x03, 0xf7}), CloseProtocolError},
		{"close code 2999", AppendClientFrame(nil, OpClose, true, key, []byte{0x0b, 0xb7}), CloseProtocolError},
		{"close code 5000", AppendClientFrame(nil, OpClose, true, key, []byte{0x13, 0x88}), CloseProtocolError},
		{"close reason not UTF-8", AppendClientFrame(nil, OpClose, true, key, []byte{0x03, 0xe8, 'o', 0xff}), CloseProtocolError},
	} {
		r := NewClientReader(bufio.NewReader(bytes.NewReader(tc.in)), 1024)
		_, err := r.Next()
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Code != tc.code {
			t.Errorf("%s: %v, want close code %d", tc.name, err, tc.code)
		}
	}
}

func TestValidCloseCodes(t *testing.T) {
	t.Parallel()
	key := [4]byte{5, 6, 7, 8}
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000, 4999} {
		body := binary.BigEndian.AppendUint16(nil, code)
		body = append(body, "bye é"...)
		r := NewClientReader(bufio.NewReader(bytes.NewReader(AppendClientFrame(nil, OpClose, true, key, body))), 1024)
		if m, err := r.Next(); err != nil || m.Opcode != OpClose || !bytes.Equal(m.Data, body) {
			t.Errorf("close code %d: %v %q, want the close frame", code, err, m.Data)
		}
	}
	// no body at all: no code, which is allowed
	r := NewClientReader(bufio.NewReader(bytes.NewReader(AppendClientFrame(nil, OpClose, true, key, nil))), 1024)
	if m, err := r.Next(); err != nil || m.Opcode != OpClose {
		t.Errorf("empty close frame: %v", err)
	}
}

func TestCloseFrame(t *testing.T) {
	t.Parallel()
	f := CloseFrame(CloseKeyframeTimeout, "no keyframe")
	if f[0] != 0x88 || int(f[1]) != 2+len("no keyframe") || binary.BigEndian.Uint16(f[2:]) != 4000 || string(f[4:]) != "no keyframe" {
		t.Fatalf("close frame %x", f)
	}
	long := CloseFrame(CloseNormal, string(bytes.Repeat([]byte("x"), 300)))
	if len(long) != 2+125 {
		t.Fatalf("long close frame is %d bytes, want 127", len(long))
	}
	// cut between characters: 61 two-byte characters fit in 123 bytes
	cut := CloseFrame(CloseNormal, strings.Repeat("é", 100))
	if len(cut) != 2+2+122 || !utf8.Valid(cut[4:]) {
		t.Fatalf("close frame of a long non-ASCII reason: %d bytes, valid UTF-8 %t", len(cut), utf8.Valid(cut[4:]))
	}
}
