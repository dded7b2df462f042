//go:build !cgo

package nvenc

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// TestNotCompiledIn: a build without cgo compiles, and says clearly that it
// cannot encode.
func TestNotCompiledIn(t *testing.T) {
	if _, err := Open(Config{Width: 320, Height: 240}); !errors.Is(err, ErrNotCompiled) || !strings.Contains(err.Error(), "not compiled in") {
		t.Fatalf("Open: %v", err)
	}
	if _, err := NewDecoder(1); !errors.Is(err, ErrNotCompiled) {
		t.Fatalf("NewDecoder: %v", err)
	}
	r := Probe(context.Background(), ProbeOptions{})
	if r.Compiled || !strings.Contains(r.Verdict, "not compiled in") {
		t.Fatalf("probe %+v", r)
	}
	s, err := NewSession(SessionConfig{Name: "x"}, PatternInput{Width: 320, Height: 240, FPS: 30})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		testwait.Until(testwait.Default, func() bool { return s.Stats().Errors != 0 })
		cancel()
	}()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); !strings.Contains(st.LastError, "not compiled in") || st.Frames != 0 {
		t.Fatalf("stats %+v", st)
	}
}
