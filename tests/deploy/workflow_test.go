package deploy

import (
	"bufio"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
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

// shellcheckVersion is the ShellCheck that the tests run (Debian 12's, as in
// CI's golang:bookworm container); scripts/deps.sh installs it.
const shellcheckVersion = "0.9.0"

// shellcheck returns .tools/bin/shellcheck, which scripts/deps.sh links only
// when its version is shellcheckVersion, failing the test when it is another
// version. Whatever else is on PATH is never used: another version reports
// other things.
func shellcheck(t *testing.T) string {
	t.Helper()
	p := testenv.Tool(t, "shellcheck")
	out, err := exec.Command(p, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", p, err)
	}
	if !strings.Contains(string(out), "\nversion: "+shellcheckVersion+"\n") {
		t.Fatalf("%s is not ShellCheck %s; scripts/deps.sh installs that one:\n%s", p, shellcheckVersion, out)
	}
	return p
}

// lintEnv is the environment for the linters: the test's, without
// SHELLCHECK_OPTS, which would change what shellcheck reports.
func lintEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SHELLCHECK_OPTS=") {
			env = append(env, kv)
		}
	}
	return env
}

// actionlintVersion is the actionlint that scripts/deps.sh installs.
const actionlintVersion = "v1.7.7"

// TestWorkflowActionlint runs actionlint, the GitHub Actions linter (syntax,
// expressions, known inputs of common actions, and the run: scripts through
// shellcheck), on the workflows. Both are the pinned ones of .tools/bin, and
// actionlint is told exactly which external linters to run (that shellcheck,
// no pyflakes: the workflows have no Python steps), so that what else is
// installed changes nothing.
func TestWorkflowActionlint(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	files, err := filepath.Glob(filepath.Join(root, ".github/workflows/*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no workflow: %v", err)
	}
	actionlint := testenv.Tool(t, "actionlint")
	if out, err := exec.Command(actionlint, "-version").Output(); err != nil || !strings.HasPrefix(string(out), actionlintVersion+"\n") {
		t.Fatalf("%s is not actionlint %s (%v); scripts/deps.sh installs that one:\n%s", actionlint, actionlintVersion, err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(2*time.Minute))
	defer cancel()
	args := append([]string{"-no-color", "-shellcheck=" + shellcheck(t), "-pyflakes="}, files...)
	cmd := exec.CommandContext(ctx, actionlint, args...)
	cmd.Dir = root
	cmd.Env = lintEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("actionlint: %v\n%s", err, out)
	}
}

// TestShellScriptsShellcheck runs the pinned shellcheck on every shell script
// of the repository (*.sh and files whose #! line names a shell), with no
// rc file, so that its verdict is the same on every machine.
func TestShellScriptsShellcheck(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	var scripts []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch rel {
			case ".git", ".tools", "tmp", "bin", filepath.Join("tests", "node", "node_modules"):
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if strings.HasSuffix(path, ".sh") || isShellScript(path) {
			scripts = append(scripts, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"scripts/deps.sh", ".ci/run"} {
		if !slices.Contains(scripts, want) {
			t.Fatalf("%s not among the shell scripts found: %v", want, scripts)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(2*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, shellcheck(t), append([]string{"--norc", "-f", "gcc"}, scripts...)...)
	cmd.Dir = root
	cmd.Env = lintEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("shellcheck %s: %v\n%s", strings.Join(scripts, " "), err, out)
	}
}

// isShellScript reports whether the file at path starts with a #! line
// that runs sh or bash.
func isShellScript(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	if !strings.HasPrefix(line, "#!") {
		return false
	}
	fields := strings.Fields(strings.TrimPrefix(line, "#!"))
	if len(fields) == 0 {
		return false
	}
	interp := filepath.Base(fields[0])
	if interp == "env" && len(fields) > 1 {
		interp = fields[1]
	}
	return interp == "sh" || interp == "bash"
}
