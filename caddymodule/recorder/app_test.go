package recorder

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/sdr-os/sdr-caddy/internal/recording"
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
		{"batch off", &App{Batch: -1}, ""},
		{"batch negative", &App{Batch: caddy.Duration(-time.Second)}, "batch -1s"},
		{"batch too long", &App{Batch: caddy.Duration(recording.MaxStoreDelay)}, "below 5s"},
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

// TestCaddyfileBatch reads batch (and idr_interval) as a duration or off,
// and refuses what is neither.
func TestCaddyfileBatch(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]caddy.Duration{
		"batch 250ms": caddy.Duration(250 * time.Millisecond),
		"batch off":   -1,
		"queue 64":    0, // the default
	} {
		var a App
		if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("sdr_recorder {\n " + in + "\n}")); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if a.Batch != want {
			t.Errorf("%q: batch %v, want %v", in, time.Duration(a.Batch), time.Duration(want))
		}
		if got := a.config(caddy.Context{}).Batch; got != time.Duration(want) {
			t.Errorf("%q: the recorder's batch %v, want %v", in, got, time.Duration(want))
		}
	}
	for in, want := range map[string]caddy.Duration{"idr_interval 3s": caddy.Duration(3 * time.Second), "idr_interval off": -1} {
		var a App
		if err := a.UnmarshalCaddyfile(caddyfile.NewTestDispenser("sdr_recorder {\n " + in + "\n}")); err != nil || a.IDRInterval != want {
			t.Errorf("%q: idr_interval %v (%v), want %v", in, time.Duration(a.IDRInterval), err, time.Duration(want))
		}
	}
	for _, bad := range []string{"batch 0s", "batch soon", "batch", "batch 1s 2s", "idr_interval never"} {
		var b App
		if err := b.UnmarshalCaddyfile(caddyfile.NewTestDispenser("sdr_recorder {\n " + bad + "\n}")); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
