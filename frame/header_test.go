package frame

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

// headerVectors are the header and CRC entries of the wire-contract vectors
// (the region entries are shmring's).
type headerVectors struct {
	Headers []struct {
		FrameID  uint64 `json:"frame_id"`
		FrameSeq uint64 `json:"frame_seq"`
		Size     uint32 `json:"size"`
		Flags    uint16 `json:"flags"`
		Codec    uint16 `json:"codec"`
		CRC32    uint32 `json:"crc32"`
		Reserved uint32 `json:"reserved"`
		Hex      string `json:"hex"`
	} `json:"headers"`
	CRC32 []struct {
		PayloadHex string `json:"payload_hex"`
		CRC32      uint32 `json:"crc32"`
	} `json:"crc32"`
}

func loadHeaderVectors(t *testing.T) headerVectors {
	t.Helper()
	b, err := os.ReadFile("../testdata/vectors/shm_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v headerVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Headers) == 0 || len(v.CRC32) == 0 {
		t.Fatalf("vectors incomplete: %d headers, %d crcs", len(v.Headers), len(v.CRC32))
	}
	return v
}

func TestVectorHeaders(t *testing.T) {
	t.Parallel()
	for _, v := range loadHeaderVectors(t).Headers {
		want := Header{FrameID: v.FrameID, FrameSeq: v.FrameSeq, Size: v.Size, Flags: v.Flags,
			Codec: Codec(v.Codec), CRC32: v.CRC32, Reserved: v.Reserved}
		raw, err := hex.DecodeString(v.Hex)
		if err != nil {
			t.Fatal(err)
		}
		if got := want.Bytes(); !bytes.Equal(got, raw) {
			t.Errorf("encode %+v:\n got %x\nwant %x", want, got, raw)
		}
		got, err := ParseHeader(raw)
		if err != nil || got != want {
			t.Errorf("parse %s: got %+v, %v; want %+v", v.Hex, got, err, want)
		}
		if got.Keyframe() != (v.Flags&FlagKeyframe != 0) {
			t.Errorf("parse %s: Keyframe() = %t with flags %#x", v.Hex, got.Keyframe(), v.Flags)
		}
	}
}

func TestVectorCRC(t *testing.T) {
	t.Parallel()
	for _, v := range loadHeaderVectors(t).CRC32 {
		p, err := hex.DecodeString(v.PayloadHex)
		if err != nil {
			t.Fatal(err)
		}
		if got := Checksum(p); got != v.CRC32 {
			t.Errorf("crc of %d bytes: got %d, want %d", len(p), got, v.CRC32)
		}
	}
}

func TestParseHeaderShort(t *testing.T) {
	t.Parallel()
	if _, err := ParseHeader(make([]byte, HeaderSize-1)); err == nil {
		t.Fatal("a 31-byte header parsed")
	}
}

func TestCodec(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		codec Codec
		name  string
		raw   bool
	}{
		{CodecH264, "h264", false}, {CodecHEVC, "hevc", false}, {CodecJPEG, "jpeg", false},
		{CodecRGBA, "rgba", true}, {CodecBGRA, "bgra", true}, {CodecNV12, "nv12", true},
		{CodecI420, "i420", true}, {CodecRGB24, "rgb24", true},
		{Codec(0), "codec(0)", false}, {Codec(31), "codec(31)", true}, {Codec(32), "codec(32)", false},
	} {
		if got := c.codec.String(); got != c.name {
			t.Errorf("Codec(%d).String() = %q, want %q", uint16(c.codec), got, c.name)
		}
		if got := c.codec.IsRaw(); got != c.raw {
			t.Errorf("Codec(%d).IsRaw() = %t, want %t", uint16(c.codec), got, c.raw)
		}
	}
}
