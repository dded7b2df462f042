// Package nvenctest gives tests real H.264: internal/testpattern's picture
// encoded by libx264 through nvenc, as sdr_encoder encodes a stream.
package nvenctest

import (
	"fmt"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testpattern"
	"github.com/sdr-os/sdr-caddy/nvenc"
)

// Pattern encodes n pictures of the test pattern, w×h at fps with a
// keyframe every gop, with libx264, and returns one access unit a picture.
// Picture i shows the clock at(i). It needs a cgo build (nvenc.Open says
// so otherwise).
func Pattern(w, h, fps, gop, n int, at func(i int) time.Time) ([]nvenc.Packet, error) {
	enc, err := nvenc.Open(nvenc.Config{Width: w, Height: h, FPS: fps, GOP: gop, Backends: []string{"libx264"}})
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	pat, err := testpattern.New(w, h, testpattern.Format(enc.Config().Input))
	if err != nil {
		return nil, err
	}
	out := make([]nvenc.Packet, 0, n)
	var buf []byte
	for i := range n {
		buf = pat.Render(buf, uint64(i), at(i))
		pkts, err := enc.Encode(nvenc.Picture{Format: enc.Config().Input, Width: w, Height: h, Stride: pat.Stride(), Data: buf}, false)
		if err != nil {
			return nil, fmt.Errorf("picture %d: %w", i, err)
		}
		if len(pkts) != 1 {
			return nil, fmt.Errorf("picture %d: libx264 gave %d access units, want 1", i, len(pkts))
		}
		out = append(out, pkts[0])
	}
	return out, nil
}
