package shmring

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func TestRawDescriptorRoundTrip(t *testing.T) {
	t.Parallel()
	d := RawDescriptor{Width: 1920, Height: 1080, Stride: 7680}
	want := []byte{0x80, 0x07, 0, 0, 0x38, 0x04, 0, 0, 0x00, 0x1e, 0, 0, 0, 0, 0, 0}
	if got := d.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("encode: %x, want %x", got, want)
	}
	got, err := ParseRawDescriptor(want)
	if err != nil || got != d {
		t.Fatalf("parse: %+v %v", got, err)
	}
	if _, err := ParseRawDescriptor(want[:15]); err == nil {
		t.Error("15-byte descriptor accepted")
	}
}

func TestRawLayout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		codec  Codec
		d      RawDescriptor
		planes []Plane
		err    string
	}{
		{CodecRGBA, RawDescriptor{Width: 4, Height: 2, Stride: 16}, []Plane{{16, 16, 2}}, ""},
		{CodecBGRA, RawDescriptor{Width: 4, Height: 2, Stride: 20}, []Plane{{16, 20, 2}}, ""},
		{CodecRGB24, RawDescriptor{Width: 3, Height: 3, Stride: 9}, []Plane{{16, 9, 3}}, ""},
		{CodecNV12, RawDescriptor{Width: 4, Height: 4, Stride: 4}, []Plane{{16, 4, 4}, {32, 4, 2}}, ""},
		{CodecNV12, RawDescriptor{Width: 3, Height: 3, Stride: 4}, []Plane{{16, 4, 3}, {28, 4, 2}}, ""},
		{CodecI420, RawDescriptor{Width: 4, Height: 4, Stride: 4}, []Plane{{16, 4, 4}, {32, 2, 2}, {36, 2, 2}}, ""},
		{CodecI420, RawDescriptor{Width: 5, Height: 3, Stride: 5}, []Plane{{16, 5, 3}, {31, 3, 2}, {37, 3, 2}}, ""},
		{CodecRGBA, RawDescriptor{Width: 4, Height: 2, Stride: 15}, nil, "stride 15"},
		{CodecRGB24, RawDescriptor{Width: 4, Height: 2, Stride: 11}, nil, "stride 11"},
		{CodecNV12, RawDescriptor{Width: 3, Height: 2, Stride: 3}, nil, "stride 3"},
		{CodecI420, RawDescriptor{Width: 0, Height: 2, Stride: 3}, nil, "0x2"},
		{CodecRGBA, RawDescriptor{Width: 40000, Height: 2, Stride: 160000}, nil, "outside"},
		{Codec(21), RawDescriptor{Width: 4, Height: 4, Stride: 16}, nil, "not a raw pixel format this version knows"},
		{CodecH264, RawDescriptor{Width: 4, Height: 4, Stride: 16}, nil, "not a raw pixel format"},
	}
	for _, tt := range tests {
		l, err := tt.d.Layout(tt.codec)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s %+v: error %v, want one containing %q", tt.codec, tt.d, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %+v: %v", tt.codec, tt.d, err)
			continue
		}
		last := tt.planes[len(tt.planes)-1]
		if len(l.Planes) != len(tt.planes) || l.PayloadSize != last.Offset+last.Size() {
			t.Errorf("%s %+v: layout %+v, want planes %+v", tt.codec, tt.d, l, tt.planes)
			continue
		}
		for i := range tt.planes {
			if l.Planes[i] != tt.planes[i] {
				t.Errorf("%s %+v plane %d: %+v, want %+v", tt.codec, tt.d, i, l.Planes[i], tt.planes[i])
			}
		}
	}
}

func TestParseRaw(t *testing.T) {
	t.Parallel()
	d := RawDescriptor{Width: 8, Height: 6, Stride: 8}
	p, l, err := NewRawPayload(CodecI420, d)
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 16+48+2*12 {
		t.Fatalf("payload %d bytes", len(p))
	}
	h := Header{Codec: CodecI420, Size: uint32(len(p))}
	if got, err := ParseRaw(h, p); err != nil || got.PayloadSize != l.PayloadSize {
		t.Fatalf("ParseRaw: %+v %v", got, err)
	}
	if _, err := ParseRaw(h, p[:len(p)-1]); err == nil || !strings.Contains(err.Error(), "layout needs") {
		t.Errorf("short payload: %v", err)
	}
	if _, err := ParseRaw(h, append(p, 0)); err == nil {
		t.Error("long payload accepted")
	}
	if _, err := ParseRaw(Header{Codec: CodecH264}, p); err == nil {
		t.Error("h264 accepted as raw")
	}
	if _, err := ParseRaw(h, p[:10]); err == nil {
		t.Error("10-byte payload accepted")
	}
}

// TestRawVectors checks the raw-ring vectors that tests/python/make_raw_vectors.py
// computes from the definition in docs/ring.md.
func TestRawVectors(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("testdata/raw_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Layouts []struct {
			Codec                 uint16
			Width, Height, Stride uint32
			DescriptorHex         string `json:"descriptor_hex"`
			Planes                []struct{ Offset, Stride, Rows int }
			PayloadSize           int `json:"payload_size"`
		}
		Invalid []struct {
			Codec                 uint16
			Width, Height, Stride uint32
			Why                   string
		}
		Region struct {
			Hex         string
			Sequence    uint64
			FrameID     uint64 `json:"frame_id"`
			Codec       uint16
			Width       uint32
			PayloadSize int `json:"payload_size"`
		}
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Layouts) == 0 || len(v.Invalid) == 0 {
		t.Fatal("raw vectors incomplete")
	}
	for _, c := range v.Layouts {
		d := RawDescriptor{Width: c.Width, Height: c.Height, Stride: c.Stride}
		if got := hex.EncodeToString(d.Bytes()); got != c.DescriptorHex {
			t.Errorf("%+v: descriptor %s, want %s", d, got, c.DescriptorHex)
		}
		l, err := d.Layout(Codec(c.Codec))
		if err != nil {
			t.Errorf("%s %+v: %v", Codec(c.Codec), d, err)
			continue
		}
		if l.PayloadSize != c.PayloadSize || len(l.Planes) != len(c.Planes) {
			t.Errorf("%s %+v: layout %+v, want size %d, %d planes", Codec(c.Codec), d, l, c.PayloadSize, len(c.Planes))
			continue
		}
		for i, p := range c.Planes {
			if l.Planes[i] != (Plane{Offset: p.Offset, Stride: p.Stride, Rows: p.Rows}) {
				t.Errorf("%s %+v plane %d: %+v, want %+v", Codec(c.Codec), d, i, l.Planes[i], p)
			}
		}
	}
	for _, c := range v.Invalid {
		d := RawDescriptor{Width: c.Width, Height: c.Height, Stride: c.Stride}
		if _, err := d.Layout(Codec(c.Codec)); err == nil {
			t.Errorf("%s accepted: %+v codec %d", c.Why, d, c.Codec)
		}
	}
	region, err := hex.DecodeString(v.Region.Hex)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseRegion(region, true)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ParseRaw(f.Header, f.Payload)
	if err != nil || f.Sequence != v.Region.Sequence || f.Header.FrameID != v.Region.FrameID ||
		uint16(f.Header.Codec) != v.Region.Codec || l.Descriptor.Width != v.Region.Width || l.PayloadSize != v.Region.PayloadSize {
		t.Errorf("raw region: %+v, layout %+v, %v", f.Header, l, err)
	}
}
