package simulator

import (
	"strings"
	"testing"

	"github.com/sdr-os/sdr-caddy/shmring"
)

func TestWriterValidate(t *testing.T) {
	t.Parallel()
	ok := func() *Writer {
		return &Writer{Path: "/x", Codec: shmring.CodecH264, Width: 320, Height: 180, FPS: 30}
	}
	for _, tc := range []struct {
		mod  func(*Writer)
		want string
	}{
		{func(s *Writer) { s.Path = "" }, "ring path is empty"},
		{func(s *Writer) { s.FPS = 0 }, "fps 0: want 1..240"},
		{func(s *Writer) { s.Codec = 99 }, "want h264, hevc, jpeg, i420"},
		{func(s *Writer) { s.Width = 100 }, "size 100x180"},
		{func(s *Writer) { s.GOP = -1 }, "gop -1 is negative"},
	} {
		s := ok()
		tc.mod(s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
		}
	}
	if err := ok().Validate(); err != nil {
		t.Errorf("Validate() of a good config: %v", err)
	}
}

func TestParseCodecAndResolution(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		w, h int
		err  bool
	}{
		{"1280x720", 1280, 720, false}, {"640X360", 640, 360, false},
		{"1280", 0, 0, true}, {"x720", 0, 0, true}, {"-2x4", 0, 0, true}, {"axb", 0, 0, true},
	} {
		w, h, err := ParseResolution(tc.in)
		if (err != nil) != tc.err || w != tc.w || h != tc.h {
			t.Errorf("ParseResolution(%q) = %d, %d, %v", tc.in, w, h, err)
		}
	}
	for in, want := range map[string]shmring.Codec{"h264": shmring.CodecH264, "JPEG": shmring.CodecJPEG, "i420": shmring.CodecI420, "rgb24": shmring.CodecRGB24} {
		if c, err := ParseCodec(in); err != nil || c != want {
			t.Errorf("ParseCodec(%q) = %v, %v", in, c, err)
		}
	}
	if _, err := ParseCodec("vp9"); err == nil {
		t.Errorf("ParseCodec(vp9) = nil error")
	}
}

func TestParseSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Settings
		err  string
	}{
		{in: `{"action":"settings","data":{"codec":"jpeg"}}`, want: Settings{Codec: shmring.CodecJPEG}},
		{in: `{"codec":"h264","stream_fps":30,"camera_res":"640x360","jpeg_quality":70,"h264_bitrate":2000}`,
			want: Settings{Codec: shmring.CodecH264, FPS: 30, Width: 640, Height: 360, JPEGQuality: 70, BitrateKbps: 2000}},
		{in: `{"codec":"h264","data":{"codec":"jpeg","camera_res":[320,180]}}`, want: Settings{Codec: shmring.CodecJPEG, Width: 320, Height: 180}},
		{in: `{"data":{"h264_preset":"p4"}}`, want: Settings{}},
		{in: `{"codec":"i420"}`, err: `codec "i420": want h264, hevc or jpeg`},
		{in: `{"codec":"vp8"}`, err: `codec "vp8"`},
		{in: `{"stream_fps":0}`, err: "stream_fps 0: want 1..240"},
		{in: `{"camera_res":"big"}`, err: "camera_res"},
		{in: `{"camera_res":[1]}`, err: "camera_res [1]"},
		{in: `{"jpeg_quality":101}`, err: "jpeg_quality 101"},
		{in: `{"h264_bitrate":1}`, err: "h264_bitrate 1"},
		{in: `[1]`, err: "settings:"},
	} {
		got, err := ParseSettings([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}
