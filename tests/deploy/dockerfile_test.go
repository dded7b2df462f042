package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// dockerfile is one parsed Dockerfile: its stages as BuildKit sees them and
// the lint findings of BuildKit's own checks (what `docker build --check`
// reports at parse time).
type dockerfile struct {
	stages   []instructions.Stage
	metaArgs []instructions.ArgCommand // the ARGs before the first FROM
	warnings []string
}

func parseDockerfile(src []byte) (*dockerfile, error) {
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, fmt.Errorf("parsing dockerfile: %w", err)
	}
	df := &dockerfile{}
	for _, w := range res.Warnings {
		df.warnings = append(df.warnings, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		df.warnings = append(df.warnings, fmt.Sprintf("line %d: %s: %s", line, rule, msg))
	}})
	df.stages, df.metaArgs, err = instructions.Parse(res.AST, lint)
	if err != nil {
		return nil, fmt.Errorf("reading dockerfile instructions: %w", err)
	}
	return df, nil
}

// stage returns the named stage.
func (df *dockerfile) stage(name string) *instructions.Stage {
	for i := range df.stages {
		if strings.EqualFold(df.stages[i].Name, name) {
			return &df.stages[i]
		}
	}
	return nil
}

// chain returns a stage and the stages it is built FROM, nearest first.
func (df *dockerfile) chain(s *instructions.Stage) []*instructions.Stage {
	var out []*instructions.Stage
	for s != nil && len(out) <= len(df.stages) {
		out = append(out, s)
		s = df.stage(s.BaseName)
	}
	return out
}

// effective returns the last command of type T in a stage or the stages it
// inherits from: what the image built from that stage carries.
func effective[T instructions.Command](df *dockerfile, s *instructions.Stage) (T, bool) {
	for _, st := range df.chain(s) {
		for i := len(st.Commands) - 1; i >= 0; i-- {
			if c, ok := st.Commands[i].(T); ok {
				return c, true
			}
		}
	}
	var zero T
	return zero, false
}

// imageProblems checks a stage that becomes an image people run.
func (df *dockerfile) imageProblems(s *instructions.Stage) []string {
	var errs []string
	user, ok := effective[*instructions.UserCommand](df, s)
	if !ok {
		errs = append(errs, fmt.Sprintf("stage %s runs as root: no USER", s.Name))
	} else if u, _, _ := strings.Cut(user.User, ":"); u == "root" || u == "0" {
		errs = append(errs, fmt.Sprintf("stage %s runs as root: USER %s", s.Name, user.User))
	}
	hc, ok := effective[*instructions.HealthCheckCommand](df, s)
	if !ok || hc.Health == nil || len(hc.Health.Test) < 2 || hc.Health.Test[0] == "NONE" {
		errs = append(errs, fmt.Sprintf("stage %s has no HEALTHCHECK command", s.Name))
	}
	if _, ok := effective[*instructions.CmdCommand](df, s); !ok {
		if _, ok := effective[*instructions.EntrypointCommand](df, s); !ok {
			errs = append(errs, fmt.Sprintf("stage %s sets neither CMD nor ENTRYPOINT", s.Name))
		}
	}
	return errs
}

var aptInstall = regexp.MustCompile(`apt-get\s+install`)

// runProblems applies the checks hadolint is known for to RUN and FROM lines.
func (df *dockerfile) runProblems(root string) []string {
	var errs []string
	for _, s := range df.stages {
		base := s.BaseName
		if df.stage(base) == nil {
			if !strings.Contains(base, ":") || strings.HasSuffix(base, ":latest") {
				errs = append(errs, fmt.Sprintf("stage %s: base image %q is not pinned to a tag", s.Name, base))
			}
		}
		for _, c := range s.Commands {
			switch c := c.(type) {
			case *instructions.RunCommand:
				line := strings.Join(c.CmdLine, " ")
				if aptInstall.MatchString(line) {
					if !strings.Contains(line, "--no-install-recommends") {
						errs = append(errs, fmt.Sprintf("stage %s: apt-get install without --no-install-recommends", s.Name))
					}
					if !strings.Contains(line, "-y") {
						errs = append(errs, fmt.Sprintf("stage %s: apt-get install without -y", s.Name))
					}
					if !strings.Contains(line, "rm -rf /var/lib/apt/lists/*") {
						errs = append(errs, fmt.Sprintf("stage %s: apt lists left in the layer", s.Name))
					}
				}
				if strings.Contains(line, "sudo ") {
					errs = append(errs, fmt.Sprintf("stage %s: sudo in RUN", s.Name))
				}
			case *instructions.CopyCommand:
				if c.From != "" || root == "" {
					continue
				}
				for _, src := range c.SourcePaths {
					if _, err := os.Stat(filepath.Join(root, src)); err != nil {
						errs = append(errs, fmt.Sprintf("stage %s: COPY source %s is not in the build context: %v", s.Name, src, err))
					}
				}
			case *instructions.CmdCommand:
				if c.PrependShell {
					errs = append(errs, fmt.Sprintf("stage %s: CMD in shell form (signals do not reach the process)", s.Name))
				}
			case *instructions.EntrypointCommand:
				if c.PrependShell {
					errs = append(errs, fmt.Sprintf("stage %s: ENTRYPOINT in shell form (signals do not reach the process)", s.Name))
				}
			case *instructions.AddCommand:
				errs = append(errs, fmt.Sprintf("stage %s: ADD where COPY would do", s.Name))
			}
		}
	}
	return errs
}

// aptPackages returns the packages a stage (and the stages it inherits from)
// installs with apt-get.
func (df *dockerfile) aptPackages(s *instructions.Stage) []string {
	var pkgs []string
	for _, st := range df.chain(s) {
		for _, c := range st.Commands {
			run, ok := c.(*instructions.RunCommand)
			if !ok {
				continue
			}
			for _, cmd := range strings.Split(strings.Join(run.CmdLine, " "), "&&") {
				_, rest, ok := strings.Cut(cmd, "apt-get install")
				if !ok {
					continue
				}
				for _, f := range strings.Fields(rest) {
					if !strings.HasPrefix(f, "-") && f != "\\" {
						pkgs = append(pkgs, f)
					}
				}
			}
		}
	}
	return pkgs
}

func readDockerfile(t *testing.T, rel string) *dockerfile {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(testenv.Root(), rel))
	if err != nil {
		t.Fatal(err)
	}
	df, err := parseDockerfile(src)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	for _, w := range df.warnings {
		t.Errorf("%s: %s", rel, w)
	}
	return df
}

func TestDockerfileCaddy(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	df := readDockerfile(t, "containers/caddy/Dockerfile")
	for _, e := range df.runProblems(root) {
		t.Error(e)
	}
	build := df.stage("build")
	if build == nil {
		t.Fatal("no build stage")
	}
	for _, name := range []string{"runtime", "cuda"} {
		s := df.stage(name)
		if s == nil {
			t.Fatalf("no %s stage", name)
		}
		for _, e := range df.imageProblems(s) {
			t.Error(e)
		}
		if slices.Contains(df.chain(s), build) {
			t.Errorf("stage %s is built on the build stage, not a slim runtime", name)
		}
	}
	if last := df.stages[len(df.stages)-1]; last.Name != "runtime" {
		t.Errorf("default target (last stage) is %s, want runtime", last.Name)
	}

	// The build stage compiles with cgo against the FFmpeg dev libraries.
	pkgs := df.aptPackages(build)
	for _, want := range []string{"pkg-config", "gcc", "libavcodec-dev", "libavutil-dev", "libswscale-dev"} {
		if !slices.Contains(pkgs, want) {
			t.Errorf("build stage does not install %s", want)
		}
	}
	cgo := false
	for _, c := range build.Commands {
		if env, ok := c.(*instructions.EnvCommand); ok {
			for _, kv := range env.Env {
				cgo = cgo || (kv.Key == "CGO_ENABLED" && kv.Value == "1")
			}
		}
	}
	if !cgo {
		t.Error("build stage does not set CGO_ENABLED=1")
	}

	// NVENC: the cuda image asks the NVIDIA toolkit for the video capability.
	caps := ""
	cuda := df.stage("cuda")
	for _, st := range df.chain(cuda) {
		for _, c := range st.Commands {
			if env, ok := c.(*instructions.EnvCommand); ok {
				for _, kv := range env.Env {
					if kv.Key == "NVIDIA_DRIVER_CAPABILITIES" {
						caps = kv.Value
					}
				}
			}
		}
	}
	if !slices.Contains(strings.Split(caps, ","), "video") {
		t.Errorf("cuda stage NVIDIA_DRIVER_CAPABILITIES=%q lacks video", caps)
	}

	// The Go image is not older than go.mod asks for.
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	src, _ := os.ReadFile(filepath.Join(root, "containers/caddy/Dockerfile"))
	argLine := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\d+\.\d+)`).FindSubmatch(src)
	if goLine == nil || argLine == nil || string(goLine[1]) != string(argLine[1]) {
		t.Errorf("ARG GO_VERSION %q does not match go.mod's go %q", argLine, goLine)
	}
}

// TestDockerfileCaddyRuntimeLibraries checks that the runtime image installs
// the Debian package of every FFmpeg library the built binary links.
func TestDockerfileCaddyRuntimeLibraries(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not found: the runtime packages are Debian's")
	}
	df := readDockerfile(t, "containers/caddy/Dockerfile")
	pkgs := df.aptPackages(df.stage("runtime"))
	out, err := exec.Command("ldd", testenv.CaddyBin(t)).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "not a dynamic executable") {
		t.Fatalf("ldd: %v\n%s", err, out)
	}
	ffmpegLib := regexp.MustCompile(`=>\s+(\S*/lib(?:av|sw|postproc)[a-z]*\.so\S*)`)
	for _, m := range ffmpegLib.FindAllStringSubmatch(string(out), -1) {
		who, err := exec.Command("dpkg", "-S", m[1]).Output()
		if err != nil {
			// Resolve the symlink dpkg knows by its target.
			real, _ := filepath.EvalSymlinks(m[1])
			who, err = exec.Command("dpkg", "-S", real).Output()
			if err != nil {
				t.Errorf("no Debian package owns %s", m[1])
				continue
			}
		}
		pkg, _, _ := strings.Cut(string(who), ":")
		if !slices.Contains(pkgs, pkg) {
			t.Errorf("the binary links %s (package %s), which the runtime stage does not install", m[1], pkg)
		}
	}
}

func TestDockerfileRosJazzy(t *testing.T) {
	t.Parallel()
	df := readDockerfile(t, "containers/ros-jazzy/Dockerfile")
	for _, e := range df.runProblems(filepath.Join(testenv.Root(), "containers/ros-jazzy")) {
		t.Error(e)
	}
	if len(df.stages) != 1 {
		t.Errorf("%d stages, want one", len(df.stages))
	}
	s := &df.stages[0]
	if !strings.HasPrefix(s.BaseName, "ros:jazzy") {
		t.Errorf("base image %s is not ROS 2 Jazzy", s.BaseName)
	}
	for _, e := range df.imageProblems(s) {
		t.Error(e)
	}
	if !slices.Contains(df.aptPackages(s), "ros-jazzy-rosbridge-server") {
		t.Error("rosbridge_server is not installed")
	}
	cmd, _ := effective[*instructions.CmdCommand](df, s)
	if cmd == nil || !strings.Contains(strings.Join(cmd.CmdLine, " "), "rosbridge_websocket_launch.xml") ||
		!strings.Contains(strings.Join(cmd.CmdLine, " "), "port:=9090") {
		t.Errorf("CMD does not launch rosbridge_websocket on 9090: %v", cmd)
	}
}

// TestDockerfileLintCatchesProblems proves the checks can fail.
func TestDockerfileLintCatchesProblems(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"root user":            "FROM debian:bookworm-slim\nHEALTHCHECK CMD [\"true\"]\nCMD [\"true\"]\n",
		"explicit root":        "FROM debian:bookworm-slim\nUSER root\nHEALTHCHECK CMD [\"true\"]\nCMD [\"true\"]\n",
		"no healthcheck":       "FROM debian:bookworm-slim\nUSER app\nCMD [\"true\"]\n",
		"unpinned base":        "FROM debian\nUSER app\nHEALTHCHECK CMD [\"true\"]\nCMD [\"true\"]\n",
		"apt lists kept":       "FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y --no-install-recommends curl\nUSER app\nHEALTHCHECK CMD [\"true\"]\nCMD [\"true\"]\n",
		"lint: casing":         "from debian:bookworm-slim AS Build\nUSER app\nHEALTHCHECK CMD [\"true\"]\nCMD [\"true\"]\n",
		"lint: shell-form CMD": "FROM debian:bookworm-slim\nUSER app\nHEALTHCHECK CMD [\"true\"]\nCMD true\n",
	}
	for name, src := range cases {
		df, err := parseDockerfile([]byte(src))
		if err != nil {
			continue
		}
		problems := append(df.warnings, df.runProblems("")...)
		problems = append(problems, df.imageProblems(&df.stages[len(df.stages)-1])...)
		if len(problems) == 0 {
			t.Errorf("%s: no problem found in\n%s", name, src)
		}
	}
}

// TestDockerfileCaddyPackagesExist asks this machine's apt (Debian 12, the
// image's base) whether every package the Dockerfile installs exists, so a
// misspelt or renamed package fails here rather than in the image build.
func TestDockerfileCaddyPackagesExist(t *testing.T) {
	t.Parallel()
	osr, err := os.ReadFile("/etc/os-release")
	if err != nil || !strings.Contains(string(osr), "VERSION_CODENAME=bookworm") {
		t.Skip("not Debian 12 (bookworm): this machine's apt cannot speak for the image's")
	}
	if _, err := exec.LookPath("apt-cache"); err != nil {
		t.Skip("no apt-cache")
	}
	if out, err := exec.Command("apt-cache", "show", "--no-all-versions", "dpkg").Output(); err != nil || !strings.Contains(string(out), "Package: dpkg") {
		t.Skip("apt has no package lists here (apt-get update never ran)")
	}
	df := readDockerfile(t, "containers/caddy/Dockerfile")
	var pkgs []string
	for _, s := range []string{"build", "runtime"} {
		pkgs = append(pkgs, df.aptPackages(df.stage(s))...)
	}
	if len(pkgs) < 10 {
		t.Fatalf("found only %d packages: %v", len(pkgs), pkgs)
	}
	out, err := exec.Command("apt-cache", append([]string{"show", "--no-all-versions"}, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Errorf("apt-cache show: %v", err)
	}
	for _, p := range pkgs {
		if !strings.Contains(string(out), "Package: "+p+"\n") {
			t.Errorf("Debian 12 has no package %s", p)
		}
	}
}
