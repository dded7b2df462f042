package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// The kinds of doc-test block that docs/ needs beside the README's (the list
// is at the top of readme_test.go).

// blockLang is the fence language each kind of block must carry, so that a
// block is highlighted as what it is and a marker cannot sit on a block of
// another language by mistake.
var blockLang = map[string]string{
	"prose": "text", "tree": "text", "usage": "text", "output": "text",
	"make": "sh", "xcaddy": "sh", "caddy-run": "sh", "live": "sh", "run": "sh",
	"shell": "sh", "gpu": "sh", "env": "sh", "docker-build": "sh", "compose": "sh",
	"sdr-os-compose": "sh", "sdr-os-dotenv": "sh",
	"caddyfile": "caddyfile", "caddyfile-site": "caddyfile", "caddyfile-global": "caddyfile",
	"caddyfile-syntax": "caddyfile", "json": "json", "json-app": "json", "json-handler": "json",
	"json-config": "json", "health-json": "json", "ack-json": "json",
	"js-module": "js", "compose-yaml": "yaml", "dockerfile": "dockerfile",
}

// shellChecked are the kinds whose sh blocks are plain shell, linted with
// the pinned shellcheck besides `bash -n`. The others have a parser of their
// own (make, xcaddy, docker, compose lines) and get `bash -n` only.
var shellChecked = map[string]bool{
	"caddy-run": true, "live": true, "run": true, "shell": true, "gpu": true, "env": true,
}

// checkShell parses a sh block with `bash -n` and, for the plain shell
// kinds, lints it with the pinned shellcheck.
func (r *readmeRun) checkShell(b docBlock) error {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(30*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-n")
	cmd.Stdin = strings.NewReader(b.body + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("bash -n: %w\n%s", err, out)
	}
	if !shellChecked[b.kind] {
		return nil
	}
	args := []string{"--norc", "-s", "bash", "-f", "gcc"}
	if b.kind == "env" {
		args = append(args, "-e", "SC2034") // assignments for the environment, used elsewhere
	}
	cmd = exec.CommandContext(ctx, shellcheck(r.t), append(args, "-")...)
	cmd.Stdin = strings.NewReader(b.body + "\n")
	cmd.Env = lintEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("shellcheck: %w\n%s", err, out)
	}
	return nil
}

// --- caddyfile-syntax ------------------------------------------------------

// syntaxLine is one line of a Caddyfile syntax block: its name and the line
// made concrete enough to open its block.
type syntaxLine struct {
	name   string
	opener string // "name args {" with placeholders filled or left out
}

var (
	unknownSub   = regexp.MustCompile(`unknown[^"\n]*subdirective \\?"([^"\\]+)\\?"`) // in a JSON log line, quotes are escaped
	unknownDir   = regexp.MustCompile(`unrecognized (?:directive|global option): ([A-Za-z0-9_.-]+)`)
	placeholder  = regexp.MustCompile(`<[^>]*>`)
	syntaxSpaces = regexp.MustCompile(`\s+`)
)

// concrete fills the words of a syntax line: optional [...] parts are left
// out, <placeholders> become x, a|b takes a, and " | " ends the line (the
// rest is an alternative).
func concrete(line string) []string {
	line = placeholder.ReplaceAllString(line, "x")
	var kept strings.Builder
	depth := 0
	for _, c := range line {
		switch {
		case c == '[':
			depth++
		case c == ']' && depth > 0:
			depth--
		case depth == 0:
			kept.WriteRune(c)
		}
	}
	var out []string
	for _, w := range strings.Fields(kept.String()) {
		if w == "|" {
			break
		}
		if i := strings.Index(w, "|"); i > 0 {
			w = w[:i]
		}
		if w != "..." {
			out = append(out, w)
		}
	}
	return out
}

// syntaxProbes returns one Caddyfile for each line of a syntax block that
// names a directive or subdirective: the line's name alone, inside its
// parents' blocks, inside a site block (site) or the global options block
// (global). Adapting it answers whether the name is known there.
func syntaxProbes(body, where string) (probes []string, names [][]string, err error) {
	var stack []syntaxLine
	global := where == "global"
	lines := strings.Split(body, "\n")
	if global && strings.TrimSpace(lines[0]) != "{" {
		lines = append(append([]string{"{"}, lines...), "}")
	}
	for i, l := range lines {
		if c := strings.Index(l, "#"); c >= 0 {
			l = l[:c]
		}
		l = strings.TrimSpace(syntaxSpaces.ReplaceAllString(l, " "))
		switch {
		case l == "":
			continue
		case l == "}":
			if len(stack) == 0 {
				return nil, nil, fmt.Errorf("line %d: } without a block", i+1)
			}
			stack = stack[:len(stack)-1]
			continue
		case l == "{" && i == 0 && global:
			stack = append(stack, syntaxLine{name: "", opener: "{"})
			continue
		}
		words := concrete(l)
		opens := strings.HasSuffix(l, "{") && !strings.HasSuffix(l, "{ ... }")
		var parents []string
		var path []string
		for _, p := range stack {
			parents = append(parents, p.opener)
			if p.name != "" {
				path = append(path, p.name)
			}
		}
		path = append(path, words[0])
		// The line with its arguments filled in, so that a parser that
		// counts arguments before it looks at the name still gets to the
		// name.
		self := strings.Join(words, " ")
		if opens {
			self = strings.TrimSpace(strings.TrimSuffix(self, "{"))
		}
		probe := strings.Join(parents, "\n") + "\n" + self + "\n" + strings.Repeat("}\n", len(stack))
		if !global {
			probe = ":8089 {\n" + probe + "}\n"
		}
		probes, names = append(probes, probe), append(names, path)
		if opens {
			stack = append(stack, syntaxLine{name: words[0], opener: strings.Join(words, " ")})
		}
	}
	if len(stack) != 0 {
		return nil, nil, fmt.Errorf("a block is not closed")
	}
	if len(probes) == 0 {
		return nil, nil, fmt.Errorf("no directive in the block")
	}
	return probes, names, nil
}

// caddyfileSyntax checks a syntax block (placeholders, alternatives,
// optional parts: it cannot be adapted as it stands): every directive and
// subdirective it names is one the built binary's Caddyfile parser knows in
// that place. Each name is adapted alone inside its parents; the adapter may
// complain about the missing arguments, never that the name is unknown.
func (r *readmeRun) caddyfileSyntax(b docBlock) error {
	if len(b.args) != 1 || (b.args[0] != "site" && b.args[0] != "global") {
		return fmt.Errorf("caddyfile-syntax needs site or global")
	}
	probes, names, err := syntaxProbes(b.body, b.args[0])
	if err != nil {
		return fmt.Errorf("caddyfile-syntax: %w", err)
	}
	// What can fail the test runs here, on the test's goroutine: the probes
	// below only run the binary.
	testenv.CaddyBin(r.t)
	env := r.xdgEnv()
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := range probes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			out, _ := runCaddy(r.t, env, probes[i], "adapt", "--config", "-", "--adapter", "caddyfile")
			for _, re := range []*regexp.Regexp{unknownSub, unknownDir} {
				if m := re.FindStringSubmatch(out); m != nil && slices.Contains(names[i], strings.TrimSuffix(m[1], ",")) {
					errs[i] = fmt.Errorf("%s: %s", strings.Join(names[i], " > "), strings.ReplaceAll(m[0], `\"`, `"`))
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// --- usage -----------------------------------------------------------------

var longFlag = regexp.MustCompile(`--[a-z0-9][a-z0-9-]*`)

// usage checks the synopsis of a command (`caddy sdr-ring inspect [--json]
// [<path>]`, `python3 tests/python/sdr_ring.py write PATH [--size N]`): the
// command exists and every --flag it shows is one its --help lists.
func (r *readmeRun) usage(b docBlock) error {
	var lines []string
	for _, l := range strings.Split(b.body, "\n") {
		switch {
		case strings.TrimSpace(l) == "":
		case (l[0] == ' ' || l[0] == '\t') && len(lines) > 0:
			lines[len(lines)-1] += " " + strings.TrimSpace(l)
		default:
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	if len(lines) == 0 {
		return fmt.Errorf("usage: empty block")
	}
	for _, l := range lines {
		f := strings.Fields(l)
		var argv []string
		switch f[0] {
		case "caddy":
			argv = []string{testenv.CaddyBin(r.t)}
		case "python3":
			if len(f) < 2 {
				return fmt.Errorf("%q: no script", l)
			}
			if _, err := os.Stat(filepath.Join(r.root, f[1])); err != nil {
				return fmt.Errorf("%q: %w", l, err)
			}
			argv, f = []string{"python3", f[1]}, f[1:]
		default:
			return fmt.Errorf("%q: want a caddy or python3 command line", l)
		}
		for _, w := range f[1:] {
			if !regexp.MustCompile(`^[a-z][a-z0-9-]*$`).MatchString(w) {
				break
			}
			argv = append(argv, w)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(30*time.Second))
		cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], "--help")...)
		cmd.Dir = r.root
		cmd.Env = r.xdgEnv()
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("%s --help: %w\n%s", strings.Join(argv, " "), err, out)
		}
		for _, flag := range longFlag.FindAllString(l, -1) {
			if !regexp.MustCompile(regexp.QuoteMeta(flag) + `\b([^-]|$)`).Match(out) {
				return fmt.Errorf("%q: %s is not an option of %s:\n%s", l, flag, strings.Join(argv[1:], " "), out)
			}
		}
	}
	return nil
}

// --- output ----------------------------------------------------------------

var (
	outputKey  = regexp.MustCompile(`^\(?([a-z_][a-z0-9_]*)=`)
	goComment  = regexp.MustCompile(`(?m)^\s*//.*$`)
	numberLike = regexp.MustCompile(`^[0-9.:~+-]`)
)

// sources reads the program text under the given paths (files, or
// directories searched recursively for .go, .sh and .py files other than
// tests), with Go comment lines left out: a sample output must be what the
// code prints, not what a comment says it prints.
func (r *readmeRun) sources(paths []string) (string, error) {
	var buf strings.Builder
	for _, p := range paths {
		err := filepath.WalkDir(filepath.Join(r.root, p), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			ext := filepath.Ext(path)
			if d.Name() != filepath.Base(p) && (strings.HasSuffix(path, "_test.go") || (ext != ".go" && ext != ".sh" && ext != ".py")) {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if ext == ".go" {
				b = goComment.ReplaceAll(b, nil)
			}
			buf.Write(b)
			buf.WriteByte('\n')
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("output: %w", err)
		}
	}
	return buf.String(), nil
}

// output checks a sample of what a program prints (a BENCH line, the
// output of caddy sdr-ring) against the program named by the marker's
// arguments: every key= of the sample is printed by that code, and every
// line without one starts with a word that the code prints.
func (r *readmeRun) output(b docBlock) error {
	if len(b.args) == 0 {
		return fmt.Errorf("output needs the program's files or directories")
	}
	src, err := r.sources(b.args)
	if err != nil {
		return err
	}
	word := func(w string) bool {
		return regexp.MustCompile(`(^|[^A-Za-z0-9_])` + regexp.QuoteMeta(w) + `($|[^A-Za-z0-9_])`).MatchString(src)
	}
	n := 0
	for _, l := range strings.Split(b.body, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		keys := 0
		for _, tok := range f {
			if m := outputKey.FindStringSubmatch(tok); m != nil {
				keys++
				n++
				if !strings.Contains(src, m[1]+"=") {
					return fmt.Errorf("output: %s= is printed by none of %v", m[1], b.args)
				}
			}
		}
		if keys == 0 && !numberLike.MatchString(f[0]) {
			n++
			if !word(f[0]) {
				return fmt.Errorf("output: %q is printed by none of %v", f[0], b.args)
			}
		}
	}
	if n == 0 {
		return fmt.Errorf("output: nothing to check")
	}
	return nil
}

// --- JSON ------------------------------------------------------------------

// jsonValues decodes one or more JSON values that follow each other.
func jsonValues(body string) ([]json.RawMessage, error) {
	dec := json.NewDecoder(strings.NewReader(body))
	var vs []json.RawMessage
	for {
		var v json.RawMessage
		err := dec.Decode(&v)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not JSON: %w", err)
		}
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("no JSON value")
	}
	return vs, nil
}

// jsonKeys returns the keys of a JSON object in their order.
func jsonKeys(raw []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %s", raw)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// jsonHandlers validates each handler object of the block inside an HTTP
// route (a block may hold several, one after the other), beside the apps
// the marker names as app=NAME (with their defaults).
func (r *readmeRun) jsonHandlers(b docBlock) error {
	apps := ""
	for _, a := range b.args {
		name, ok := strings.CutPrefix(a, "app=")
		if !ok || name == "" {
			return fmt.Errorf("json-handler: unknown argument %q", a)
		}
		apps += fmt.Sprintf(`,%q:{}`, name)
	}
	vs, err := jsonValues(b.body)
	if err != nil {
		return err
	}
	for _, v := range vs {
		if err := r.validateJSON(`{"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[` + string(v) + `]}]}}}` + apps + `}}`); err != nil {
			return err
		}
	}
	return nil
}

// --- env -------------------------------------------------------------------

// env checks VAR=value lines for the environment (a .env file, Compose's
// environment:): each variable is one Caddyfile.example reads, or one of
// the SDR_OS override's own settings.
func (r *readmeRun) env(b docBlock) error {
	vars := caddyfileVars(r.t)
	override, err := os.ReadFile(filepath.Join(r.root, sdrOSOverride))
	if err != nil {
		return err
	}
	n := 0
	for _, l := range commandLines(b.body) {
		k, _, ok := strings.Cut(l, "=")
		if !ok || !regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`).MatchString(k) {
			return fmt.Errorf("env: %q is not VAR=value", l)
		}
		if !vars[k] && !bytes.Contains(override, []byte("${"+k)) {
			return fmt.Errorf("env: %s is read neither by Caddyfile.example nor by %s", k, sdrOSOverride)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("env: no variable")
	}
	return nil
}

// --- gpu -------------------------------------------------------------------

// gpu checks command lines that need an NVIDIA GPU and so cannot run here:
// besides bash -n and shellcheck, each runs a script of the repository, and
// a script that dispatches on its first argument (case ... in) has that
// branch.
func (r *readmeRun) gpu(b docBlock) error {
	lines := commandLines(b.body)
	if len(lines) == 0 {
		return fmt.Errorf("gpu: no command")
	}
	for _, l := range lines {
		f := strings.Fields(l)
		src, err := os.ReadFile(filepath.Join(r.root, f[0]))
		if err != nil {
			return fmt.Errorf("gpu: %q: %w", l, err)
		}
		if st, err := os.Stat(filepath.Join(r.root, f[0])); err != nil || st.Mode()&0o111 == 0 {
			return fmt.Errorf("gpu: %s is not executable", f[0])
		}
		if len(f) > 1 && bytes.Contains(src, []byte("case ")) &&
			!regexp.MustCompile(`(?m)^\s*(?:[a-z|-]+\|)?`+regexp.QuoteMeta(f[1])+`(?:\|[a-z|-]+)?\)`).Match(src) {
			return fmt.Errorf("gpu: %s has no %q branch", f[0], f[1])
		}
	}
	return nil
}

// --- compose-yaml, dockerfile ----------------------------------------------

// composeYAML loads a Compose file of the docs with compose-go, after the
// files the marker names (relative to the repository root), with every
// profile.
func (r *readmeRun) composeYAML(b docBlock) error {
	f := filepath.Join(r.t.TempDir(), "compose.doc.yml")
	if err := os.WriteFile(f, []byte(b.body+"\n"), 0o644); err != nil {
		return err
	}
	files := append(slices.Clone(b.args), f)
	p, err := loadCompose(r.t, r.root, files, []string{"*"})
	if err != nil {
		return fmt.Errorf("compose-yaml: %w", err)
	}
	if probs := checkReferences(p); len(probs) > 0 {
		return fmt.Errorf("compose-yaml: %s", strings.Join(probs, "; "))
	}
	return nil
}

// dockerfileBlock parses a Dockerfile of the docs with BuildKit's parser;
// a stage built FROM sdr-caddy's image names the version the image is built
// as.
func (r *readmeRun) dockerfileBlock(b docBlock) error {
	df, err := parseDockerfile([]byte(b.body + "\n"))
	if err != nil {
		return fmt.Errorf("dockerfile: %w", err)
	}
	if len(df.stages) == 0 {
		return fmt.Errorf("dockerfile: no stage")
	}
	for _, st := range df.stages {
		if name, tag, ok := strings.Cut(st.BaseName, ":"); ok && name == sdrOSImage && tag != dockerfileVersion(r.t) {
			return fmt.Errorf("dockerfile: FROM %s, the image is built as %s:%s", st.BaseName, sdrOSImage, dockerfileVersion(r.t))
		}
	}
	if len(df.warnings) > 0 {
		return fmt.Errorf("dockerfile: %s", strings.Join(df.warnings, "; "))
	}
	return nil
}

// --- health-json, ack-json: samples compared with the running example ------

// sameKeys compares the keys of a sample object with those of a real one.
func sameKeys(sample string, real []byte) error {
	want, err := jsonKeys(real)
	if err != nil {
		return err
	}
	got, err := jsonKeys([]byte(sample))
	if err != nil {
		return err
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("keys %v, the running server sends %v (%s)", got, want, real)
	}
	return nil
}

// healthJSON compares a sample of the health JSON with what the running
// Caddyfile.example answers on the transport site: the same fields in the
// same order.
func (r *readmeRun) healthJSON(b docBlock) error {
	e := r.shared.example
	if e == nil {
		return fmt.Errorf("health-json: no running example")
	}
	client := &http.Client{Timeout: testwait.Timeout(10 * time.Second)}
	resp, err := client.Get(e.transport + "/health")
	if err != nil {
		return fmt.Errorf("health-json: %w", err)
	}
	defer resp.Body.Close()
	real, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("health-json: %w", err)
	}
	if err := sameKeys(b.body, real); err != nil {
		return fmt.Errorf("health-json: %w", err)
	}
	return nil
}

// ackJSON compares a sample ack with a real one: the running example is
// sent a 0x04 command that is not JSON, and acks it on
// telemetry.command.ack. The sample's status must be one an ack carries.
func (r *readmeRun) ackJSON(b docBlock) error {
	e := r.shared.example
	if e == nil {
		return fmt.Errorf("ack-json: no running example")
	}
	var sample struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(b.body), &sample); err != nil {
		return fmt.Errorf("ack-json: %w", err)
	}
	if !slices.Contains([]string{"rejected", "gated", "unavailable"}, sample.Status) {
		return fmt.Errorf("ack-json: status %q: an ack says rejected, gated or unavailable", sample.Status)
	}
	real, err := e.ack()
	if err != nil {
		return fmt.Errorf("ack-json: %w", err)
	}
	if err := sameKeys(b.body, real); err != nil {
		return fmt.Errorf("ack-json: %w", err)
	}
	return nil
}

// ack sends the example's /stream/ws a command that is not JSON and returns
// the payload of the ack it answers with.
func (e *example) ack() ([]byte, error) {
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(e.edge, "http")+"/stream/ws", nil)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.WriteMessage(websocket.BinaryMessage, []byte("\x04not json")); err != nil {
		return nil, err
	}
	_ = conn.SetReadDeadline(testwait.Deadline(15 * time.Second))
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return nil, fmt.Errorf("waiting for the ack: %w", err)
		}
		if len(msg) < 3 || msg[0] != 0x02 {
			continue
		}
		n := int(msg[1]) | int(msg[2])<<8
		if len(msg) >= 3+n && string(msg[3:3+n]) == "telemetry.command.ack" {
			return msg[3+n:], nil
		}
	}
}
