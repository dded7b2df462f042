package recorder

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		app  *App
		err  string
	}{
		{"defaults", &App{}, ""},
		{"all set", &App{Stream: "DASHCAM", Prefix: "dashcam.", Replicas: 3, Storage: "memory", Subjects: []string{"telemetry.odom"}}, ""},
		{"stream with a dot", &App{Stream: "a.b"}, "a JetStream stream name"},
		{"prefix with a wildcard", &App{Prefix: "rec.*."}, "prefix"},
		{"records itself", &App{Subjects: []string{">"}}, "would record itself"},
		{"records itself under telemetry", &App{Prefix: "telemetry.rec.", Subjects: []string{"telemetry.>"}}, "would record itself"},
		{"storage", &App{Storage: "disk"}, "want file or memory"},
		{"replicas", &App{Replicas: 7}, "at most 5"},
		{"negative", &App{MaxBytes: -1}, "must not be negative"},
		{"subject with a space", &App{Subjects: []string{"a b"}}, "whitespace"},
		{"negative keep_max_bytes", &App{KeepMaxBytes: -1}, "keep_max_bytes must not be negative"},
	} {
		err := c.app.Validate()
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: Validate() = %v, want %q", c.name, err, c.err)
		}
	}
}

// TestCaddyfileKeepBounds reads keep_max and keep_max_bytes, and refuses
// values that are not a positive count or a size.
func TestCaddyfileKeepBounds(t *testing.T) {
	t.Parallel()
	var a App
	d := caddyfile.NewTestDispenser("sdr_recorder {\n keep_max 3\n keep_max_bytes 1GiB\n}")
	if err := a.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if a.KeepMax != 3 || a.KeepMaxBytes != 1<<30 {
		t.Errorf("keep_max %d, keep_max_bytes %d", a.KeepMax, a.KeepMaxBytes)
	}
	for _, bad := range []string{"keep_max 0", "keep_max many", "keep_max_bytes lots"} {
		var b App
		if err := b.UnmarshalCaddyfile(caddyfile.NewTestDispenser("sdr_recorder {\n " + bad + "\n}")); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
