package deploy

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// notCommitted are the directories .gitignore keeps out of the repository.
var notCommitted = map[string]bool{
	".git": true, "bin": true, "tmp": true, ".tools": true, "node_modules": true, "artifacts": true,
}

// foreignReferences are what a file of the repository must never point at:
// the contracts are stated in docs/protocol.md, in the project's words, and
// nothing outside the checkout may be needed to read it. The strings are
// built so that this file does not name them itself.
var foreignReferences = []string{
	"PROTOCOL" + ".md",
	"../" + "shared",
	"/" + "work/",
}

// standAloneProblems returns "path: reference" for each file under root
// (binary files and ignored directories left out) that names one of refs.
func standAloneProblems(t *testing.T, root string, refs []string) []string {
	t.Helper()
	var probs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if notCommitted[d.Name()] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil // a worktree's .git file
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.IndexByte(b, 0) >= 0 {
			return nil // binary: test vectors, fixtures
		}
		rel, _ := filepath.Rel(root, p)
		for _, ref := range refs {
			if bytes.Contains(b, []byte(ref)) {
				probs = append(probs, rel+": "+ref)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return probs
}

// TestRepositoryStandsAlone: no file points at a document or directory
// outside the repository.
func TestRepositoryStandsAlone(t *testing.T) {
	t.Parallel()
	for _, p := range standAloneProblems(t, testenv.Root(), foreignReferences) {
		t.Errorf("%s is outside the repository: state the fact in docs/ instead", p)
	}
	// The check can fail.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x.go"), []byte("// see "+foreignReferences[0]+" section 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if probs := standAloneProblems(t, dir, foreignReferences); len(probs) != 1 || !strings.HasPrefix(probs[0], "x.go: ") {
		t.Errorf("a file naming %s was not found: %v", foreignReferences[0], probs)
	}
}
