package caddymodule

import (
	"strings"
	"testing"

	"github.com/sdr-os/sdr-caddy/shmring"
)

func TestTestSourceValidate(t *testing.T) {
	t.Parallel()
	ok := func() *TestSource {
		return &TestSource{Path: "/x", Codec: shmring.CodecH264, Width: 320, Height: 180, FPS: 30}
	}
	for _, tc := range []struct {
		mod  func(*TestSource)
		want string
	}{
		{func(s *TestSource) { s.Path = "" }, "ring path is empty"},
		{func(s *TestSource) { s.FPS = 0 }, "fps 0: want 1..240"},
		{func(s *TestSource) { s.Codec = 99 }, "want h264, hevc, jpeg, i420"},
		{func(s *TestSource) { s.Width = 100 }, "size 100x180"},
		{func(s *TestSource) { s.GOP = -1 }, "gop -1 is negative"},
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

func TestTestSourceFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		w, h int
		err  bool
	}{
		{"1280x720", 1280, 720, false}, {"640X360", 640, 360, false},
		{"1280", 0, 0, true}, {"x720", 0, 0, true}, {"-2x4", 0, 0, true}, {"axb", 0, 0, true},
	} {
		w, h, err := parseResolution(tc.in)
		if (err != nil) != tc.err || w != tc.w || h != tc.h {
			t.Errorf("parseResolution(%q) = %d, %d, %v", tc.in, w, h, err)
		}
	}
	for in, want := range map[string]shmring.Codec{"h264": shmring.CodecH264, "JPEG": shmring.CodecJPEG, "i420": shmring.CodecI420, "rgb24": shmring.CodecRGB24} {
		if c, err := parseCodec(in); err != nil || c != want {
			t.Errorf("parseCodec(%q) = %v, %v", in, c, err)
		}
	}
	if _, err := parseCodec("vp9"); err == nil {
		t.Errorf("parseCodec(vp9) = nil error")
	}
}
