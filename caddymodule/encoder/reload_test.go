package encoder

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/nvenc"
)

// TestEncoderReloadKeepsSession: a reload with an unchanged encoder keeps
// its running session (no second encoder, no break for viewers); a changed
// one gets a new session and the old one stops. The configs have no admin
// listener: the caddytest-based tests of package caddymodule own the
// fixed admin port, and this package's tests may run beside them.
func TestEncoderReloadKeepsSession(t *testing.T) {
	if !nvenc.Compiled {
		t.Skip("encoding is not compiled in")
	}
	cfg := func(kbps int) []byte {
		return []byte(fmt.Sprintf(`{"admin":{"disabled":true},"apps":{"sdr_encoder":{"encoders":{"r":{"input":"pattern","width":256,"height":192,"fps":30,"bitrate_kbps":%d,"backends":["libx264"]}}}}}`, kbps))
	}
	t.Cleanup(func() {
		// Stop the app: the last session ends.
		if err := caddy.Load([]byte(`{"admin":{"disabled":true}}`), true); err != nil {
			t.Logf("unloading: %v", err)
		}
	})
	current := func() *encoderShare {
		t.Helper()
		l := listEncoders()
		if len(l) != 1 || l[0].name != "r" {
			t.Fatalf("running encoders %v", l)
		}
		return l[0]
	}
	waitFrames := func(s *encoderShare, n uint64) {
		t.Helper()
		if !testwait.Until(testwait.Default, func() bool { return s.session.Stats().Frames >= n }) {
			t.Fatalf("encoder made %d frames, want %d", s.session.Stats().Frames, n)
		}
	}
	if err := caddy.Load(cfg(1000), true); err != nil {
		t.Fatal(err)
	}
	first := current()
	waitFrames(first, 5)
	if err := caddy.Load(cfg(1000), true); err != nil {
		t.Fatal(err)
	}
	if current() != first {
		t.Fatal("an unchanged encoder got a new session on reload")
	}
	waitFrames(first, first.session.Stats().Frames+5)
	if err := caddy.Load(cfg(2000), true); err != nil {
		t.Fatal(err)
	}
	second := current()
	if second == first {
		t.Fatal("a changed encoder kept its old session")
	}
	select {
	case <-first.done:
	case <-testwait.After(10 * time.Second):
		t.Fatal("the old session did not stop")
	}
	waitFrames(second, 5)
	if second.session.Stats().Config.BitrateKbps != 2000 {
		t.Fatalf("new session config %+v", second.session.Stats().Config)
	}
}

// TestEncoderValidateOpensNothing: caddy validate provisions the app but
// starts nothing: no session runs and the output ring is not created; the
// same config loaded creates it.
func TestEncoderValidateOpensNothing(t *testing.T) {
	out := filepath.Join(t.TempDir(), "frames")
	raw := []byte(fmt.Sprintf(`{"admin":{"disabled":true},"apps":{"sdr_encoder":{"encoders":{"v":{"input":"pattern","width":256,"height":192,"fps":30,"codec":"jpeg","output":{"path":%q}}}}}}`, out))
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("validate created the output ring: %v", err)
	}
	if l := listEncoders(); len(l) != 0 {
		t.Fatalf("validate left encoders running: %v", l)
	}
	if !nvenc.Compiled {
		return // the encoder cannot run: validate is what this build checks
	}
	t.Cleanup(func() {
		if err := caddy.Load([]byte(`{"admin":{"disabled":true}}`), true); err != nil {
			t.Logf("unloading: %v", err)
		}
	})
	if err := caddy.Load(raw, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatalf("the loaded config has no output ring: %v", err)
	}
}
