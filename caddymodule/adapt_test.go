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

// TestCaddyfileAdapt runs every golden file of every module under
// testdata/caddyfile_adapt (named <module>_<case>.caddyfile): a Caddyfile, a
// "----------" line, then the JSON it must adapt to, or, when the
// expectation is not JSON, a substring of the error it must fail with.
// SDR_UPDATE_GOLDEN=1 rewrites the JSON expectations from the adapter's
// output.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_adapt/*.caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddyfile"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			caddyfile, expected, ok := strings.Cut(string(data), "----------")
			if !ok {
				t.Fatalf("%s: no ---------- line", file)
			}
			caddyfile, expected = strings.TrimSpace(caddyfile)+"\n", strings.TrimSpace(expected)
			if expected == "" {
				t.Fatalf("%s: empty expectation (an error substring of \"\" would match any error)", file)
			}
			adapter := caddyconfig.GetAdapter("caddyfile")
			if !strings.HasPrefix(expected, "{") {
				_, _, err := adapter.Adapt([]byte(caddyfile), nil)
				if err == nil || !strings.Contains(err.Error(), expected) {
					t.Fatalf("%s: error %v, want one containing %q", file, err, expected)
				}
				return
			}
			if os.Getenv("SDR_UPDATE_GOLDEN") == "1" {
				out, _, err := adapter.Adapt([]byte(caddyfile), nil)
				if err != nil {
					t.Fatalf("adapting %s: %v", file, err)
				}
				var buf bytes.Buffer
				if err := json.Indent(&buf, out, "", "\t"); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, []byte(caddyfile+"----------\n"+buf.String()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !caddytest.CompareAdapt(t, file, caddyfile, "caddyfile", expected) {
				t.Errorf("%s: adapted JSON differs", file)
			}
		})
	}
}
