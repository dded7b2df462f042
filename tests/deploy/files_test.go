package deploy

import (
	"os"
	"regexp"
	"testing"

	"go.yaml.in/yaml/v4"

	"github.com/sdr-os/sdr-caddy/internal/sdrenv"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// readYAML decodes a YAML file into v, failing the test on any error.
func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
}

var envPlaceholder = regexp.MustCompile(`\{\$(SDR_[A-Z0-9_]+)(:[^}]*)?\}`)

// caddyfileVars returns the SDR_* environment variables Caddyfile.example
// reads through {$VAR} or {$VAR:default} placeholders, and those that
// sdr-caddy derives such a placeholder from (SDR_HTTP_ADDR for
// SDR_HTTP_SITE).
func caddyfileVars(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(testenv.Root() + "/Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]bool{}
	for _, m := range envPlaceholder.FindAllStringSubmatch(string(b), -1) {
		vars[m[1]] = true
		for _, in := range sdrenv.Derived[m[1]] {
			vars[in] = true
		}
	}
	return vars
}
