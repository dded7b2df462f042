package testpattern

import (
	"bytes"
	"errors"
	"image"
	"image/jpeg"
	"math/rand/v2"
	"testing"
	"time"
)

func TestRenderReadRoundTrip(t *testing.T) {
	t.Parallel()
	commit := time.Date(2026, 11, 27, 10, 11, 12, 345678901, time.UTC)
	for _, f := range []Format{RGBA, BGRA, NV12, I420, RGB24} {
		for _, size := range [][2]int{{MinWidth, MinHeight}, {320, 240}, {1280, 720}, {1920, 1080}} {
			p, err := New(size[0], size[1], f)
			if err != nil {
				t.Fatalf("%s %v: %v", f, size, err)
			}
			for _, n := range []uint64{0, 1, 12345, 1<<63 + 7} {
				pix := p.Render(nil, n, commit.Add(time.Duration(n)))
				if len(pix) != p.Size() {
					t.Fatalf("%s %v: %d bytes, want %d", f, size, len(pix), p.Size())
				}
				st, err := Read(f, pix, size[0], size[1], 0)
				if err != nil {
					t.Fatalf("%s %v frame %d: %v", f, size, n, err)
				}
				if st.Frame != n || !st.Time.Equal(commit.Add(time.Duration(n))) {
					t.Fatalf("%s %v: read %d %v, want %d %v", f, size, st.Frame, st.Time, n, commit.Add(time.Duration(n)))
				}
			}
		}
	}
}

func TestRenderMoves(t *testing.T) {
	t.Parallel()
	p, err := New(640, 360, I420)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a := p.Render(nil, 10, now)
	b := p.Render(nil, 11, now)
	// Outside the stamp area (the lower half) the pictures differ: bars
	// scroll and the box moves.
	lower := 640 * 180
	if bytes.Equal(a[lower:640*360], b[lower:640*360]) {
		t.Fatal("frames 10 and 11 have the same lower half: the pattern does not move")
	}
	// Rendering is deterministic.
	if c := p.Render(nil, 10, now); !bytes.Equal(a, c) {
		t.Fatal("rendering frame 10 twice gave different pictures")
	}
}

func TestReadSurvivesNoiseAndJPEG(t *testing.T) {
	t.Parallel()
	p, err := New(640, 360, I420)
	if err != nil {
		t.Fatal(err)
	}
	commit := time.Unix(1764238272, 123456789)
	pix := p.Render(nil, 4242, commit)
	// Noise of +-40 on every luma sample.
	rng := rand.New(rand.NewPCG(1, 2))
	noisy := append([]byte(nil), pix...)
	for i := 0; i < 640*360; i++ {
		v := int(noisy[i]) + rng.IntN(81) - 40
		noisy[i] = byte(min(max(v, 0), 255))
	}
	if st, err := ReadLuma(noisy, 640, 640, 360); err != nil || st.Frame != 4242 || !st.Time.Equal(commit) {
		t.Fatalf("noisy picture: %+v, %v", st, err)
	}
	// A real lossy codec: Go's JPEG encoder at quality 30.
	img := &image.YCbCr{
		Y: pix[:640*360], Cb: pix[640*360 : 640*360+320*180], Cr: pix[640*360+320*180:],
		YStride: 640, CStride: 320, SubsampleRatio: image.YCbCrSubsampleRatio420,
		Rect: image.Rect(0, 0, 640, 360),
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 30}); err != nil {
		t.Fatal(err)
	}
	dec, err := jpeg.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	y := dec.(*image.YCbCr)
	if st, err := ReadLuma(y.Y, y.YStride, 640, 360); err != nil || st.Frame != 4242 || !st.Time.Equal(commit) {
		t.Fatalf("JPEG q30 picture: %+v, %v", st, err)
	}
}

func TestReadRejects(t *testing.T) {
	t.Parallel()
	p, err := New(320, 240, I420)
	if err != nil {
		t.Fatal(err)
	}
	pix := p.Render(nil, 7, time.Now())
	// A flipped bit in the frame number: the CRC catches it.
	cell := p.cell
	for y := cell; y < 2*cell; y++ {
		for x := 0; x < cell; x++ {
			pix[y*320+x] = 255 - pix[y*320+x]
		}
	}
	if _, err := ReadLuma(pix, 320, 320, 240); !errors.Is(err, ErrNoStamp) {
		t.Fatalf("flipped bit: err = %v, want ErrNoStamp", err)
	}
	// A flat grey picture has no stamp.
	flat := bytes.Repeat([]byte{128}, 320*240)
	if _, err := ReadLuma(flat, 320, 320, 240); !errors.Is(err, ErrNoStamp) {
		t.Fatalf("flat picture: err = %v, want ErrNoStamp", err)
	}
	// Too small or too short input is an error, not a panic.
	if _, err := ReadLuma(flat[:100], 320, 320, 240); !errors.Is(err, ErrNoStamp) {
		t.Fatalf("short buffer: err = %v", err)
	}
	if _, err := Read(Format(99), flat, 320, 240, 0); err == nil {
		t.Fatal("unknown format: no error")
	}
}

func TestNewRejectsBadSizes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		w, h int
		f    Format
	}{{100, 100, I420}, {321, 240, I420}, {320, 241, I420}, {320, 240, Format(3)}, {10000, 240, RGBA}} {
		if _, err := New(c.w, c.h, c.f); err == nil {
			t.Errorf("New(%d, %d, %s): no error", c.w, c.h, c.f)
		}
	}
}

func BenchmarkRender1080pI420(b *testing.B) {
	p, _ := New(1920, 1080, I420)
	buf := make([]byte, p.Size())
	now := time.Now()
	for i := 0; b.Loop(); i++ {
		buf = p.Render(buf, uint64(i), now)
	}
}
