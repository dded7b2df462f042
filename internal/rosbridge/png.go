package rosbridge

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image"
	"image/png"
)

// pngPayload undoes rosbridge's "png" compression: the base64 text of a PNG
// whose RGB pixels, read row by row, are the JSON message padded with
// newlines. maxBytes bounds the image before it is decoded.
func pngPayload(b64 string, maxBytes int64) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("png op: base64: %w", err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("png op: %w", err)
	}
	if int64(cfg.Width)*int64(cfg.Height)*3 > maxBytes {
		return nil, fmt.Errorf("png op: a %dx%d image exceeds the size cap of %d bytes", cfg.Width, cfg.Height, maxBytes)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("png op: %w", err)
	}
	b := img.Bounds()
	out := make([]byte, 0, b.Dx()*b.Dy()*3)
	if rgba, ok := img.(*image.RGBA); ok {
		for y := 0; y < b.Dy(); y++ {
			row := rgba.Pix[y*rgba.Stride : y*rgba.Stride+b.Dx()*4]
			for x := 0; x < len(row); x += 4 {
				out = append(out, row[x], row[x+1], row[x+2])
			}
		}
	} else {
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				r, g, bl, _ := img.At(x, y).RGBA()
				out = append(out, byte(r>>8), byte(g>>8), byte(bl>>8))
			}
		}
	}
	return bytes.TrimRight(out, "\n"), nil
}
