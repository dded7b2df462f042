//go:build !cgo

package mp4

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNotCompiledIn: a build without cgo compiles, says clearly that it
// cannot export, and creates nothing.
func TestNotCompiledIn(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(filepath.Join(dir, "out.mp4"), 320, 240)
	if w != nil || !errors.Is(err, ErrNotCompiled) || !strings.Contains(err.Error(), "not compiled in") {
		t.Fatalf("NewWriter: %v, %v", w, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("directory holds %v", ents)
	}
}
