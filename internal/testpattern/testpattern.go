// Package testpattern renders a moving test picture as raw pixels, with the
// frame number and the commit time stamped into it twice: as big blocky
// digits a person can read, and as a barcode strip a program can read back
// from a decoded (lossy) picture.
//
// The picture has scrolling colour bars (tearing shows as a broken bar edge),
// a box that moves one step per frame (a freeze shows as a box that stops),
// a barcode strip along the top (frame number, commit time in Unix ns and a
// CRC-16 over both) and, below it, the frame number and the UTC time of day
// in digits.
//
// The package imports nothing from Caddy or cgo; sdr_encoder, the
// `caddy sdr-testsrc` subcommand and the browser tests share it.
package testpattern

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Format is a raw pixel layout; the values are the raw codec numbers of
// the raw-frame ring (docs/protocol.md, "Raw-frame ring").
type Format uint16

// The pixel layouts Render writes.
const (
	RGBA  Format = 16
	BGRA  Format = 17
	NV12  Format = 18
	I420  Format = 19
	RGB24 Format = 20
)

// String names the format.
func (f Format) String() string {
	switch f {
	case RGBA:
		return "rgba"
	case BGRA:
		return "bgra"
	case NV12:
		return "nv12"
	case I420:
		return "i420"
	case RGB24:
		return "rgb24"
	}
	return fmt.Sprintf("format(%d)", uint16(f))
}

// Barcode geometry: 144 bits (64 frame number, 64 time, 16 CRC) in
// barcodeRows rows of barcodeCols cells, after one row of alternating
// calibration cells.
const (
	barcodeCols = 48
	barcodeRows = 3
	barcodeBits = barcodeCols * barcodeRows
)

// MinWidth and MinHeight are the smallest picture Render accepts: the
// barcode needs cells of at least 4x4 pixels.
const (
	MinWidth  = barcodeCols * 4
	MinHeight = 64
)

// Stamp is what a picture carries: its frame number and commit time.
type Stamp struct {
	Frame uint64
	Time  time.Time
}

// Pattern renders pictures of one size and format.
type Pattern struct {
	width, height int
	format        Format
	cell          int // barcode cell size in pixels
}

// New returns a pattern of the given size and format. Width and height must
// be even (the chroma planes of I420 and NV12 are subsampled by two) and at
// least MinWidth x MinHeight.
func New(width, height int, format Format) (*Pattern, error) {
	switch format {
	case RGBA, BGRA, NV12, I420, RGB24:
	default:
		return nil, fmt.Errorf("test pattern: unsupported pixel format %d", uint16(format))
	}
	if width < MinWidth || height < MinHeight || width%2 != 0 || height%2 != 0 {
		return nil, fmt.Errorf("test pattern: size %dx%d must be even and at least %dx%d", width, height, MinWidth, MinHeight)
	}
	if width > 8192 || height > 8192 {
		return nil, fmt.Errorf("test pattern: size %dx%d larger than 8192x8192", width, height)
	}
	cell := width / barcodeCols
	if cell > 32 {
		cell = 32
	}
	if (barcodeRows+1)*cell > height/3 {
		cell = height / 3 / (barcodeRows + 1)
	}
	if cell < 4 {
		return nil, fmt.Errorf("test pattern: size %dx%d leaves barcode cells under 4 pixels", width, height)
	}
	return &Pattern{width: width, height: height, format: format, cell: cell}, nil
}

// Width is the picture width in pixels.
func (p *Pattern) Width() int { return p.width }

// Height is the picture height in pixels.
func (p *Pattern) Height() int { return p.height }

// Format is the pixel layout.
func (p *Pattern) Format() Format { return p.format }

// Stride is the number of bytes per row of the first plane.
func (p *Pattern) Stride() int { return Stride(p.format, p.width) }

// Size is the number of bytes of one picture.
func (p *Pattern) Size() int { return Size(p.format, p.width, p.height) }

// Stride is the tightly packed row length of the first plane of a format.
func Stride(f Format, width int) int {
	switch f {
	case RGBA, BGRA:
		return width * 4
	case RGB24:
		return width * 3
	}
	return width
}

// Size is the number of bytes of a tightly packed picture.
func Size(f Format, width, height int) int {
	switch f {
	case NV12, I420:
		return width*height + 2*((width+1)/2)*((height+1)/2)
	}
	return Stride(f, width) * height
}

// colour is one colour in both representations the formats need.
type colour struct {
	r, g, b uint8
	y, u, v uint8
}

func rgb(r, g, b uint8) colour {
	// BT.601 limited range, what FFmpeg assumes for yuv420p without tags.
	fr, fg, fb := float64(r), float64(g), float64(b)
	y := 16 + (65.481*fr+128.553*fg+24.966*fb)/255
	u := 128 + (-37.797*fr-74.203*fg+112.0*fb)/255
	v := 128 + (112.0*fr-93.786*fg-18.214*fb)/255
	return colour{r: r, g: g, b: b, y: clamp8(y), u: clamp8(u), v: clamp8(v)}
}

func clamp8(f float64) uint8 {
	f += 0.5
	if f < 0 {
		return 0
	}
	if f > 255 {
		return 255
	}
	return uint8(f)
}

var (
	black = rgb(0, 0, 0)
	white = rgb(255, 255, 255)
	grey  = rgb(64, 64, 64)
	bars  = []colour{
		rgb(192, 192, 192), rgb(192, 192, 0), rgb(0, 192, 192), rgb(0, 192, 0),
		rgb(192, 0, 192), rgb(192, 0, 0), rgb(0, 0, 192), rgb(32, 32, 32),
	}
	boxColour = rgb(255, 128, 0)
)

// Render draws frame n, committed at t, into dst (grown when too small) and
// returns it. The picture is tightly packed: planes follow each other with
// the strides Stride and Size describe.
func (p *Pattern) Render(dst []byte, n uint64, t time.Time) []byte {
	size := p.Size()
	if cap(dst) < size {
		dst = make([]byte, size)
	}
	dst = dst[:size]
	c := canvas{p: p, buf: dst}

	// Colour bars scrolling left by 4 pixels per frame.
	barW := (p.width + len(bars) - 1) / len(bars)
	shift := int(n*4) % p.width
	for x := 0; x < p.width; x++ {
		c.fillRect(x, 0, 1, 1, bars[((x+shift)%p.width)/barW%len(bars)])
	}
	c.repeatFirstRow()

	// A box that moves one step per frame along a diagonal and bounces.
	box := p.height / 6
	if box < 8 {
		box = 8
	}
	c.fillRect(bounce(int(n*6), p.width-box), p.height/2+bounce(int(n*3), p.height/2-box), box, box, boxColour)

	// Barcode strip: a calibration row, then the stamp bits.
	bits := encodeStamp(n, t)
	cell := p.cell
	c.fillRect(0, 0, barcodeCols*cell, (barcodeRows+1)*cell, black)
	for i := 0; i < barcodeCols; i += 2 {
		c.fillRect(i*cell, 0, cell, cell, white)
	}
	for i := 0; i < barcodeBits; i++ {
		if bits[i/8]&(0x80>>(i%8)) != 0 {
			c.fillRect((i%barcodeCols)*cell, (1+i/barcodeCols)*cell, cell, cell, white)
		}
	}

	// Digits: frame number, then time of day.
	text := fmt.Sprintf("%08d %s", n%100000000, t.UTC().Format("15:04:05.000"))
	scale := p.width / (len(text) * 6)
	if max := (p.height/2 - (barcodeRows+1)*cell - 4) / 8; scale > max {
		scale = max
	}
	if scale >= 1 {
		y0 := (barcodeRows+1)*cell + 2
		c.fillRect(0, y0, len(text)*6*scale, 9*scale, grey)
		for i, ch := range text {
			drawGlyph(&c, i*6*scale+scale, y0+scale, scale, ch, white)
		}
	}
	return dst
}

// bounce maps a growing position onto 0..span and back.
func bounce(pos, span int) int {
	if span <= 0 {
		return 0
	}
	pos %= 2 * span
	if pos > span {
		return 2*span - pos
	}
	return pos
}

// canvas fills rectangles in any of the formats.
type canvas struct {
	p   *Pattern
	buf []byte
}

func (c *canvas) fillRect(x, y, w, h int, col colour) {
	p := c.p
	if x < 0 {
		w += x
		x = 0
	}
	if y < 0 {
		h += y
		y = 0
	}
	if x+w > p.width {
		w = p.width - x
	}
	if y+h > p.height {
		h = p.height - y
	}
	if w <= 0 || h <= 0 {
		return
	}
	switch p.format {
	case RGBA, BGRA, RGB24:
		bpp := 4
		px := []byte{col.r, col.g, col.b, 255}
		if p.format == BGRA {
			px = []byte{col.b, col.g, col.r, 255}
		} else if p.format == RGB24 {
			bpp, px = 3, px[:3]
		}
		stride := p.width * bpp
		row := c.buf[y*stride+x*bpp : y*stride+(x+w)*bpp]
		for i := 0; i < len(row); i += bpp {
			copy(row[i:], px)
		}
		for j := 1; j < h; j++ {
			copy(c.buf[(y+j)*stride+x*bpp:], row)
		}
	case I420, NV12:
		fill2D(c.buf, p.width, x, y, w, h, col.y)
		luma := p.width * p.height
		cw := (p.width + 1) / 2
		ch := (p.height + 1) / 2
		cx, cy, cx1, cy1 := x/2, y/2, (x+w+1)/2, (y+h+1)/2
		if p.format == I420 {
			fill2D(c.buf[luma:luma+cw*ch], cw, cx, cy, cx1-cx, cy1-cy, col.u)
			fill2D(c.buf[luma+cw*ch:], cw, cx, cy, cx1-cx, cy1-cy, col.v)
		} else {
			uv := c.buf[luma:]
			for j := cy; j < cy1; j++ {
				row := uv[j*cw*2:]
				for i := cx; i < cx1; i++ {
					row[2*i], row[2*i+1] = col.u, col.v
				}
			}
		}
	}
}

func fill2D(plane []byte, stride, x, y, w, h int, v byte) {
	for j := y; j < y+h; j++ {
		row := plane[j*stride+x : j*stride+x+w]
		for i := range row {
			row[i] = v
		}
	}
}

// repeatFirstRow copies row 0 (and chroma row 0) down the whole picture.
func (c *canvas) repeatFirstRow() {
	p := c.p
	switch p.format {
	case RGBA, BGRA, RGB24:
		stride := Stride(p.format, p.width)
		for j := 1; j < p.height; j++ {
			copy(c.buf[j*stride:(j+1)*stride], c.buf[:stride])
		}
	case I420, NV12:
		for j := 1; j < p.height; j++ {
			copy(c.buf[j*p.width:(j+1)*p.width], c.buf[:p.width])
		}
		luma := p.width * p.height
		cw, ch := (p.width+1)/2, (p.height+1)/2
		if p.format == I420 {
			for _, base := range []int{luma, luma + cw*ch} {
				for j := 1; j < ch; j++ {
					copy(c.buf[base+j*cw:base+(j+1)*cw], c.buf[base:base+cw])
				}
			}
		} else {
			for j := 1; j < ch; j++ {
				copy(c.buf[luma+j*cw*2:luma+(j+1)*cw*2], c.buf[luma:luma+cw*2])
			}
		}
	}
}

// encodeStamp packs frame number, time and a CRC-16 into 18 bytes.
func encodeStamp(n uint64, t time.Time) [barcodeBits / 8]byte {
	var b [barcodeBits / 8]byte
	binary.BigEndian.PutUint64(b[0:], n)
	binary.BigEndian.PutUint64(b[8:], uint64(t.UnixNano()))
	binary.BigEndian.PutUint16(b[16:], crc16(b[:16]))
	return b
}

// crc16 is CRC-16/CCITT-FALSE.
func crc16(b []byte) uint16 {
	crc := uint16(0xffff)
	for _, x := range b {
		crc ^= uint16(x) << 8
		for i := 0; i < 8; i++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// ErrNoStamp is returned when a picture carries no readable stamp: no
// barcode where the pattern puts it, or one whose CRC does not match.
var ErrNoStamp = errors.New("no readable test-pattern stamp")

// ReadLuma reads the stamp back from the luma plane of a decoded picture
// (width x height, stride bytes per row): the Y plane of I420 or NV12 as a
// decoder returns it, whatever the range (limited or full). Each barcode
// cell is judged by the mean of its inner pixels against a threshold
// learned from the calibration row, so block artefacts of a lossy codec at
// sensible bitrates do not flip bits; the CRC rejects what they do flip.
func ReadLuma(luma []byte, stride, width, height int) (Stamp, error) {
	if width < MinWidth || height < MinHeight || stride < width || len(luma) < stride*(height-1)+width {
		return Stamp{}, fmt.Errorf("reading stamp from %dx%d picture (stride %d, %d bytes): %w", width, height, stride, len(luma), ErrNoStamp)
	}
	p, err := New(width&^1, height&^1, I420)
	if err != nil {
		return Stamp{}, fmt.Errorf("reading stamp: %w", err)
	}
	cell := p.cell
	mean := func(cx, cy int) int {
		m := cell / 4
		sum, cnt := 0, 0
		for y := cy*cell + m; y < (cy+1)*cell-m; y++ {
			for x := cx*cell + m; x < (cx+1)*cell-m; x++ {
				sum += int(luma[y*stride+x])
				cnt++
			}
		}
		return sum / cnt
	}
	// Calibration row: white on even cells, black on odd ones.
	lo, hi := 0, 0
	for i := 0; i < barcodeCols; i++ {
		if i%2 == 0 {
			hi += mean(i, 0)
		} else {
			lo += mean(i, 0)
		}
	}
	lo /= barcodeCols / 2
	hi /= barcodeCols / 2
	if hi-lo < 64 {
		return Stamp{}, fmt.Errorf("reading stamp: calibration row contrast %d too low: %w", hi-lo, ErrNoStamp)
	}
	threshold := (lo + hi) / 2
	var b [barcodeBits / 8]byte
	for i := 0; i < barcodeBits; i++ {
		if mean(i%barcodeCols, 1+i/barcodeCols) > threshold {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	if crc16(b[:16]) != binary.BigEndian.Uint16(b[16:]) {
		return Stamp{}, fmt.Errorf("reading stamp: CRC mismatch: %w", ErrNoStamp)
	}
	return Stamp{
		Frame: binary.BigEndian.Uint64(b[0:]),
		Time:  time.Unix(0, int64(binary.BigEndian.Uint64(b[8:]))),
	}, nil
}

// Read reads the stamp from a picture in any of the formats, tightly packed
// or with the given stride for the first plane (0 means packed).
func Read(f Format, pix []byte, width, height, stride int) (Stamp, error) {
	if stride == 0 {
		stride = Stride(f, width)
	}
	switch f {
	case I420, NV12:
		return ReadLuma(pix, stride, width, height)
	case RGBA, BGRA, RGB24:
		bpp := 4
		if f == RGB24 {
			bpp = 3
		}
		if stride < width*bpp || len(pix) < stride*(height-1)+width*bpp {
			return Stamp{}, fmt.Errorf("reading stamp from %s %dx%d: %d bytes with stride %d: %w", f, width, height, len(pix), stride, ErrNoStamp)
		}
		luma := make([]byte, width*height)
		for y := 0; y < height; y++ {
			row := pix[y*stride:]
			for x := 0; x < width; x++ {
				r, g, b := int(row[x*bpp]), int(row[x*bpp+1]), int(row[x*bpp+2])
				if f == BGRA {
					r, b = b, r
				}
				luma[y*width+x] = byte((r*77 + g*150 + b*29) >> 8)
			}
		}
		return ReadLuma(luma, width, width, height)
	}
	return Stamp{}, fmt.Errorf("reading stamp: unsupported pixel format %d", uint16(f))
}
