package nvenc

import (
	"testing"

	"github.com/sdr-os/sdr-caddy/frame"
)

func TestParseSettings(t *testing.T) {
	t.Parallel()
	st, err := ParseSettings([]byte(`{"codec":"jpeg","jpeg_quality":70,"stream_fps":"25","camera_res":[1280,720],"h264_bitrate":4000000,"h264_preset":"ultrafast","other":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if *st.Codec != frame.CodecJPEG || *st.JPEGQuality != 70 || *st.FPS != 25 || *st.BitrateKbps != 4000 || *st.Preset != "ultrafast" || st.GOP != nil {
		t.Fatalf("%+v", st)
	}
	for body, kbps := range map[string]int{`{"h264_bitrate":2500}`: 2500, `{"h264_bitrate":"4M"}`: 4000, `{"h264_bitrate":"2500k"}`: 2500, `{"data":{"h264_bitrate":6000000}}`: 6000} {
		st, err := ParseSettings([]byte(body))
		if err != nil || st.BitrateKbps == nil || *st.BitrateKbps != kbps {
			t.Errorf("%s: %v %v", body, st.BitrateKbps, err)
		}
	}
	if st, err := ParseSettings([]byte(`{"codec":1}`)); err != nil || *st.Codec != frame.CodecH264 {
		t.Errorf("codec 1: %v", err)
	}
	for _, bad := range []string{`nope`, `{"codec":"vp9"}`, `{"codec":7}`, `{"jpeg_quality":"high"}`, `{"h264_bitrate":"fast"}`, `{"h264_preset":5}`, `{"codec":{}}`} {
		if _, err := ParseSettings([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestPresetMapping(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"p1": "p1", "P7": "p7", "ultrafast": "p1", "fast": "p5", "veryslow": "p7"} {
		if got, err := nvencPreset(in); err != nil || got != want {
			t.Errorf("nvencPreset(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if x264Preset("p1") != "ultrafast" || x264Preset("p3") != "veryfast" || x264Preset("medium") != "medium" {
		t.Error("x264Preset mapping")
	}
	if jpegQScale(100) != 2 || jpegQScale(1) != 31 {
		t.Errorf("jpegQScale: %d %d", jpegQScale(100), jpegQScale(1))
	}
}

func TestAttemptReason(t *testing.T) {
	t.Parallel()
	for log, want := range map[string]string{
		"[h264_nvenc] Cannot load libnvidia-encode.so.1":                                "library missing: container lacks the `video` driver capability",
		"[h264_nvenc] OpenEncodeSessionEx failed: unsupported device (2): (no details)": "GPU without NVENC",
		"[h264_nvenc] Cannot load libcuda.so.1":                                         "no usable CUDA device",
		"[h264_nvenc] Driver does not support the required nvenc API version. Required: 12.0 Found: 11.1\n[h264_nvenc] The minimum required Nvidia driver for nvenc is 520.56.06 or newer": "NVIDIA driver too old",
	} {
		a := Attempt{Backend: "h264_nvenc", Error: "opening failed", Log: splitLines(log)}
		if r := a.Reason(); len(r) < len(want) || r[:len(want)] != want {
			t.Errorf("log %q: reason %q, want prefix %q", log, r, want)
		}
	}
	if r := (Attempt{Backend: "x", Error: "boom"}).Reason(); r != "boom" {
		t.Errorf("reason without log %q", r)
	}
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
