package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// The code blocks of README.md and docs/*.md are tests. Each fenced block is
// preceded by a marker `<!-- doc-test: KIND -->` that says how it is checked,
// and carries the fence language of its kind (blockLang). Every ```sh block
// also parses with `bash -n`, and the plain shell kinds (caddy-run, live,
// run, shell, gpu, env) pass the pinned shellcheck.
//
//	prose           a ```text diagram or exchange; nothing to run
//	tree            a directory listing: every path named exists
//	make            `make TARGET` lines: `make -n TARGET` succeeds
//	xcaddy          an xcaddy build line: same Caddy version and module as
//	                go.mod, and for a local build the same --with as
//	                scripts/xcaddy-check.sh, which `make test` runs
//	caddyfile       a whole Caddyfile: `caddy adapt` accepts it
//	caddyfile-site  site-block contents: adapted inside a site block
//	caddyfile-global global options: adapted as the global options block
//	json-app NAME   an app's JSON config: `caddy validate` accepts it as apps.NAME
//	json-handler [app=NAME...]
//	                one or more handlers' JSON configs: each validated inside
//	                an HTTP route, beside the named apps with their defaults
//	caddy-run       a `[SDR_X=v ...] bin/caddy run` line: run as written,
//	                listening addresses moved to free ports, for the live
//	                blocks below
//	live            shell lines run against that process: the edge,
//	                transport, admin and metrics addresses the caddy-run line
//	                implies (defaults :80, :8080, localhost:2019,
//	                localhost:9180) are mapped onto
//	                it; any other localhost address fails
//	run [exit=N,M] [json]
//	                shell lines run in the repository root (bin/caddy is
//	                the built binary, /dev/shm/sdr_os_ipc/ a fresh temporary
//	                directory per block); each must exit 0 (or one of the
//	                listed statuses), and with json print one JSON document
//	js-module       browser code: every name it imports from /sdr/<file> is
//	                exported by web/<file>, which node parses as a module
//	docker-build [sdr-os]
//	                `docker build` lines: Dockerfile, target and context exist;
//	                with sdr-os the tag is the image the SDR_OS override runs
//	compose         `docker compose` lines: the files load with those profiles
//	caddyfile-syntax site|global
//	                a syntax synopsis (<placeholders>, [optional], a|b): each
//	                directive and subdirective it names is adapted alone in
//	                its place, and the parser must not call it unknown
//	usage           a command synopsis (`caddy sdr-ring watch [--count N]`,
//	                `python3 tests/python/sdr_ring.py ...`): every --flag is
//	                one the command's --help lists
//	output PATH...  a sample of what the program in PATH (files, or
//	                directories of .go/.sh/.py) prints: every key= it shows
//	                is printed there, and the first word of each other line
//	json            a JSON message: it parses
//	json-config     a whole Caddy JSON config: `caddy validate` accepts it
//	health-json     the health JSON: the same fields in the same order as the
//	                running Caddyfile.example answers
//	ack-json        a telemetry.command.ack payload: the same fields in the
//	                same order as the running Caddyfile.example's acks
//	env             VAR=value lines: each a variable Caddyfile.example or the
//	                SDR_OS override reads
//	shell           shell lines that are not run: bash -n and shellcheck
//	gpu             lines that need an NVIDIA GPU, so cannot run here: bash -n,
//	                shellcheck, and each runs an executable script of the
//	                repository that has the branch its first argument names
//	compose-yaml [FILE...]
//	                a Compose file: compose-go loads it after FILE..., with
//	                every profile, and its references resolve
//	dockerfile      a Dockerfile: BuildKit's parser reads it; FROM sdr-caddy's
//	                image names the version containers/caddy/Dockerfile builds
//	sdr-os-compose  `[VAR=value ...] docker compose ...` lines run in an SDR_OS
//	                checkout with sdr-caddy in ../sdr-caddy (checkComposeDocBlock)
//	sdr-os-dotenv   lines of SDR_OS's .env (checkComposeDocBlock)
//
// A block without a marker, or with an unknown kind, fails the test.

type docBlock struct {
	line int
	kind string
	args []string
	lang string
	body string
}

var docMarker = regexp.MustCompile(`^<!--\s*doc-test:\s*(.*?)\s*-->$`)

func parseDocBlocks(md string) ([]docBlock, error) {
	lines := strings.Split(md, "\n")
	var blocks []docBlock
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if !strings.HasPrefix(l, "```") {
			continue
		}
		b := docBlock{line: i + 1, lang: strings.TrimSpace(strings.TrimPrefix(l, "```"))}
		j := i - 1
		for j >= 0 && strings.TrimSpace(lines[j]) == "" {
			j--
		}
		if j < 0 {
			return nil, fmt.Errorf("line %d: code block without a doc-test marker", b.line)
		}
		m := docMarker.FindStringSubmatch(strings.TrimSpace(lines[j]))
		if m == nil {
			return nil, fmt.Errorf("line %d: code block without a doc-test marker (<!-- doc-test: KIND -->)", b.line)
		}
		f := strings.Fields(m[1])
		if len(f) == 0 {
			return nil, fmt.Errorf("line %d: empty doc-test marker", b.line)
		}
		b.kind, b.args = f[0], f[1:]
		var body []string
		for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			return nil, fmt.Errorf("line %d: code block not closed", b.line)
		}
		b.body = strings.Join(body, "\n")
		blocks = append(blocks, b)
	}
	return blocks, nil
}

// commandLines returns the non-empty, non-comment lines of a shell block,
// with backslash continuations joined.
func commandLines(body string) []string {
	var out []string
	cur := ""
	for _, l := range strings.Split(body, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		out = append(out, cur+l)
		cur = ""
	}
	return out
}

// readmeRun holds what the blocks of one README share: the process a
// caddy-run block started, for the live blocks after it.
type readmeRun struct {
	t       *testing.T
	root    string
	example *example
	ports   map[string]string // the caddy-run line's VAR=value settings
	shared  docShared
}

// docShared is what the documents of one test share: one running
// Caddyfile.example for every caddy-run, live, health-json and ack-json block.
type docShared struct {
	example *example
}

// needsExample are the kinds that need a running Caddyfile.example.
var needsExample = map[string]bool{"caddy-run": true, "health-json": true, "ack-json": true}

func (r *readmeRun) check(b docBlock) error {
	if want, ok := blockLang[b.kind]; ok && b.lang != want {
		return fmt.Errorf("a %s block is a ```%s block, not %q", b.kind, want, b.lang)
	}
	if b.lang == "sh" {
		if err := r.checkShell(b); err != nil {
			return err
		}
	}
	switch b.kind {
	case "prose":
		if b.lang != "text" {
			return fmt.Errorf("prose is for ```text blocks, not %q", b.lang)
		}
		return nil
	case "tree":
		return r.tree(b)
	case "make":
		return r.make(b)
	case "xcaddy":
		return r.xcaddy(b)
	case "caddyfile":
		return r.adapt(b.body)
	case "caddyfile-site":
		return r.adapt(":8089 {\n" + b.body + "\n}\n")
	case "caddyfile-global":
		return r.adapt(b.body + "\n")
	case "json-app":
		if len(b.args) != 1 {
			return fmt.Errorf("json-app needs the app name")
		}
		return r.validateJSON(fmt.Sprintf(`{"apps":{%q:%s}}`, b.args[0], b.body))
	case "json-handler":
		return r.jsonHandlers(b)
	case "caddy-run":
		return r.caddyRun(b)
	case "live":
		return r.live(b)
	case "run":
		return r.run(b)
	case "docker-build":
		if slices.Equal(b.args, []string{"sdr-os"}) {
			return checkComposeDocBlock(r.t, r, b)
		}
		if len(b.args) > 0 {
			return fmt.Errorf("docker-build: unknown argument %v", b.args)
		}
		return r.dockerBuild(b)
	case "js-module":
		return r.jsModule(b)
	case "compose":
		return r.compose(b)
	case "sdr-os-compose", "sdr-os-dotenv":
		return checkComposeDocBlock(r.t, r, b)
	case "caddyfile-syntax":
		return r.caddyfileSyntax(b)
	case "usage":
		return r.usage(b)
	case "output":
		return r.output(b)
	case "json":
		_, err := jsonValues(b.body)
		return err
	case "json-config":
		return r.validateJSON(b.body)
	case "health-json":
		return r.healthJSON(b)
	case "ack-json":
		return r.ackJSON(b)
	case "env":
		return r.env(b)
	case "shell":
		return nil // bash -n and shellcheck above
	case "gpu":
		return r.gpu(b)
	case "compose-yaml":
		return r.composeYAML(b)
	case "dockerfile":
		return r.dockerfileBlock(b)
	}
	return fmt.Errorf("unknown doc-test kind %q", b.kind)
}

func (r *readmeRun) tree(b docBlock) error {
	for _, l := range strings.Split(b.body, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if _, err := os.Stat(filepath.Join(r.root, f[0])); err != nil {
			return fmt.Errorf("layout names %s: %w", f[0], err)
		}
	}
	return nil
}

func (r *readmeRun) make(b docBlock) error {
	for _, l := range commandLines(b.body) {
		f := strings.Fields(l)
		if len(f) != 2 || f[0] != "make" {
			return fmt.Errorf("%q: want `make TARGET`", l)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := testenv.Run(ctx, r.root, "make", "-n", f[1])
		cancel()
		if err != nil {
			return fmt.Errorf("make -n %s: %w\n%s", f[1], err, out)
		}
	}
	return nil
}

var (
	goModModule = regexp.MustCompile(`(?m)^module (\S+)`)
	goModCaddy  = regexp.MustCompile(`(?m)github.com/caddyserver/caddy/v2 (v\S+)`)
	scriptWith  = regexp.MustCompile(`xcaddy build (\S+) .*--with "?([^"\s]+)"?`)
)

func (r *readmeRun) xcaddy(b docBlock) error {
	gomod, err := os.ReadFile(filepath.Join(r.root, "go.mod"))
	if err != nil {
		return err
	}
	module := goModModule.FindSubmatch(gomod)[1]
	caddyVersion := goModCaddy.FindSubmatch(gomod)[1]
	script, err := os.ReadFile(filepath.Join(r.root, "scripts/xcaddy-check.sh"))
	if err != nil {
		return err
	}
	sm := scriptWith.FindSubmatch(script)
	if sm == nil {
		return fmt.Errorf("no xcaddy build line in scripts/xcaddy-check.sh")
	}
	localWith := strings.ReplaceAll(string(sm[2]), "$root", ".")
	makefile, err := os.ReadFile(filepath.Join(r.root, "Makefile"))
	if err != nil {
		return err
	}
	// test-xcaddy is a prerequisite of test or a target its recipe makes.
	if !regexp.MustCompile(`(?m)^test:[^\n]*(?:\n\t[^\n]*)*?\btest-xcaddy\b`).Match(makefile) ||
		!strings.Contains(string(makefile), "scripts/xcaddy-check.sh") {
		return fmt.Errorf("make test does not run scripts/xcaddy-check.sh")
	}
	for _, l := range commandLines(b.body) {
		f := strings.Fields(l)
		for len(f) > 0 && strings.Contains(f[0], "=") && !strings.HasPrefix(f[0], "-") {
			if f[0] == "CGO_ENABLED=0" {
				return fmt.Errorf("%q: the encoder needs CGO_ENABLED=1", l)
			}
			f = f[1:]
		}
		if len(f) < 5 || f[0] != "xcaddy" || f[1] != "build" {
			return fmt.Errorf("%q: want `xcaddy build VERSION --with MODULE`", l)
		}
		if f[2] != string(caddyVersion) {
			return fmt.Errorf("%q: Caddy %s, go.mod pins %s", l, f[2], caddyVersion)
		}
		i := slices.Index(f, "--with")
		if i < 0 || i+1 >= len(f) {
			return fmt.Errorf("%q: no --with", l)
		}
		with := f[i+1]
		mod, _, _ := strings.Cut(with, "=")
		mod, _, _ = strings.Cut(mod, "@")
		if mod != string(module) {
			return fmt.Errorf("%q: module %s, go.mod says %s", l, mod, module)
		}
		if strings.Contains(with, "=") && with != localWith {
			return fmt.Errorf("%q: local build --with %s, but scripts/xcaddy-check.sh (run by make test) uses %s", l, with, localWith)
		}
		if sm[1] != nil && string(sm[1]) != f[2] {
			return fmt.Errorf("%q: scripts/xcaddy-check.sh builds Caddy %s", l, sm[1])
		}
	}
	return nil
}

func (r *readmeRun) xdgEnv() []string {
	xdg := r.t.TempDir()
	return cleanEnv("XDG_CONFIG_HOME="+xdg, "XDG_DATA_HOME="+xdg)
}

func (r *readmeRun) adapt(caddyfile string) error {
	out, err := runCaddy(r.t, r.xdgEnv(), caddyfile, "adapt", "--config", "-", "--adapter", "caddyfile")
	if err != nil {
		return fmt.Errorf("caddy adapt: %w\n%s\n---\n%s", err, out, caddyfile)
	}
	return nil
}

func (r *readmeRun) validateJSON(cfg string) error {
	f := filepath.Join(r.t.TempDir(), "caddy.json")
	if err := os.WriteFile(f, []byte(cfg), 0o644); err != nil {
		return err
	}
	out, err := runCaddy(r.t, r.xdgEnv(), "", "validate", "--config", f)
	if err != nil {
		return fmt.Errorf("caddy validate: %w\n%s\n---\n%s", err, out, cfg)
	}
	return nil
}

func (r *readmeRun) caddyRun(b docBlock) error {
	lines := commandLines(b.body)
	if len(lines) != 1 {
		return fmt.Errorf("caddy-run: one command line, got %d", len(lines))
	}
	f := strings.Fields(lines[0])
	// Leading VAR=value words: settings Caddyfile.example reads. The test
	// moves every listening address to a free port, so the live blocks map
	// the documented ports onto those.
	vars := caddyfileVars(r.t)
	r.ports = map[string]string{}
	for len(f) > 0 && strings.Contains(f[0], "=") {
		k, v, _ := strings.Cut(f[0], "=")
		if !vars[k] {
			return fmt.Errorf("caddy-run: %s is not a setting of Caddyfile.example", k)
		}
		r.ports[k] = v
		f = f[1:]
	}
	want := []string{"bin/caddy", "run", "--config", "Caddyfile.example", "--adapter", "caddyfile"}
	if !slices.Equal(f, want) {
		return fmt.Errorf("caddy-run: %q is not %q (the line startExample runs)", lines[0], strings.Join(want, " "))
	}
	if r.shared.example == nil {
		return fmt.Errorf("caddy-run: the test started no instance to run the live blocks against")
	}
	r.example = r.shared.example
	return nil
}

// live runs shell lines against the process a caddy-run block started.
func (r *readmeRun) live(b docBlock) error {
	if r.example == nil {
		return fmt.Errorf("live block before any caddy-run block")
	}
	port := func(k, def string) string {
		v, ok := r.ports[k]
		if !ok {
			v = def
		}
		_, p, _ := strings.Cut(v, ":")
		return p
	}
	edge := "http://localhost"
	if p := port("SDR_HTTP_ADDR", ":80"); p != "80" {
		edge += ":" + p
	}
	repl := strings.NewReplacer(
		edge+"/", r.example.edge+"/",
		"http://localhost:"+port("SDR_LISTEN_ADDR", ":8080")+"/", r.example.transport+"/",
		"http://localhost:"+port("SDR_ADMIN_ADDR", "localhost:2019")+"/", "http://"+r.example.admin+"/",
		"localhost:"+port("SDR_ADMIN_ADDR", "localhost:2019"), r.example.admin,
		"http://localhost:"+port("SDR_METRICS_ADDR", "localhost:9180")+"/", "http://"+r.example.metrics+"/",
	)
	for _, l := range commandLines(b.body) {
		// The caddy-run line's own settings are in the instance's
		// environment, with its ports mapped: drop them from the line.
		for k, v := range r.ports {
			l = strings.ReplaceAll(l, k+"="+v+" ", "")
		}
		mapped := repl.Replace(l)
		if regexp.MustCompile(`\bSDR_[A-Z_]+=`).MatchString(mapped) {
			return fmt.Errorf("%q: a setting the caddy-run line did not make", l)
		}
		if strings.Contains(mapped, "localhost") {
			return fmt.Errorf("%q: an address the test does not map onto the running instance", l)
		}
		if err := r.shellEnv(mapped, r.example.env); err != nil {
			return err
		}
	}
	return nil
}

func (r *readmeRun) run(b docBlock) error {
	exits := []int{0}
	wantJSON := false
	for _, a := range b.args {
		switch {
		case a == "json":
			wantJSON = true
		case strings.HasPrefix(a, "exit="):
			exits = nil
			for _, n := range strings.Split(strings.TrimPrefix(a, "exit="), ",") {
				var code int
				if _, err := fmt.Sscan(n, &code); err != nil {
					return fmt.Errorf("run: bad exit status %q", n)
				}
				exits = append(exits, code)
			}
		default:
			return fmt.Errorf("run: unknown argument %q", a)
		}
	}
	shm := r.t.TempDir() + "/"
	for _, l := range commandLines(b.body) {
		l = strings.ReplaceAll(l, "/dev/shm/sdr_os_ipc/", shm)
		out, errOut, code, err := r.shellStatus(l)
		if err != nil {
			return err
		}
		if !slices.Contains(exits, code) {
			return fmt.Errorf("%s: exit status %d, want one of %v\n%s%s", l, code, exits, out, errOut)
		}
		if wantJSON && !json.Valid([]byte(out)) {
			return fmt.Errorf("%s: output is not one JSON document:\n%s", l, out)
		}
	}
	return nil
}

// shell runs one line and requires exit status 0.
func (r *readmeRun) shell(line string) error { return r.shellEnv(line, nil) }

// shellEnv runs one line with extra environment variables (a live block
// gets those of the running instance, so that `caddy reload` reads the
// Caddyfile as that instance did) and requires exit status 0.
func (r *readmeRun) shellEnv(line string, env []string) error {
	out, errOut, code, err := r.shellStatus(line, env...)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s: exit status %d\n%s%s", line, code, out, errOut)
	}
	return nil
}

// shellStatus runs one line with bash in the repository root, with
// bin/caddy standing for the built binary, and returns its standard output,
// standard error and exit status.
func (r *readmeRun) shellStatus(line string, env ...string) (stdout, stderr string, code int, err error) {
	line = strings.ReplaceAll(line, "bin/caddy ", testenv.CaddyBin(r.t)+" ")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-ec", line)
	cmd.Dir = r.root
	cmd.Env = append(r.xdgEnv(), env...)
	var errBuf strings.Builder
	cmd.Stderr = &errBuf
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return "", "", 0, fmt.Errorf("%s: still running after 60s", line)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), errBuf.String(), 0, nil
	case errors.As(err, &exit):
		return string(out), errBuf.String(), exit.ExitCode(), nil
	}
	return "", "", 0, fmt.Errorf("%s: %w", line, err)
}

var (
	jsImport = regexp.MustCompile(`import\s*\{([^}]*)\}\s*from\s*'/sdr/([a-z]+\.js)'`)
	jsExport = regexp.MustCompile(`(?m)^export\s+(?:class|function|const|let)\s+([A-Za-z_$][\w$]*)`)
)

func (r *readmeRun) jsModule(b docBlock) error {
	imports := jsImport.FindAllStringSubmatch(b.body, -1)
	if len(imports) == 0 {
		return fmt.Errorf("js-module: no import from /sdr/")
	}
	for _, m := range imports {
		file := filepath.Join(r.root, "web", m[2])
		src, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("js-module: /sdr/%s: %w", m[2], err)
		}
		exported := map[string]bool{}
		for _, e := range jsExport.FindAllStringSubmatch(string(src), -1) {
			exported[e[1]] = true
		}
		for _, name := range strings.Split(m[1], ",") {
			if name = strings.TrimSpace(name); name != "" && !exported[name] {
				return fmt.Errorf("js-module: web/%s does not export %s", m[2], name)
			}
		}
		if node, err := exec.LookPath("node"); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cmd := exec.CommandContext(ctx, node, "--input-type=module", "--check")
			cmd.Stdin = bytes.NewReader(src)
			out, err := cmd.CombinedOutput()
			cancel()
			if err != nil {
				return fmt.Errorf("js-module: node cannot parse web/%s: %w\n%s", m[2], err, out)
			}
		}
	}
	return nil
}

// dockerCommand is a `docker SUBCOMMAND ...` line of a README block.
type dockerCommand struct {
	line  string
	opts  map[string][]string // the values of the options that take one
	flags []string            // the options that take no value
	args  []string            // the words that are not options
}

// last returns the last value given to the option kept as name, or "".
func (c dockerCommand) last(name string) string {
	if v := c.opts[name]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// dockerCommands parses the command lines of body, each of which must be
// `docker sub ...`; valued maps each option that takes a value to the name
// its values are kept under.
func dockerCommands(body, sub string, valued map[string]string) ([]dockerCommand, error) {
	var cmds []dockerCommand
	for _, l := range commandLines(body) {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "docker" || f[1] != sub {
			return nil, fmt.Errorf("%q: want `docker %s ...`", l, sub)
		}
		c := dockerCommand{line: l, opts: map[string][]string{}}
		for i := 2; i < len(f); i++ {
			name, ok := valued[f[i]]
			switch {
			case ok && i+1 == len(f):
				return nil, fmt.Errorf("%q: %s without a value", l, f[i])
			case ok:
				i++
				c.opts[name] = append(c.opts[name], f[i])
			case strings.HasPrefix(f[i], "-"):
				c.flags = append(c.flags, f[i])
			default:
				c.args = append(c.args, f[i])
			}
		}
		cmds = append(cmds, c)
	}
	return cmds, nil
}

func (r *readmeRun) dockerBuild(b docBlock) error {
	cmds, err := dockerCommands(b.body, "build", map[string]string{
		"-f": "file", "--file": "file", "--target": "target", "-t": "tag", "--tag": "tag",
	})
	if err != nil {
		return err
	}
	for _, c := range cmds {
		l, file, target := c.line, c.last("file"), c.last("target")
		if len(c.flags) > 0 {
			return fmt.Errorf("%q: option %s is not checked here", l, c.flags[0])
		}
		if len(c.args) == 0 {
			return fmt.Errorf("%q: no build context", l)
		}
		ctxDir := c.args[len(c.args)-1]
		if file == "" {
			file = filepath.Join(ctxDir, "Dockerfile")
		}
		if _, err := os.Stat(filepath.Join(r.root, ctxDir)); err != nil {
			return fmt.Errorf("%q: context: %w", l, err)
		}
		src, err := os.ReadFile(filepath.Join(r.root, file))
		if err != nil {
			return fmt.Errorf("%q: %w", l, err)
		}
		df, err := parseDockerfile(src)
		if err != nil {
			return fmt.Errorf("%q: %w", l, err)
		}
		if target != "" && df.stage(target) == nil {
			return fmt.Errorf("%q: no stage %s in %s", l, target, file)
		}
		// COPY sources resolve in this context.
		if probs := df.runProblems(filepath.Join(r.root, ctxDir)); len(probs) > 0 {
			return fmt.Errorf("%q: %s", l, strings.Join(probs, "; "))
		}
	}
	return nil
}

func (r *readmeRun) compose(b docBlock) error {
	cmds, err := dockerCommands(b.body, "compose", map[string]string{"-f": "file", "--file": "file", "--profile": "profile"})
	if err != nil {
		return err
	}
	for _, c := range cmds {
		l, files, profiles := c.line, c.opts["file"], c.opts["profile"]
		services := c.args[min(1, len(c.args)):] // after the compose subcommand
		if len(files) == 0 {
			files = []string{"docker-compose.yml"}
		}
		p, err := loadCompose(r.t, r.root, files, profiles)
		if err != nil {
			return fmt.Errorf("%q: %w", l, err)
		}
		if probs := checkReferences(p); len(probs) > 0 {
			return fmt.Errorf("%q: %s", l, strings.Join(probs, "; "))
		}
		if len(p.Services) == 0 {
			return fmt.Errorf("%q: no service enabled", l)
		}
		for _, s := range services {
			if _, ok := p.Services[s]; !ok {
				return fmt.Errorf("%q: no service %s with profiles %v", l, s, profiles)
			}
		}
	}
	return nil
}

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.Root(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDocBlocks runs, adapts or parses every code block of README.md and
// docs/*.md, as its marker says.
func TestDocBlocks(t *testing.T) {
	root := testenv.Root()
	type doc struct {
		name   string
		blocks []docBlock
	}
	var docs []doc
	var shared docShared
	for _, f := range docFiles(t) {
		blocks, err := parseDocBlocks(f.text)
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		docs = append(docs, doc{f.name, blocks})
		for _, b := range blocks {
			if needsExample[b.kind] && shared.example == nil {
				shared.example = startExample(t)
			}
		}
	}
	n := 0
	for _, d := range docs {
		t.Run(filepath.Base(d.name), func(t *testing.T) {
			r := &readmeRun{t: t, root: root, shared: shared}
			for _, b := range d.blocks {
				n++
				if err := r.check(b); err != nil {
					t.Errorf("%s:%d (%s): %v", d.name, b.line, b.kind, err)
				}
			}
		})
	}
	if n < 80 {
		t.Errorf("only %d blocks checked in README.md and docs/", n)
	}
	// The checks against the running instance can fail.
	t.Run("stale", func(t *testing.T) {
		r := &readmeRun{t: t, root: root, shared: shared}
		for _, b := range []docBlock{
			{kind: "health-json", lang: "json", body: `{"status":"ok","clients":1,"uptime_s":1}`},
			{kind: "health-json", lang: "json", body: `{"clients":0,"status":"ok","shm_seq":0,"last_frame_age_ms":null,"uptime_s":1,"frames_broadcast":0,"client_lag_total":0,"avg_frame_size_bytes":0,"nats":"connected"}`},
			{kind: "ack-json", lang: "json", body: `{"action":"estop","cmd_seq":1,"status":"rejected"}`},
			{kind: "ack-json", lang: "json", body: `{"action":"estop","cmd_seq":1,"status":"refused","detail":"x"}`},
		} {
			if err := r.check(b); err == nil {
				t.Errorf("stale %s block accepted: %s", b.kind, b.body)
			}
		}
	})
}

// TestDocTestsCatchRot proves that the checks fail on stale docs.
func TestDocTestsCatchRot(t *testing.T) {
	t.Parallel()
	if _, err := parseDocBlocks("text\n\n```sh\nmake run\n```\n"); err == nil {
		t.Error("a block without a marker was accepted")
	}
	r := &readmeRun{t: t, root: testenv.Root()}
	stale := []docBlock{
		{kind: "make", body: "make no-such-target"},
		{kind: "xcaddy", body: "xcaddy build v2.10.0 --with github.com/sdr-os/sdr-caddy"},
		{kind: "xcaddy", body: "xcaddy build v2.11.9 --with github.com/sdr-os/sdr-caddy/caddymodule"},
		{kind: "xcaddy", body: "xcaddy build v2.11.9 --with github.com/sdr-os/sdr-caddy=../elsewhere"},
		{kind: "caddyfile-site", body: "sdr_player {\n\tno_such_option 1\n}"},
		{kind: "caddyfile-site", body: "no_such_directive"},
		{kind: "json-handler", body: `{"handler":"sdr_player","stream_url":"http://wrong"}`},
		{kind: "docker-build", body: "docker build -f containers/caddy/Dockerfile --target nope -t x ."},
		{kind: "compose", body: "docker compose --profile sim up -d webserver"},
		{kind: "tree", body: "no/such/dir/   what"},
		{kind: "run", body: "bin/caddy no-such-command"},
		{kind: "run", args: []string{"exit=2"}, body: "true"},
		{kind: "run", args: []string{"json"}, body: "echo not json"},
		{kind: "prose", lang: "sh", body: "rm -rf /"},
		{kind: "live", body: "curl -fsS http://localhost/health"},
		{kind: "js-module", body: "import { NoSuchThing } from '/sdr/player.js';"},
		{kind: "bogus"},
		{kind: "caddyfile", lang: "json", body: ":8089 {\n}"},
		{kind: "make", body: "make run )"},
		{kind: "caddyfile-syntax", args: []string{"site"}, body: "sdr_stream [<name>] {\n\tno_such_option <n>\n}"},
		{kind: "caddyfile-syntax", args: []string{"global"}, body: "sdr_nats {\n\tgate {\n\t\tno_such <ms>\n\t}\n}"},
		{kind: "caddyfile-syntax", args: []string{"global"}, body: "sdr_encoder {\n\tencoder <name> {\n\t\toutput [<path>] {\n\t\t\tno_such <n>\n\t\t}\n\t}\n}"},
		{kind: "caddyfile-syntax", args: []string{"site"}, body: "no_such_directive [<matcher>] {\n}"},
		{kind: "caddyfile-syntax", body: "sdr_stream"},
		{kind: "usage", body: "caddy sdr-ring inspect [--no-such-flag] [<path>]"},
		{kind: "usage", body: "caddy sdr-no-such-command [--json]"},
		{kind: "usage", body: "python3 tests/python/sdr_ring.py write PATH [--size N]\n        [--no-such N]"},
		{kind: "output", args: []string{"bench/stream"}, body: "BENCH stream clients=100 no_such_key=1"},
		{kind: "output", args: []string{"shmring"}, body: "no_such_label  12"},
		{kind: "json", body: `{"action": }`},
		{kind: "json-config", body: `{"apps":{"sdr_encoder":{"encoders":{"x":{"no_such_key":1}}}}}`},
		{kind: "json-handler", body: "{\"handler\":\"sdr_player\"}\n{\"handler\":\"sdr_player\",\"stream_url\":\"http://wrong\"}"},
		{kind: "env", body: "SDR_NO_SUCH_SETTING=1"},
		{kind: "shell", body: "cd /somewhere\nls"},
		{kind: "shell", body: "if then"},
		{kind: "gpu", body: "tests/encoder/gpu_check.sh no-such-mode"},
		{kind: "gpu", body: "tests/encoder/no_such_check.sh run"},
		{kind: "compose-yaml", args: []string{"docker-compose.yml"}, body: "services:\n  caddy:\n    networks: [no_such_network]"},
		{kind: "compose-yaml", body: "services:\n  x:\n    image: y\n    no_such_key: 1"},
		{kind: "dockerfile", body: "FROM ghcr.io/sdr-os/sdr-caddy:9.9.9\nCOPY Caddyfile /etc/caddy/Caddyfile"},
		{kind: "dockerfile", body: "COPY Caddyfile /etc/caddy/Caddyfile"},
		{kind: "docker-build", args: []string{"sdr-os"}, body: "docker build -f containers/caddy/Dockerfile -t ghcr.io/sdr-os/sdr-caddy:latest ."},
		{kind: "caddy-run", body: "SDR_HTTP_ADDR=:8081 bin/caddy run --config Caddyfile.example --adapter caddyfile"},
	}
	for _, b := range stale {
		if b.lang == "" {
			b.lang = blockLang[b.kind]
		}
		if err := r.check(b); err == nil {
			t.Errorf("stale %s block accepted: %q", b.kind, b.body)
		}
	}
}

// TestConfigurationDocumentsEveryVariable: every SDR_* setting
// Caddyfile.example reads is explained in docs/configuration.md.
func TestConfigurationDocumentsEveryVariable(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(testenv.Root(), "docs/configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	vars := caddyfileVars(t)
	if len(vars) < 20 {
		t.Fatalf("only %d variables found in Caddyfile.example", len(vars))
	}
	for v := range vars {
		if !strings.Contains(string(b), "`"+v+"`") {
			t.Errorf("docs/configuration.md does not document %s, which Caddyfile.example reads", v)
		}
	}
}

var (
	mdLink     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	mdHeading  = regexp.MustCompile(`(?m)^#+ (.+)$`)
	moduleName = regexp.MustCompile("`((?:http\\.handlers\\.)?sdr_[a-z_]+)`")
	subcommand = regexp.MustCompile(`caddy (sdr-[a-z-]+)`)
)

// githubSlug is the anchor GitHub gives a heading.
func githubSlug(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// headingAnchors returns the anchors GitHub gives the headings of a
// Markdown text.
func headingAnchors(md string) map[string]bool {
	anchors := map[string]bool{}
	for _, m := range mdHeading.FindAllStringSubmatch(md, -1) {
		anchors[githubSlug(m[1])] = true
	}
	return anchors
}

// TestDocsLinks: the relative links of README.md and docs/*.md point at
// files that exist, and their anchors at headings that exist, in the same
// page or in the page linked.
func TestDocsLinks(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	n := 0
	for _, doc := range docFiles(t) {
		for _, m := range mdLink.FindAllStringSubmatch(doc.text, -1) {
			link := m[1]
			if strings.HasPrefix(link, "http://") || strings.HasPrefix(link, "https://") {
				continue
			}
			n++
			path, anchor, _ := strings.Cut(link, "#")
			target := doc.text
			if path != "" {
				p := filepath.Join(root, filepath.Dir(doc.name), path)
				b, err := os.ReadFile(p)
				if errors.Is(err, syscall.EISDIR) {
					continue // a directory: exists
				}
				if err != nil {
					t.Errorf("%s links to %s: %v", doc.name, link, err)
					continue
				}
				target = string(b)
			}
			if anchor != "" && !headingAnchors(target)[anchor] {
				t.Errorf("%s links to %s: #%s is no heading there", doc.name, link, anchor)
			}
		}
	}
	if n < 80 {
		t.Errorf("only %d relative links found", n)
	}
}

// TestDocsModulesExist: every sdr module, directive and subcommand that
// README.md and docs/ name is in the built binary, so the docs never
// document a module that did not land.
func TestDocsModulesExist(t *testing.T) {
	t.Parallel()
	out, err := runCaddy(t, cleanEnv(), "", "list-modules")
	if err != nil {
		t.Fatalf("caddy list-modules: %v\n%s", err, out)
	}
	help, err := runCaddy(t, cleanEnv(), "", "help")
	if err != nil {
		t.Fatalf("caddy help: %v\n%s", err, help)
	}
	known := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		id := strings.TrimSpace(l)
		known[id] = true
		if i := strings.LastIndex(id, "."); i >= 0 {
			known[id[i+1:]] = true // the directive or app name
		}
	}
	// Compose resources (the sdr_ipc volume) share the prefix.
	p, err := loadCompose(t, testenv.Root(), []string{"docker-compose.yml"}, []string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	for v := range p.Volumes {
		known[v] = true
	}
	for _, doc := range docFiles(t) {
		for _, m := range subcommand.FindAllStringSubmatch(doc.text, -1) {
			if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(m[1]) + `\s`).MatchString(help) {
				t.Errorf("%s names the subcommand %s, which caddy help does not list", doc.name, m[1])
			}
		}
		for _, m := range moduleName.FindAllStringSubmatch(doc.text, -1) {
			if name := m[1]; !known[name] && !notModules[name] {
				t.Errorf("%s names %s, which the built binary does not have", doc.name, name)
			}
		}
	}
}

// notModules are names that look like a module's and are not one: the
// logger of the environment preparation, the Compose project name.
var notModules = map[string]bool{"sdr_env": true, "sdr_os": true}

// TestReadmeIsAnIndex: the README stays an index of at most 12 KB that links
// every page of docs/; the reference lives in those pages.
func TestReadmeIsAnIndex(t *testing.T) {
	t.Parallel()
	md := readme(t)
	if len(md) > 12<<10 {
		t.Errorf("README.md is %d bytes; keep it under %d and move reference into docs/", len(md), 12<<10)
	}
	for _, doc := range docFiles(t)[1:] {
		if !strings.Contains(md, "| ["+doc.name+"]("+doc.name+") |") {
			t.Errorf("README.md's table of pages lacks %s", doc.name)
		}
	}
}

var (
	jsonKeyTable = regexp.MustCompile("(?m)^\\| JSON key[^\\n]*\\n\\|[-|]+\\n((?:\\|[^\\n]*\\n)+)")
	backtickKey  = regexp.MustCompile("`([a-z0-9_.]+)`")
	jsonTag      = regexp.MustCompile(`json:"([a-z0-9_]+)`)
)

// TestDocsJSONKeysExist: every key in a JSON key table of the README or
// docs/ (a table whose header begins "| JSON key") is a JSON field of a
// module (a `json:"..."` tag under caddymodule), so a renamed or removed
// option cannot stay documented.
func TestDocsJSONKeysExist(t *testing.T) {
	t.Parallel()
	tags := map[string]bool{}
	err := filepath.WalkDir(filepath.Join(testenv.Root(), "caddymodule"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range jsonTag.FindAllStringSubmatch(string(b), -1) {
			tags[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, doc := range docFiles(t) {
		for _, tb := range jsonKeyTable.FindAllStringSubmatch(doc.text, -1) {
			for _, row := range strings.Split(strings.TrimSpace(tb[1]), "\n") {
				cells := strings.Split(row, "|")
				if len(cells) < 3 {
					continue
				}
				for _, m := range backtickKey.FindAllStringSubmatch(cells[1], -1) {
					for _, seg := range strings.Split(m[1], ".") {
						n++
						if !tags[seg] {
							t.Errorf("%s documents the JSON key %s (%s), which no module has", doc.name, m[1], seg)
						}
					}
				}
			}
		}
	}
	if n < 100 {
		t.Errorf("only %d JSON keys found in the tables of README.md and docs/", n)
	}
}

// docFile is one Markdown file of the documentation.
type docFile struct {
	name string // relative to the repository root: README.md, docs/x.md
	text string
}

// docFiles returns README.md and every docs/*.md.
func docFiles(t *testing.T) []docFile {
	t.Helper()
	root := testenv.Root()
	names, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 10 {
		t.Fatalf("only %d pages in docs/", len(names))
	}
	files := []docFile{{name: "README.md", text: readme(t)}}
	for _, p := range names {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, docFile{name: "docs/" + filepath.Base(p), text: string(b)})
	}
	return files
}
