package deploy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

type workflow struct {
	Jobs map[string]struct {
		Container any `yaml:"container"`
		Strategy  struct {
			Matrix struct {
				Include []map[string]string `yaml:"include"`
			} `yaml:"matrix"`
		} `yaml:"strategy"`
		Steps []struct {
			Uses string            `yaml:"uses"`
			Run  string            `yaml:"run"`
			With map[string]string `yaml:"with"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// TestWorkflowRunsMakeTestAndBuildsImages checks the GitHub Actions workflow:
// one job runs .ci/run (the README's `make test`), and every Dockerfile under
// containers/ is built, each named target existing in its Dockerfile.
func TestWorkflowRunsMakeTestAndBuildsImages(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	var wf workflow
	readYAML(t, filepath.Join(root, ".github/workflows/ci.yml"), &wf)

	ci, err := os.ReadFile(filepath.Join(root, ".ci/run"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "make test") {
		t.Fatalf(".ci/run does not run make test")
	}
	runsCI := false
	built := map[string]bool{}
	for name, job := range wf.Jobs {
		for _, st := range job.Steps {
			if strings.Contains(st.Run, ".ci/run") {
				runsCI = true
				if job.Container == nil || !strings.Contains(job.Container.(string), "bookworm") {
					t.Errorf("job %s runs .ci/run outside Debian 12 (FFmpeg 5.1 for go-astiav)", name)
				}
			}
			if !strings.HasPrefix(st.Uses, "docker/build-push-action@") {
				continue
			}
			for _, m := range job.Strategy.Matrix.Include {
				file, ctx, target := m["file"], m["context"], m["target"]
				if _, err := os.Stat(filepath.Join(root, ctx)); err != nil {
					t.Errorf("image %s: build context %s: %v", m["image"], ctx, err)
				}
				src, err := os.ReadFile(filepath.Join(root, file))
				if err != nil {
					t.Errorf("image %s: %v", m["image"], err)
					continue
				}
				df, err := parseDockerfile(src)
				if err != nil {
					t.Errorf("image %s: %v", m["image"], err)
					continue
				}
				if target != "" && df.stage(target) == nil {
					t.Errorf("image %s: target %s is not a stage of %s", m["image"], target, file)
				}
				built[file] = true
			}
		}
	}
	if !runsCI {
		t.Error("no workflow job runs .ci/run")
	}
	dockerfiles, err := filepath.Glob(filepath.Join(root, "containers", "*", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range dockerfiles {
		rel, _ := filepath.Rel(root, f)
		if !built[rel] {
			t.Errorf("%s is not built by the workflow", rel)
		}
	}
}

// TestWorkflowActionlint runs actionlint, the GitHub Actions linter (syntax,
// expressions, known inputs of common actions), on the workflows. It is
// fetched through the Go module proxy; without one the test is skipped.
func TestWorkflowActionlint(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	files, err := filepath.Glob(filepath.Join(root, ".github/workflows/*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no workflow: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{"run", "github.com/rhysd/actionlint/cmd/actionlint@v1.7.7", "-no-color"}, files...)...)
	cmd.Dir = root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err == nil {
		return
	}
	if len(out) == 0 && strings.Contains(stderr.String(), "go: ") {
		t.Skipf("cannot fetch actionlint: %s", stderr.String())
	}
	t.Errorf("actionlint: %v\n%s%s", err, out, stderr.String())
}
