package caddymodule

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestROSAdapt runs the sdr_ros Caddyfile golden files: the Caddyfile, a
// ---------- line, then the JSON it adapts to, or a substring of the error
// it must fail with. SDR_ADAPT_UPDATE=1 rewrites the JSON expectations.
func TestROSAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_adapt/ros_*.caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no ros_* adapt files: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(string(raw), "\n----------\n")
			if !ok {
				t.Fatalf("%s: no ---------- separator", file)
			}
			input += "\n"
			expected = strings.TrimSpace(expected)
			if expected == "" || strings.HasPrefix(expected, "{") {
				if os.Getenv("SDR_ADAPT_UPDATE") == "1" {
					out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
					if err != nil {
						t.Fatalf("adapting: %v", err)
					}
					var pretty bytes.Buffer
					_ = json.Indent(&pretty, out, "", "\t")
					if err := os.WriteFile(file, []byte(input+"----------\n"+pretty.String()+"\n"), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				if !caddytest.CompareAdapt(t, file, input, "caddyfile", expected) {
					t.Fatalf("%s: adapted JSON differs", file)
				}
				return
			}
			_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
			if err == nil || !strings.Contains(err.Error(), expected) {
				t.Fatalf("%s: error %v, want one containing %q", file, err, expected)
			}
		})
	}
}
