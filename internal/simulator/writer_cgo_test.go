//go:build cgo

package simulator

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testpattern"
	"github.com/sdr-os/sdr-caddy/nvenc"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// committed is one frame as read back from the ring file right after its
// commit (OnFrame runs before the next frame is written).
type committed struct {
	seq     uint64
	header  shmring.Header
	payload []byte
}

func readCommitted(t *testing.T, path string) committed {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := shmring.ParseHeader(b[shmring.OffSlot:])
	if err != nil {
		t.Fatal(err)
	}
	wl := binary.LittleEndian.Uint64(b[shmring.OffWriteLen:])
	if wl != uint64(shmring.HeaderSize)+uint64(h.Size) {
		t.Fatalf("write_len %d for a payload of %d bytes", wl, h.Size)
	}
	p := b[shmring.OffPayload : shmring.OffPayload+int(h.Size)]
	if got := shmring.Checksum(p); got != h.CRC32 {
		t.Fatalf("frame %d: crc32 %08x, header says %08x", h.FrameSeq, got, h.CRC32)
	}
	return committed{seq: binary.LittleEndian.Uint64(b[shmring.OffSequence:]), header: h, payload: append([]byte(nil), p...)}
}

func TestWriterWritesRings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		codec shmring.Codec
		gop   int
	}{
		{shmring.CodecH264, 5},
		{shmring.CodecJPEG, 0},
		{shmring.CodecI420, 0},
		{shmring.CodecRGBA, 0},
	} {
		t.Run(tc.codec.String(), func(t *testing.T) {
			t.Parallel()
			const frames, fps = 12, 60
			path := filepath.Join(t.TempDir(), "ring")
			var got []committed
			src := &Writer{
				Path: path, Size: 8 << 20, Codec: tc.codec, Width: 320, Height: 180, FPS: fps, GOP: tc.gop,
				Backends: nvencSoftware(tc.codec), Frames: frames, StatusEvery: -1,
			}
			src.OnFrame = func(h shmring.Header, _ time.Duration) {
				c := readCommitted(t, path)
				if c.header != h {
					t.Errorf("frame %d: ring holds header %+v, OnFrame got %+v", h.FrameSeq, c.header, h)
				}
				if c.header.FrameSeq == 7 {
					src.RequestKeyframe() // frame 8 becomes an IDR
				}
				got = append(got, c)
			}
			began := time.Now()
			if err := src.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if took, least := time.Since(began), time.Duration(frames-1)*time.Second/fps; took < least*9/10 {
				t.Errorf("%d frames at %d fps took %v, want at least %v", frames, fps, took, least)
			}
			if len(got) != frames {
				t.Fatalf("%d frames committed, want %d", len(got), frames)
			}
			var dec *nvenc.Decoder
			if tc.codec == shmring.CodecH264 {
				var err error
				if dec, err = nvenc.NewDecoder(shmring.CodecH264); err != nil {
					t.Fatal(err)
				}
				defer dec.Close()
			}
			for i, c := range got {
				n := uint64(i + 1)
				h := c.header
				if c.seq != n || h.FrameSeq != n || h.Codec != tc.codec {
					t.Errorf("frame %d: sequence %d, frame_seq %d, codec %s", n, c.seq, h.FrameSeq, h.Codec)
				}
				if age := time.Since(time.Unix(0, int64(h.FrameID))); age < 0 || age > time.Minute {
					t.Errorf("frame %d: frame_id %d is not a recent commit time (age %v)", n, h.FrameID, age)
				}
				var stamp testpattern.Stamp
				var err error
				switch tc.codec {
				case shmring.CodecH264:
					// GOP 5; the IDR forced at frame 8 starts a new GOP.
					if wantKey := n == 1 || n == 6 || n == 8; h.Keyframe() != wantKey {
						t.Errorf("frame %d: keyframe %v, want %v", n, h.Keyframe(), wantKey)
					}
					pics, derr := dec.Decode(c.payload)
					if derr != nil || len(pics) != 1 {
						t.Fatalf("frame %d: decoded %d pictures: %v", n, len(pics), derr)
					}
					p := pics[0]
					stamp, err = testpattern.ReadLuma(p.Y, p.YStride, p.Rect.Dx(), p.Rect.Dy())
				case shmring.CodecJPEG:
					if !h.Keyframe() || !strings.HasPrefix(string(c.payload), "\xff\xd8") {
						t.Errorf("frame %d: keyframe %v, payload starts %x", n, h.Keyframe(), c.payload[:2])
					}
					continue
				default:
					l, perr := shmring.ParseRaw(h, c.payload)
					if perr != nil {
						t.Fatal(perr)
					}
					if l.Descriptor.Width != 320 || l.Descriptor.Height != 180 {
						t.Errorf("raw descriptor %+v", l.Descriptor)
					}
					stamp, err = testpattern.Read(testpattern.Format(tc.codec), c.payload[shmring.RawDescriptorSize:], 320, 180, int(l.Descriptor.Stride))
				}
				if err != nil {
					t.Fatalf("frame %d: reading the stamp: %v", n, err)
				}
				if stamp.Frame != n {
					t.Errorf("frame %d carries stamp %d", n, stamp.Frame)
				}
			}
		})
	}
}

// nvencSoftware picks the software encoder: these tests run without a GPU.
func nvencSoftware(c shmring.Codec) []string {
	switch c {
	case shmring.CodecH264:
		return []string{"libx264"}
	case shmring.CodecJPEG:
		return []string{"mjpeg"}
	}
	return nil
}

// TestWriterApply switches codec and size mid-run, as command.genesis.settings does.
func TestWriterApply(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ring")
	var got []committed
	src := &Writer{Path: path, Size: 8 << 20, Codec: shmring.CodecH264, Width: 320, Height: 180, FPS: 120, GOP: 100,
		Backends: []string{"libx264"}, Frames: 12, StatusEvery: -1}
	src.OnFrame = func(h shmring.Header, _ time.Duration) {
		got = append(got, readCommitted(t, path))
		switch h.FrameSeq {
		case 4:
			src.Apply(Settings{Codec: shmring.CodecJPEG, Width: 256, Height: 144})
		case 8:
			src.Apply(Settings{Codec: shmring.CodecH264})
		case 10:
			src.Apply(Settings{Width: 100, Height: 10}) // refused, logged
		}
	}
	if err := src.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(got) != 12 {
		t.Fatalf("%d frames, want 12", len(got))
	}
	for i, c := range got {
		n := i + 1
		want := shmring.CodecH264
		if n >= 5 && n <= 8 {
			want = shmring.CodecJPEG
		}
		if c.header.Codec != want {
			t.Errorf("frame %d: codec %s, want %s", n, c.header.Codec, want)
		}
		if (n == 1 || n == 5 || n == 9) && !c.header.Keyframe() {
			t.Errorf("frame %d: not a keyframe after (re)opening the encoder", n)
		}
		if n == 6 {
			// JPEG SOF0 height/width of the new size.
			if i := strings.Index(string(c.payload), "\xff\xc0"); i < 0 || c.payload[i+5] != 0 || c.payload[i+6] != 144 || c.payload[i+7] != 1 || c.payload[i+8] != 0 {
				t.Errorf("frame 6: JPEG is not 256x144")
			}
		}
	}
}
