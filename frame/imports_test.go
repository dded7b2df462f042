package frame

import (
	"go/build"
	"strings"
	"testing"
)

// The package is what the ring, the wire codec, the gate, WebRTC and the
// encoder share: it must import only the standard library, so that none of
// them pulls in another (or Caddy) through it.
func TestImportsOnlyTheStandardLibrary(t *testing.T) {
	t.Parallel()
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
			t.Errorf("package frame imports %s", imp)
		}
	}
}
