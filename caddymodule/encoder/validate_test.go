package encoder

import (
	"strings"
	"testing"
)

// TestEncoderValidate checks the JSON configuration errors that the
// Caddyfile cannot catch.
func TestEncoderValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		ec   EncoderConfig
		want string
	}{
		{EncoderConfig{Input: "camera"}, "input \"camera\""},
		{EncoderConfig{Codec: "vp9"}, "codec \"vp9\""},
		{EncoderConfig{Width: 640, Height: 480}, "apply to the pattern input"},
		{EncoderConfig{Input: "pattern", Path: "/x"}, "apply to the shm input"},
		{EncoderConfig{Input: "pattern", MaxFrameSize: 1 << 20}, "max_frame_size apply to the shm input"},
		{EncoderConfig{MaxFrameSize: -1}, "max_frame_size -1 is negative"},
		{EncoderConfig{Input: "pattern", Width: 100, Height: 100}, "pattern size 100x100"},
		{EncoderConfig{Input: "pattern", PixelFormat: "yuv444"}, "pixel format \"yuv444\""},
		{EncoderConfig{BitrateKbps: 1}, "bitrate 1 kbit/s"},
		{EncoderConfig{Preset: "warp"}, "preset \"warp\""},
		{EncoderConfig{Codec: "jpeg", Backends: []string{"libx264"}}, "backend \"libx264\" cannot encode jpeg"},
		{EncoderConfig{MaxFPS: 1000}, "max_fps 1000"},
		{EncoderConfig{Output: &EncoderOutput{Size: 100}}, "output ring size 100"},
	} {
		a := &EncoderApp{Encoders: map[string]*EncoderConfig{"cam": &c.ec}}
		err := a.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one containing %q", c.ec, err, c.want)
		}
	}
	ok := &EncoderApp{Encoders: map[string]*EncoderConfig{"cam": {Input: "pattern", Width: 640, Height: 360, Codec: "jpeg"}}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}
