//go:build cgo

package nvenc

import (
	"errors"
	"fmt"
	"image"

	"github.com/asticode/go-astiav"

	"github.com/sdr-os/sdr-caddy/frame"
)

// Decoder decodes what Encoder produces, for tests, benchmarks and the
// probe's round trip. It returns pictures as 4:2:0 YCbCr images.
type Decoder struct {
	cc    *astiav.CodecContext
	pkt   *astiav.Packet
	frame *astiav.Frame
}

// NewDecoder opens FFmpeg's decoder for an encoded codec.
func NewDecoder(codec frame.Codec) (*Decoder, error) {
	id := astiav.CodecIDH264
	switch codec {
	case frame.CodecH264:
	case frame.CodecHEVC:
		id = astiav.CodecIDHevc
	case frame.CodecJPEG:
		id = astiav.CodecIDMjpeg
	default:
		return nil, fmt.Errorf("opening decoder: codec %s is not h264, hevc or jpeg", codec)
	}
	c := astiav.FindDecoder(id)
	if c == nil {
		return nil, fmt.Errorf("opening decoder: no %s decoder in the linked FFmpeg", codec)
	}
	d := &Decoder{cc: astiav.AllocCodecContext(c), pkt: astiav.AllocPacket(), frame: astiav.AllocFrame()}
	d.cc.SetThreadCount(1)
	if err := d.cc.Open(c, nil); err != nil {
		d.Close()
		return nil, fmt.Errorf("opening %s decoder: %w", codec, err)
	}
	return d, nil
}

// Decode decodes one access unit and returns the pictures it completed: one
// for a low-latency stream, none while a decoder still reorders.
func (d *Decoder) Decode(au []byte) ([]*image.YCbCr, error) {
	if err := d.pkt.FromData(au); err != nil {
		return nil, fmt.Errorf("decoding %d bytes: %w", len(au), err)
	}
	defer d.pkt.Unref()
	if err := d.cc.SendPacket(d.pkt); err != nil {
		return nil, fmt.Errorf("decoding %d bytes: %w", len(au), err)
	}
	return d.receive()
}

// Flush returns the pictures the decoder still holds.
func (d *Decoder) Flush() ([]*image.YCbCr, error) {
	if err := d.cc.SendPacket(nil); err != nil && !errors.Is(err, astiav.ErrEof) {
		return nil, fmt.Errorf("flushing decoder: %w", err)
	}
	return d.receive()
}

func (d *Decoder) receive() ([]*image.YCbCr, error) {
	var out []*image.YCbCr
	for {
		err := d.cc.ReceiveFrame(d.frame)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("receiving decoded frame: %w", err)
		}
		switch d.frame.PixelFormat() {
		case astiav.PixelFormatYuv420P, astiav.PixelFormatYuvj420P:
		default:
			f := d.frame.PixelFormat()
			d.frame.Unref()
			return out, fmt.Errorf("decoded picture in %s, want yuv420p", f)
		}
		img := copyYCbCr(d.frame)
		d.frame.Unref()
		out = append(out, img)
	}
}

// Close frees the decoder.
func (d *Decoder) Close() {
	if d.pkt != nil {
		d.pkt.Free()
		d.pkt = nil
	}
	if d.frame != nil {
		d.frame.Free()
		d.frame = nil
	}
	if d.cc != nil {
		d.cc.Free()
		d.cc = nil
	}
}
