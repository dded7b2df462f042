package deploy

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestDockerfileCaddyImage: the image runs like the official Caddy image
// (CMD is the whole command line, no ENTRYPOINT, so that `docker run IMG
// caddy version` works), checks its health with the binary itself (no curl
// or wget in it), and says what it is in its OCI labels.
func TestDockerfileCaddyImage(t *testing.T) {
	t.Parallel()
	df := readDockerfile(t, "containers/caddy/Dockerfile")
	for _, name := range []string{"runtime", "cuda"} {
		s := df.stage(name)
		if s == nil {
			t.Fatalf("no %s stage", name)
		}
		if ep, ok := effective[*instructions.EntrypointCommand](df, s); ok {
			t.Errorf("stage %s: ENTRYPOINT %v: the official Caddy image has none", name, ep.CmdLine)
		}
		cmd, ok := effective[*instructions.CmdCommand](df, s)
		if want := []string{"caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"}; !ok || !slices.Equal(cmd.CmdLine, want) {
			t.Errorf("stage %s: CMD %v, want %v", name, cmd, want)
		}
		hc, ok := effective[*instructions.HealthCheckCommand](df, s)
		if !ok || !slices.Equal(hc.Health.Test, []string{"CMD", "caddy", "sdr-health"}) {
			t.Errorf("stage %s: HEALTHCHECK %+v, want CMD caddy sdr-health", name, hc)
		}
		for _, tool := range []string{"curl", "wget"} {
			if slices.Contains(df.aptPackages(s), tool) {
				t.Errorf("stage %s installs %s", name, tool)
			}
		}
		labels := map[string]string{}
		for _, st := range df.chain(s) {
			for _, c := range st.Commands {
				if l, ok := c.(*instructions.LabelCommand); ok {
					for _, kv := range l.Labels {
						labels[kv.Key] = strings.Trim(kv.Value, `"`)
					}
				}
			}
		}
		for k, want := range map[string]string{
			"org.opencontainers.image.source":   "https://github.com/sdr-os/sdr-caddy",
			"org.opencontainers.image.version":  "${SDR_CADDY_VERSION}",
			"org.opencontainers.image.revision": "${SDR_CADDY_REVISION}",
		} {
			if labels[k] != want {
				t.Errorf("stage %s: label %s = %q, want %q", name, k, labels[k], want)
			}
		}
	}
	// The health check finds its URL in the image's environment.
	env, ok := effective[*instructions.EnvCommand](df, df.stage("runtime"))
	found := false
	for _, kv := range env.Env {
		found = found || (kv.Key == "HEALTHCHECK_URL" && strings.HasSuffix(kv.Value, "/health"))
	}
	if !ok || !found {
		t.Error("the runtime stage sets no HEALTHCHECK_URL for caddy sdr-health")
	}
}

// dockerfileLDFlags returns the -ldflags of the build stage's go build, with
// the build arguments expanded.
func dockerfileLDFlags(t *testing.T, args map[string]string) string {
	t.Helper()
	df := readDockerfile(t, "containers/caddy/Dockerfile")
	for _, c := range df.stage("build").Commands {
		run, ok := c.(*instructions.RunCommand)
		if !ok {
			continue
		}
		line := strings.Join(run.CmdLine, " ")
		if !strings.Contains(line, "go build") {
			continue
		}
		m := regexp.MustCompile(`-ldflags="([^"]*)"`).FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("go build without -ldflags=\"...\": %s", line)
		}
		return os.Expand(m[1], func(k string) string {
			v, ok := args[k]
			if !ok {
				t.Fatalf("-ldflags uses ${%s}, which the test does not set", k)
			}
			return v
		})
	}
	t.Fatal("the build stage runs no go build")
	return ""
}

// TestImageVersion builds the binary with the image's -ldflags and the
// build arguments a release passes, and checks that `caddy version` and
// `caddy build-info` say which release and commit it is. (-trimpath, which
// changes no version, is left out, so that the build reuses the cache of
// bin/caddy.)
func TestImageVersion(t *testing.T) {
	t.Parallel()
	const version, revision = "9.8.7-test", "0123456789abcdef0123456789abcdef01234567"
	ldflags := dockerfileLDFlags(t, map[string]string{"SDR_CADDY_VERSION": version, "SDR_CADDY_REVISION": revision})
	bin := filepath.Join(t.TempDir(), "caddy")
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(10*time.Minute))
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-ldflags="+ldflags, "-o", bin, "./cmd/caddy")
	build.Dir = testenv.Root()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -ldflags=%q: %v\n%s", ldflags, err, out)
	}
	want := "sdr-caddy " + version + " (" + revision + ")"
	for _, args := range [][]string{{"version"}, {"build-info"}} {
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("caddy %s: %v, want %q in:\n%.600s", args[0], err, want, out)
		}
	}
}

// TestHealthCommand: caddy sdr-health, the image's health check, passes
// while both sites of a running Caddyfile.example answer, and fails on a
// URL that does not answer 2xx; without a URL it takes $HEALTHCHECK_URL.
func TestHealthCommand(t *testing.T) {
	t.Parallel()
	e := startExample(t)
	env := cleanEnv()
	if out, err := runCaddy(t, env, "", "sdr-health", e.edge+"/health", e.transport+"/health"); err != nil {
		t.Errorf("sdr-health of both sites: %v\n%s", err, out)
	}
	if out, err := runCaddy(t, append(env, "HEALTHCHECK_URL="+e.edge+"/health "+e.transport+"/health"), "", "sdr-health"); err != nil {
		t.Errorf("sdr-health of $HEALTHCHECK_URL: %v\n%s", err, out)
	}
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"sdr-health", e.edge + "/health", e.edge + "/no/such/page"}, 1},
		{[]string{"sdr-health", "--timeout", "1s", "http://" + e.admin + "/no/such/page"}, 1},
		{[]string{"sdr-health"}, 2},
		{[]string{"sdr-health", "not a url"}, 2},
	} {
		out, err := runCaddy(t, env, "", c.args...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != c.code {
			t.Errorf("caddy %v: %v, want exit %d\n%s", c.args, err, c.code, out)
		}
	}
}

// TestReleaseWorkflow: a v* tag publishes both images of
// containers/caddy/Dockerfile, passing the version and the commit through
// the build arguments the Dockerfile declares, under the name the SDR_OS
// override runs.
func TestReleaseWorkflow(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	var wf struct {
		On struct {
			Push struct {
				Tags []string `yaml:"tags"`
			} `yaml:"push"`
		} `yaml:"on"`
		Jobs map[string]struct {
			Permissions map[string]string `yaml:"permissions"`
			Strategy    struct {
				Matrix struct {
					Include []map[string]string `yaml:"include"`
				} `yaml:"matrix"`
			} `yaml:"strategy"`
			Steps []struct {
				Uses string            `yaml:"uses"`
				With map[string]string `yaml:"with"`
			} `yaml:"steps"`
		} `yaml:"jobs"`
	}
	readYAML(t, filepath.Join(root, ".github/workflows/release.yml"), &wf)
	if !slices.Equal(wf.On.Push.Tags, []string{"v*"}) {
		t.Errorf("release runs on tags %v, want v*", wf.On.Push.Tags)
	}
	df := readDockerfile(t, "containers/caddy/Dockerfile")
	declared := map[string]bool{}
	for _, a := range df.metaArgs {
		for _, kv := range a.Args {
			declared[kv.Key] = true
		}
	}
	pushed := map[string]bool{}
	for name, job := range wf.Jobs {
		for _, st := range job.Steps {
			if !strings.HasPrefix(st.Uses, "docker/build-push-action@") {
				continue
			}
			if st.With["push"] != "true" || st.With["file"] != "containers/caddy/Dockerfile" {
				t.Errorf("job %s: build-push %v, want push of containers/caddy/Dockerfile", name, st.With)
			}
			if job.Permissions["packages"] != "write" {
				t.Errorf("job %s pushes without packages: write", name)
			}
			args := map[string]string{}
			for _, l := range strings.Split(strings.TrimSpace(st.With["build-args"]), "\n") {
				k, v, _ := strings.Cut(strings.TrimSpace(l), "=")
				args[k] = v
			}
			for _, k := range []string{"SDR_CADDY_VERSION", "SDR_CADDY_REVISION"} {
				if args[k] == "" || !declared[k] {
					t.Errorf("job %s: build argument %s = %q (declared in the Dockerfile: %t)", name, k, args[k], declared[k])
				}
			}
			for _, m := range job.Strategy.Matrix.Include {
				if df.stage(m["target"]) == nil {
					t.Errorf("job %s: target %q is not a stage", name, m["target"])
				}
				pushed[m["target"]] = true
			}
		}
	}
	if !pushed["runtime"] || !pushed["cuda"] {
		t.Errorf("release publishes %v, want runtime and cuda", pushed)
	}
	b, err := os.ReadFile(filepath.Join(root, ".github/workflows/release.yml"))
	if err != nil {
		t.Fatal(err)
	}
	override, err := os.ReadFile(filepath.Join(root, sdrOSOverride))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "ghcr.io/${{ github.repository_owner }}/sdr-caddy") || !strings.Contains(string(override), "ghcr.io/sdr-os/sdr-caddy}:") {
		t.Error("the release publishes another image name than the SDR_OS override runs (ghcr.io/<owner>/sdr-caddy)")
	}
}
