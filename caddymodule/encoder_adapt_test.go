package caddymodule

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestEncoderCaddyfileAdapt runs the sdr_encoder golden files: a Caddyfile,
// a "----------" line, and the expected JSON, or an error substring when the
// expectation is not JSON. SDR_UPDATE_GOLDEN=1 rewrites the JSON ones.
func TestEncoderCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_adapt/encoder_*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.SplitN(string(data), "----------", 2)
			if len(parts) != 2 {
				t.Fatalf("%s: no ---------- line", file)
			}
			caddyfile, expected := strings.TrimSpace(parts[0])+"\n", strings.TrimSpace(parts[1])
			if strings.HasPrefix(expected, "{") {
				if os.Getenv("SDR_UPDATE_GOLDEN") == "1" {
					out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
					if err != nil {
						t.Fatal(err)
					}
					var buf bytes.Buffer
					if err := json.Indent(&buf, out, "", "\t"); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(file, []byte(strings.TrimSpace(parts[0])+"\n----------\n"+buf.String()+"\n"), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				if !caddytest.CompareAdapt(t, file, caddyfile, "caddyfile", expected) {
					t.Errorf("adapting %s differs", file)
				}
				return
			}
			_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
			if err == nil {
				t.Fatalf("adapting %s: no error, want one containing %q", file, expected)
			}
			if !strings.Contains(err.Error(), expected) {
				t.Fatalf("adapting %s: error %q does not contain %q", file, err, expected)
			}
		})
	}
}

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
