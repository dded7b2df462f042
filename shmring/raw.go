package shmring

import (
	"encoding/binary"
	"fmt"
)

// RawDescriptorSize is the size of the descriptor that starts every payload
// of the raw-frame ring.
const RawDescriptorSize = 16

// maxRawDim bounds width and height: no camera frame comes near it, and it
// keeps every plane size computation far from overflow.
const maxRawDim = 1 << 15

// RawDescriptor is the 16-byte descriptor at the start of a raw-ring payload:
// width u32, height u32, stride u32 (bytes per row of the first plane),
// reserved u32 (0). The pixel planes follow it; see Layout.
type RawDescriptor struct {
	Width    uint32
	Height   uint32
	Stride   uint32
	Reserved uint32
}

// Put encodes d into b, which must hold at least RawDescriptorSize bytes.
func (d RawDescriptor) Put(b []byte) {
	_ = b[RawDescriptorSize-1]
	binary.LittleEndian.PutUint32(b[0:], d.Width)
	binary.LittleEndian.PutUint32(b[4:], d.Height)
	binary.LittleEndian.PutUint32(b[8:], d.Stride)
	binary.LittleEndian.PutUint32(b[12:], d.Reserved)
}

// Bytes returns the 16-byte encoding of d.
func (d RawDescriptor) Bytes() []byte {
	b := make([]byte, RawDescriptorSize)
	d.Put(b)
	return b
}

// ParseRawDescriptor decodes the descriptor at the start of b.
func ParseRawDescriptor(b []byte) (RawDescriptor, error) {
	if len(b) < RawDescriptorSize {
		return RawDescriptor{}, fmt.Errorf("parsing raw frame descriptor: %d bytes, need %d", len(b), RawDescriptorSize)
	}
	return RawDescriptor{
		Width:    binary.LittleEndian.Uint32(b[0:]),
		Height:   binary.LittleEndian.Uint32(b[4:]),
		Stride:   binary.LittleEndian.Uint32(b[8:]),
		Reserved: binary.LittleEndian.Uint32(b[12:]),
	}, nil
}

// Plane is one pixel plane of a raw frame, located in the payload.
type Plane struct {
	Offset int // from the start of the payload (the descriptor included)
	Stride int // bytes per row
	Rows   int
}

// Size is the plane's size in bytes.
func (p Plane) Size() int { return p.Stride * p.Rows }

// RawLayout is where the planes of one raw frame lie in its payload.
type RawLayout struct {
	Codec      Codec
	Descriptor RawDescriptor
	Planes     []Plane
	// PayloadSize is the exact payload size: descriptor plus planes.
	PayloadSize int
}

// Layout validates d for the pixel format c and returns its planes:
//
//	rgba, bgra  one plane, stride >= 4*width, height rows
//	rgb24       one plane, stride >= 3*width, height rows
//	nv12        Y: stride >= width (and >= the UV row, 2*ceil(width/2)), height rows;
//	            UV interleaved: the same stride, ceil(height/2) rows
//	i420        Y: stride >= width, height rows; U then V: stride ceil(stride/2),
//	            ceil(height/2) rows each
//
// Width and height must be 1..32768.
func (d RawDescriptor) Layout(c Codec) (RawLayout, error) {
	w, h, s := int(d.Width), int(d.Height), int(d.Stride)
	if w < 1 || h < 1 || w > maxRawDim || h > maxRawDim {
		return RawLayout{}, fmt.Errorf("raw %s frame: %dx%d is outside 1..%d", c, w, h, maxRawDim)
	}
	minStride := 0
	switch c {
	case CodecRGBA, CodecBGRA:
		minStride = 4 * w
	case CodecRGB24:
		minStride = 3 * w
	case CodecNV12:
		minStride = 2 * ((w + 1) / 2)
	case CodecI420:
		minStride = w
	default:
		return RawLayout{}, fmt.Errorf("raw frame: codec %s (%d) is not a raw pixel format this version knows (16..20)", c, uint16(c))
	}
	if s < minStride || s > 4*maxRawDim {
		return RawLayout{}, fmt.Errorf("raw %s frame %dx%d: stride %d, need %d..%d", c, w, h, s, minStride, 4*maxRawDim)
	}
	l := RawLayout{Codec: c, Descriptor: d}
	off := RawDescriptorSize
	add := func(stride, rows int) {
		l.Planes = append(l.Planes, Plane{Offset: off, Stride: stride, Rows: rows})
		off += stride * rows
	}
	add(s, h)
	switch c {
	case CodecNV12:
		add(s, (h+1)/2)
	case CodecI420:
		cs := (s + 1) / 2
		add(cs, (h+1)/2)
		add(cs, (h+1)/2)
	}
	l.PayloadSize = off
	return l, nil
}

// ParseRaw checks a raw-ring frame: a raw codec, a descriptor valid for it,
// and a payload of exactly the descriptor plus its planes. The planes are
// slices of payload at the returned layout's offsets.
func ParseRaw(h Header, payload []byte) (RawLayout, error) {
	if !h.Codec.IsRaw() {
		return RawLayout{}, fmt.Errorf("raw frame: codec %s (%d) is not a raw pixel format (16..31)", h.Codec, uint16(h.Codec))
	}
	d, err := ParseRawDescriptor(payload)
	if err != nil {
		return RawLayout{}, err
	}
	l, err := d.Layout(h.Codec)
	if err != nil {
		return RawLayout{}, err
	}
	if len(payload) != l.PayloadSize {
		return RawLayout{}, fmt.Errorf("raw %s frame %dx%d stride %d: payload of %d bytes, layout needs %d",
			h.Codec, d.Width, d.Height, d.Stride, len(payload), l.PayloadSize)
	}
	return l, nil
}

// NewRawPayload allocates a payload for a raw frame of format c described by
// d, with the descriptor filled in and the planes zeroed.
func NewRawPayload(c Codec, d RawDescriptor) ([]byte, RawLayout, error) {
	l, err := d.Layout(c)
	if err != nil {
		return nil, RawLayout{}, err
	}
	b := make([]byte, l.PayloadSize)
	d.Put(b)
	return b, l, nil
}
