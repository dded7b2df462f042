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

// TestRTCCaddyfileAdapt runs the sdr_whep and webrtc golden files: a
// Caddyfile, a "----------" line, and the expected JSON, or an error
// substring when the expectation is not JSON. SDR_UPDATE_GOLDEN=1 rewrites
// the JSON ones.
func TestRTCCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_adapt/rtc_*")
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
