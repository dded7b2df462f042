//go:build cgo

package nvenc

import (
	"errors"
	"image"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/testpattern"
)

// psnr compares two luma planes.
func psnr(a []byte, as int, b []byte, bs, w, h int) float64 {
	var se float64
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			d := float64(a[y*as+x]) - float64(b[y*bs+x])
			se += d * d
		}
	}
	mse := se / float64(w*h)
	if mse == 0 {
		return 99
	}
	return 10 * math.Log10(255*255/mse)
}

type encoded struct {
	packets []Packet
	stamps  []testpattern.Stamp
}

// encodePattern encodes n frames of the test pattern and returns packets.
func encodePattern(t *testing.T, cfg Config, n int, idrAt map[int]bool) (*Encoder, encoded) {
	t.Helper()
	enc, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(enc.Close)
	pat, err := testpattern.New(cfg.Width, cfg.Height, testpattern.Format(enc.Config().Input))
	if err != nil {
		t.Fatal(err)
	}
	var out encoded
	base := time.Unix(1764238272, 0)
	var buf []byte
	for i := 0; i < n; i++ {
		ts := base.Add(time.Duration(i) * 33 * time.Millisecond)
		buf = pat.Render(buf, uint64(i), ts)
		pkts, err := enc.Encode(Picture{Format: enc.Config().Input, Width: cfg.Width, Height: cfg.Height, Stride: pat.Stride(), Data: buf}, idrAt[i])
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if len(pkts) != 1 {
			t.Fatalf("frame %d: %d packets out, want exactly 1 (one in, one out)", i, len(pkts))
		}
		out.packets = append(out.packets, pkts...)
		out.stamps = append(out.stamps, testpattern.Stamp{Frame: uint64(i), Time: ts})
	}
	return enc, out
}

// decodeAll decodes every packet, requiring one picture per packet.
func decodeAll(t *testing.T, codec frame.Codec, pkts []Packet) []*image.YCbCr {
	t.Helper()
	dec, err := NewDecoder(codec)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var pics []*image.YCbCr
	for i, p := range pkts {
		got, err := dec.Decode(p.Data)
		if err != nil {
			t.Fatalf("decoding packet %d: %v", i, err)
		}
		if len(got) != 1 {
			t.Fatalf("packet %d decoded into %d pictures, want 1 at once (decoder held it back: no max_num_reorder_frames=0?)", i, len(got))
		}
		pics = append(pics, got...)
	}
	rest, err := dec.Flush()
	if err != nil || len(rest) != 0 {
		t.Fatalf("flush: %d pictures, %v", len(rest), err)
	}
	return pics
}

func TestEncodeH264FallsBackToLibx264(t *testing.T) {
	t.Parallel()
	cfg := Config{Width: 320, Height: 240, GOP: 10, BitrateKbps: 1500}
	enc, out := encodePattern(t, cfg, 30, nil)
	if enc.Backend() != "libx264" {
		t.Fatalf("backend %s, want libx264 on a machine without NVENC", enc.Backend())
	}
	att := enc.Attempts()
	if len(att) != 2 || att[0].Backend != "h264_nvenc" || att[0].Error == "" || att[1].Error != "" {
		t.Fatalf("attempts = %+v, want h264_nvenc failed then libx264", att)
	}
	t.Logf("h264_nvenc not used: %s (log %q)", att[0].Reason(), att[0].Log)

	pics := decodeAll(t, frame.CodecH264, out.packets)
	if len(pics) != 30 {
		t.Fatalf("decoded %d pictures, want 30", len(pics))
	}
	pat, _ := testpattern.New(320, 240, testpattern.I420)
	for i, pic := range pics {
		src := pat.Render(nil, out.stamps[i].Frame, out.stamps[i].Time)
		if db := psnr(pic.Y, pic.YStride, src, 320, 320, 240); db < 30 {
			t.Errorf("frame %d: luma PSNR %.1f dB, want >= 30", i, db)
		}
		st, err := testpattern.ReadLuma(pic.Y, pic.YStride, 320, 240)
		if err != nil || st.Frame != out.stamps[i].Frame || !st.Time.Equal(out.stamps[i].Time) {
			t.Errorf("frame %d: stamp %+v, %v; want %+v", i, st, err, out.stamps[i])
		}
	}
	// Keyframes every GOP, each carrying SPS and PPS; the SPS says
	// constrained baseline and no reordering.
	for i, p := range out.packets {
		wantKey := i%10 == 0
		if p.Keyframe != wantKey {
			t.Errorf("packet %d: keyframe %v, want %v", i, p.Keyframe, wantKey)
		}
		types := map[byte]bool{}
		var sps []byte
		for _, n := range SplitNALUnits(p.Data) {
			types[n[0]&0x1f] = true
			if n[0]&0x1f == 7 {
				sps = n
			}
		}
		if types[5] != wantKey {
			t.Errorf("packet %d: IDR slice present %v, want %v", i, types[5], wantKey)
		}
		if !wantKey {
			continue
		}
		if !types[7] || !types[8] {
			t.Fatalf("IDR packet %d lacks SPS or PPS (NAL types %v)", i, types)
		}
		s, err := ParseSPS(sps)
		if err != nil {
			t.Fatal(err)
		}
		if !s.ConstrainedBaseline() || !strings.HasPrefix(s.CodecString(), "avc1.42") {
			t.Errorf("SPS profile %s, want constrained baseline (avc1.42E0xx or 42C0xx)", s.CodecString())
		}
		if !s.BitstreamRestriction || s.MaxNumReorderFrames != 0 {
			t.Errorf("SPS bitstream_restriction %v max_num_reorder_frames %d, want present and 0", s.BitstreamRestriction, s.MaxNumReorderFrames)
		}
		if s.Width != 320 || s.Height != 240 {
			t.Errorf("SPS size %dx%d, want 320x240", s.Width, s.Height)
		}
	}
	if enc.SPSPatched() {
		t.Error("libx264's SPS needed patching; it should carry bitstream_restriction itself")
	}
}

func TestForcedIDRLandsOnThatFrame(t *testing.T) {
	t.Parallel()
	cfg := Config{Width: 256, Height: 192, GOP: 1000, Backends: []string{"libx264"}}
	_, out := encodePattern(t, cfg, 20, map[int]bool{7: true, 8: true, 15: true})
	for i, p := range out.packets {
		want := i == 0 || i == 7 || i == 8 || i == 15
		if p.Keyframe != want {
			t.Errorf("packet %d: keyframe %v, want %v", i, p.Keyframe, want)
		}
	}
	if pics := decodeAll(t, frame.CodecH264, out.packets); len(pics) != 20 {
		t.Fatalf("decoded %d pictures, want 20", len(pics))
	}
}

func TestEncodeEveryInputFormat(t *testing.T) {
	t.Parallel()
	for _, f := range []frame.Codec{frame.CodecRGBA, frame.CodecBGRA, frame.CodecNV12, frame.CodecI420, frame.CodecRGB24} {
		for _, codec := range []frame.Codec{frame.CodecH264, frame.CodecJPEG} {
			cfg := Config{Codec: codec, Width: 320, Height: 240, Input: f, Backends: DefaultBackends(codec)[len(DefaultBackends(codec))-1:]}
			_, out := encodePattern(t, cfg, 5, nil)
			pics := decodeAll(t, codec, out.packets)
			ref, _ := testpattern.New(320, 240, testpattern.I420)
			for i, pic := range pics {
				if pic.Rect.Dx() != 320 || pic.Rect.Dy() != 240 {
					t.Fatalf("%s/%s frame %d: decoded %v", f, codec, i, pic.Rect)
				}
				src := ref.Render(nil, out.stamps[i].Frame, out.stamps[i].Time)
				// JPEG decodes to full range; compare the stamp, and PSNR
				// only where ranges match.
				if codec == frame.CodecH264 {
					if db := psnr(pic.Y, pic.YStride, src, 320, 320, 240); db < 28 {
						t.Errorf("%s/%s frame %d: PSNR %.1f dB", f, codec, i, db)
					}
				}
				if st, err := testpattern.ReadLuma(pic.Y, pic.YStride, 320, 240); err != nil || st.Frame != uint64(i) {
					t.Errorf("%s/%s frame %d: stamp %+v %v", f, codec, i, st, err)
				}
			}
		}
	}
}

func TestEncodeJPEGQuality(t *testing.T) {
	t.Parallel()
	sizes := map[int]int{}
	for _, q := range []int{20, 95} {
		enc, out := encodePattern(t, Config{Codec: frame.CodecJPEG, Width: 320, Height: 240, JPEGQuality: q}, 3, nil)
		if enc.Backend() != "mjpeg" {
			t.Fatalf("backend %s", enc.Backend())
		}
		for _, p := range out.packets {
			if !p.Keyframe || len(p.Data) < 4 || p.Data[0] != 0xff || p.Data[1] != 0xd8 {
				t.Fatalf("not a JPEG keyframe: % x", p.Data[:min(4, len(p.Data))])
			}
		}
		sizes[q] = len(out.packets[2].Data)
		pics := decodeAll(t, frame.CodecJPEG, out.packets)
		if len(pics) != 3 {
			t.Fatalf("decoded %d", len(pics))
		}
	}
	if sizes[95] <= sizes[20] {
		t.Fatalf("JPEG at quality 95 is %d bytes, at 20 %d: quality has no effect", sizes[95], sizes[20])
	}
}

func TestEncodeRejectsBadInput(t *testing.T) {
	t.Parallel()
	enc, err := Open(Config{Width: 320, Height: 240, Backends: []string{"libx264"}})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	if _, err := enc.Encode(Picture{Format: frame.CodecI420, Width: 640, Height: 480, Stride: 640, Data: make([]byte, 640*480*3/2)}, false); !errors.Is(err, ErrPictureMismatch) {
		t.Errorf("other size: %v", err)
	}
	if _, err := enc.Encode(Picture{Format: frame.CodecI420, Width: 320, Height: 240, Stride: 320, Data: make([]byte, 1000)}, false); err == nil {
		t.Error("short picture: no error")
	}
	if _, err := enc.Encode(Picture{Format: frame.CodecI420, Width: 320, Height: 240, Stride: 100, Data: make([]byte, 320*240*2)}, false); err == nil {
		t.Error("stride below width: no error")
	}
	for _, cfg := range []Config{
		{Width: 0, Height: 240}, {Width: 321, Height: 240}, {Width: 320, Height: 240, Codec: 9},
		{Width: 320, Height: 240, Preset: "warp"}, {Width: 320, Height: 240, Backends: []string{"mjpeg"}},
		{Width: 320, Height: 240, Profile: "extended"}, {Width: 320, Height: 240, Input: frame.CodecH264},
	} {
		if e, err := Open(cfg); err == nil {
			e.Close()
			t.Errorf("Open(%+v): no error", cfg)
		}
	}
}

func TestEncodeHEVC(t *testing.T) {
	t.Parallel()
	enc, out := encodePattern(t, Config{Codec: frame.CodecHEVC, Width: 320, Height: 240, GOP: 5, Preset: "ultrafast"}, 10, map[int]bool{7: true})
	if enc.Backend() != "libx265" {
		t.Fatalf("backend %s", enc.Backend())
	}
	for i, p := range out.packets {
		want := i%5 == 0 || i == 7
		if p.Keyframe != want {
			t.Errorf("packet %d keyframe %v want %v", i, p.Keyframe, want)
		}
	}
	if pics := decodeAll(t, frame.CodecHEVC, out.packets); len(pics) != 10 {
		t.Fatalf("decoded %d", len(pics))
	}
}
