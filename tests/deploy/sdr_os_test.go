package deploy

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// The SDR_OS swap: deploy/sdr_os/compose.override.yml used from an SDR_OS
// checkout, over SDR_OS's own docker-compose.yml. The fixture
// testdata/sdr_os/docker-compose.yml restates that file's structure; these
// tests merge the override over it for every SDR_OS profile, as
// `docker compose -f docker-compose.yml -f <override>` does.

const (
	sdrOSOverride = "deploy/sdr_os/compose.override.yml"
	sdrOSFixture  = "tests/deploy/testdata/sdr_os"
	// sdrOSImage is the image the override runs, without its tag.
	sdrOSImage = "ghcr.io/sdr-os/sdr-caddy"
)

// sdrOSProfiles are the profiles SDR_OS's compose file names.
var sdrOSProfiles = []string{"dev", "sim", "train", "obs", "tools", "cuda", "rocm", "mlx"}

// sdrOSReplaced are the services the override changes: webserver goes,
// transport-server becomes sdr-caddy. Every other service stays SDR_OS's.
var sdrOSReplaced = []string{"webserver", "transport-server"}

// sdrOSCaddyEnv is the environment of the replaced transport-server with
// none of the override's variables set: what Caddyfile.example reads.
var sdrOSCaddyEnv = map[string]string{
	"SDR_SHM_PATH":      "/dev/shm/sdr_os_ipc/frames",
	"SDR_NATS_URL":      "nats://nats:4222",
	"SDR_WEB_ROOT":      "/srv/www",
	"SDR_NODE_UPSTREAM": "node:3000",
	"SDR_ROS_UPSTREAM":  "ws://host.docker.internal:9090",
	"SDR_HTTP_ADDR":     ":80",
	"SDR_LISTEN_ADDR":   "0.0.0.0:8080",
	"SDR_METRICS_ADDR":  ":9100",
	"SDR_TLS_SITE":      "",
	"SDR_TLS_CERT":      "",
	"SDR_TLS_KEY":       "",
}

// loadSDROS loads the fixture alone (override "") or with the override (a
// path, absolute or relative to the repository root), the way Compose does
// from the SDR_OS checkout: the fixture's directory is the project directory.
func loadSDROS(t *testing.T, consistency bool, override string, profiles []string, env ...string) (*types.Project, error) {
	t.Helper()
	root := testenv.Root()
	files := []string{"docker-compose.yml"}
	if override != "" {
		if !filepath.IsAbs(override) {
			override = filepath.Join(root, override)
		}
		files = append(files, override)
	}
	return loadComposeChecked(t, consistency, filepath.Join(root, sdrOSFixture), files, profiles, env...)
}

// sdrOSProblems merges override over the fixture for every SDR_OS profile
// and returns every way in which the result is not the swap docs/compose.md
// describes.
func sdrOSProblems(t *testing.T, override string) []string {
	t.Helper()
	var errs []string
	for _, profile := range sdrOSProfiles {
		errs = append(errs, sdrOSProfileProblems(t, override, profile)...)
	}
	sim, err := loadSDROS(t, true, override, []string{"sim"})
	if err != nil {
		return append(errs, fmt.Sprintf("profile sim: %v", err))
	}
	errs = append(errs, sdrOSCaddyProblems(t, sim)...)

	// The settings the override reads reach the service.
	set, err := loadSDROS(t, true, override, []string{"sim"},
		"SDR_CADDY_IMAGE=registry.example/sdr-caddy", "SDR_CADDY_VERSION=9.9.9",
		"SDR_CADDY_CPUSET=5,6", "SDR_CADDY_NATS_URL=nats://bus.example:4222",
		"SDR_TLS_SITE=robot.example.ts.net", "SDR_TLS_CERT=/etc/caddy/tls/robot.crt", "SDR_TLS_KEY=/etc/caddy/tls/robot.key")
	if err != nil {
		return append(errs, fmt.Sprintf("profile sim with settings: %v", err))
	}
	c := set.Services["transport-server"]
	if c.Image != "registry.example/sdr-caddy:9.9.9" {
		errs = append(errs, fmt.Sprintf("SDR_CADDY_IMAGE and SDR_CADDY_VERSION give image %q", c.Image))
	}
	if c.CPUSet != "5,6" {
		errs = append(errs, fmt.Sprintf("SDR_CADDY_CPUSET=5,6 gives cpuset %q", c.CPUSet))
	}
	for k, want := range map[string]string{
		"SDR_NATS_URL": "nats://bus.example:4222",
		"SDR_TLS_SITE": "robot.example.ts.net",
		"SDR_TLS_CERT": "/etc/caddy/tls/robot.crt",
		"SDR_TLS_KEY":  "/etc/caddy/tls/robot.key",
	} {
		if got := envValue(c.Environment, k); got != want {
			errs = append(errs, fmt.Sprintf("with the settings, %s = %q, want %q", k, got, want))
		}
	}

	// dev: SDR_OS's nats is not there; an empty SDR_CADDY_NATS_URL gives
	// the embedded server.
	dev, err := loadSDROS(t, true, override, []string{"dev"}, "SDR_CADDY_NATS_URL=")
	if err != nil {
		return append(errs, fmt.Sprintf("profile dev with SDR_CADDY_NATS_URL empty: %v", err))
	}
	if got := envValue(dev.Services["transport-server"].Environment, "SDR_NATS_URL"); got != "" {
		errs = append(errs, fmt.Sprintf("profile dev with SDR_CADDY_NATS_URL empty: SDR_NATS_URL = %q, want empty (embedded server)", got))
	}
	return errs
}

// sdrOSProfileProblems compares the merged model of one profile with the
// fixture's own.
func sdrOSProfileProblems(t *testing.T, override, profile string) []string {
	t.Helper()
	// SDR_OS's own dev profile is invalid: read the fixture without the
	// consistency checks, as the reference model.
	base, err := loadSDROS(t, false, "", []string{profile})
	if err != nil {
		return []string{fmt.Sprintf("profile %s: fixture: %v", profile, err)}
	}
	merged, err := loadSDROS(t, true, override, []string{profile})
	if err != nil {
		return []string{fmt.Sprintf("profile %s: %v", profile, err)}
	}
	var errs []string
	for _, e := range checkReferences(merged) {
		errs = append(errs, fmt.Sprintf("profile %s: %s", profile, e))
	}
	if merged.Name != base.Name {
		errs = append(errs, fmt.Sprintf("profile %s: project name %q, SDR_OS's is %q", profile, merged.Name, base.Name))
	}
	if !reflect.DeepEqual(merged.Networks, base.Networks) || !reflect.DeepEqual(merged.Volumes, base.Volumes) ||
		!reflect.DeepEqual(merged.Secrets, base.Secrets) || !reflect.DeepEqual(merged.Configs, base.Configs) {
		errs = append(errs, fmt.Sprintf("profile %s: top-level networks, volumes, secrets or configs differ from SDR_OS's", profile))
	}
	all, baseAll := merged.AllServices(), base.AllServices()
	if _, ok := all["webserver"]; ok {
		errs = append(errs, fmt.Sprintf("profile %s: webserver is still defined", profile))
	}
	_, on := merged.Services["transport-server"]
	_, baseOn := base.Services["transport-server"]
	if on != baseOn {
		errs = append(errs, fmt.Sprintf("profile %s: transport-server enabled %v, in SDR_OS %v", profile, on, baseOn))
	}
	for name, svc := range baseAll {
		if slices.Contains(sdrOSReplaced, name) {
			continue
		}
		got, ok := all[name]
		_, enabled := merged.Services[name]
		_, baseEnabled := base.Services[name]
		switch {
		case !ok:
			errs = append(errs, fmt.Sprintf("profile %s: service %s is gone", profile, name))
		case enabled != baseEnabled:
			errs = append(errs, fmt.Sprintf("profile %s: service %s enabled %v, in SDR_OS %v", profile, name, enabled, baseEnabled))
		case !reflect.DeepEqual(got, svc):
			errs = append(errs, fmt.Sprintf("profile %s: service %s differs from SDR_OS's:\n%s\nSDR_OS:\n%s", profile, name, serviceYAML(got), serviceYAML(svc)))
		}
	}
	for name := range all {
		if _, ok := baseAll[name]; !ok {
			errs = append(errs, fmt.Sprintf("profile %s: new service %s", profile, name))
		}
	}
	return errs
}

// sdrOSCaddyProblems checks the replaced transport-server of the sim
// profile against the services it serves.
func sdrOSCaddyProblems(t *testing.T, p *types.Project) []string {
	t.Helper()
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, "transport-server: "+fmt.Sprintf(format, a...)) }
	c, ok := p.Services["transport-server"]
	if !ok {
		return []string{"profile sim: no transport-server"}
	}
	base, err := loadSDROS(t, false, "", []string{"sim"})
	if err != nil {
		return []string{err.Error()}
	}
	if want := base.Services["transport-server"].Profiles; !slices.Equal(c.Profiles, want) {
		bad("profiles %v, SDR_OS's are %v", c.Profiles, want)
	}

	// The image, with our configuration inside; nothing built from SDR_OS.
	if c.Build != nil {
		bad("still built from %s: the build section must be reset", c.Build.Context)
	}
	if want := sdrOSImage + ":" + dockerfileVersion(t); c.Image != want {
		bad("image %q, want %q (the version of containers/caddy/Dockerfile)", c.Image, want)
	}

	// Ports: webserver's and transport-server's, on every interface.
	ports := map[string]uint32{}
	for _, pt := range c.Ports {
		ports[pt.HostIP+pt.Published+"/"+pt.Protocol] = pt.Target
	}
	if want := map[string]uint32{"80/tcp": 80, "443/tcp": 443, "8080/tcp": 8080}; !reflect.DeepEqual(ports, want) {
		bad("ports %v, want %v", ports, want)
	}
	// Published ports and host.docker.internal need the non-internal edge
	// network; node and nats are on backplane.
	for _, n := range []string{"edge", "backplane"} {
		if _, ok := c.Networks[n]; !ok {
			bad("not on network %s", n)
		}
	}

	// Mounts: the ring read-only, and SDR_OS's web root and certificates.
	// Every bind source is in the SDR_OS checkout (the project directory),
	// none in ours.
	project := filepath.Join(testenv.Root(), sdrOSFixture)
	mounts := map[string]string{}
	for _, v := range c.Volumes {
		src := v.Source
		if v.Type == types.VolumeTypeBind {
			rel, err := filepath.Rel(project, v.Source)
			if err != nil || strings.HasPrefix(rel, "..") {
				bad("mounts %s, outside the SDR_OS checkout", v.Source)
			}
			src = "./" + filepath.ToSlash(rel)
		}
		mounts[v.Target] = fmt.Sprintf("%s %s ro=%v", v.Type, src, v.ReadOnly)
	}
	wantMounts := map[string]string{
		"/dev/shm/sdr_os_ipc": "volume sdr_ipc ro=true",
		"/srv/www":            "bind ./dist ro=true",
		"/etc/caddy/tls":      "bind ./configs/tls ro=true",
	}
	if !reflect.DeepEqual(mounts, wantMounts) {
		bad("mounts %v, want %v", mounts, wantMounts)
	}

	env := map[string]string{}
	for k := range c.Environment {
		env[k] = envValue(c.Environment, k)
	}
	if !reflect.DeepEqual(env, sdrOSCaddyEnv) {
		bad("environment %v, want %v", env, sdrOSCaddyEnv)
	}

	// The ring is where genesis-sim writes it.
	sim := p.Services["genesis-sim"]
	writes := false
	for _, v := range sim.Volumes {
		if v.Source == "sdr_ipc" && !v.ReadOnly && strings.HasPrefix(env["SDR_SHM_PATH"], v.Target+"/") {
			writes = true
		}
	}
	if !writes {
		bad("SDR_SHM_PATH %s is not in the sdr_ipc volume genesis-sim writes", env["SDR_SHM_PATH"])
	}
	if env["SDR_WEB_ROOT"] != "/srv/www" || mounts["/srv/www"] == "" {
		bad("SDR_WEB_ROOT %s is not where ./dist is mounted", env["SDR_WEB_ROOT"])
	}

	// The Node app reaches the transport under its old name and port.
	node := p.Services["node"]
	if h := envValue(node.Environment, "TRANSPORT_HOST"); p.Services[h].Name != "transport-server" {
		bad("node's TRANSPORT_HOST %q is not this service", h)
	}
	if port := envValue(node.Environment, "TRANSPORT_PORT"); !strings.HasSuffix(env["SDR_LISTEN_ADDR"], ":"+port) {
		bad("node's TRANSPORT_PORT %s, the transport site listens on %s", port, env["SDR_LISTEN_ADDR"])
	}
	if !shareNetwork(c, node) {
		bad("shares no network with node")
	}
	if host, port, _ := strings.Cut(env["SDR_NODE_UPSTREAM"], ":"); host != "node" || !slices.Contains(node.Expose, port) {
		bad("SDR_NODE_UPSTREAM %s is not node's exposed port (%v)", env["SDR_NODE_UPSTREAM"], node.Expose)
	}

	// ROS: rosbridge is on the host network; its host name must resolve.
	if ros := p.Services["ros-bridge"]; ros.NetworkMode != "host" {
		bad("ros-bridge network_mode %q: the fixture no longer matches SDR_OS", ros.NetworkMode)
	}
	if u, err := url.Parse(env["SDR_ROS_UPSTREAM"]); err != nil || u.Port() != "9090" ||
		!slices.Contains(c.ExtraHosts[u.Hostname()], "host-gateway") {
		bad("SDR_ROS_UPSTREAM %s does not reach the host's port 9090 (extra_hosts %v)", env["SDR_ROS_UPSTREAM"], c.ExtraHosts)
	}

	// NATS: SDR_OS's nats service, on a shared network, when it runs.
	if u, err := url.Parse(env["SDR_NATS_URL"]); err != nil || !shareNetwork(c, p.Services[u.Hostname()]) {
		bad("SDR_NATS_URL %s is not a service on its networks", env["SDR_NATS_URL"])
	}
	dep, ok := c.DependsOn["nats"]
	if len(c.DependsOn) != 1 || !ok || dep.Required || dep.Condition != types.ServiceConditionHealthy {
		bad("depends_on %v, want only nats, healthy, not required (it is not in dev)", c.DependsOn)
	}

	// Off the simulator's CPUs.
	mine, err := cpuList(c.CPUSet)
	if err != nil {
		bad("%v", err)
	}
	theirs, err := cpuList(sim.CPUSet)
	if err != nil || len(theirs) == 0 {
		bad("genesis-sim cpuset %q: the fixture no longer matches SDR_OS", sim.CPUSet)
	}
	if len(mine) == 0 {
		bad("no cpuset: the fan-out may run on the simulator's CPUs %s", sim.CPUSet)
	}
	for cpu := range mine {
		if theirs[cpu] {
			bad("cpuset %q overlaps genesis-sim's %q", c.CPUSet, sim.CPUSet)
			break
		}
	}

	// The health check asks both sites, with a tool the image has.
	hc := c.HealthCheck
	if hc == nil || len(hc.Test) < 2 || (hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL") {
		bad("health check %+v", hc)
	} else {
		cmd := strings.Join(hc.Test[1:], " ")
		_, listenPort, _ := strings.Cut(env["SDR_LISTEN_ADDR"], ":")
		for _, want := range []string{"127.0.0.1" + env["SDR_HTTP_ADDR"] + "/health", "127.0.0.1:" + listenPort + "/health"} {
			if !strings.Contains(cmd, want) {
				bad("health check %q does not ask %s", cmd, want)
			}
		}
		installed := runtimePackages(t)
		for _, tool := range []string{"curl", "wget"} {
			if regexp.MustCompile(`\b`+tool+`\b`).MatchString(cmd) && !slices.Contains(installed, tool) {
				bad("health check runs %s, which the runtime image does not install", tool)
			}
		}
	}
	return errs
}

// envValue returns the value of k in a resolved environment, "" when unset.
func envValue(env types.MappingWithEquals, k string) string {
	if v := env[k]; v != nil {
		return *v
	}
	return ""
}

func shareNetwork(a, b types.ServiceConfig) bool {
	for n := range a.Networks {
		if _, ok := b.Networks[n]; ok {
			return true
		}
	}
	return false
}

// cpuList parses a cpuset list such as "0-2,5".
func cpuList(s string) (map[int]bool, error) {
	cpus := map[int]bool{}
	if s == "" {
		return cpus, nil
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || b < a {
			return nil, fmt.Errorf("cpuset %q: %q is not a CPU or range", s, part)
		}
		for i := a; i <= b; i++ {
			cpus[i] = true
		}
	}
	return cpus, nil
}

func serviceYAML(s types.ServiceConfig) string {
	b, err := (&types.Project{Services: types.Services{s.Name: s}}).MarshalYAML()
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// dockerfileVersion returns the default of ARG SDR_CADDY_VERSION in
// containers/caddy/Dockerfile, the version the runtime image is labelled
// with.
func dockerfileVersion(t *testing.T) string {
	t.Helper()
	df := readDockerfile(t, "containers/caddy/Dockerfile")
	version := ""
	for _, a := range df.metaArgs {
		for _, kv := range a.Args {
			if kv.Key == "SDR_CADDY_VERSION" && kv.Value != nil {
				version = *kv.Value
			}
		}
	}
	if version == "" {
		t.Fatal("containers/caddy/Dockerfile has no ARG SDR_CADDY_VERSION=<version> before its first FROM")
	}
	label, ok := "", false
	for _, st := range df.chain(df.stage("runtime")) {
		for _, c := range st.Commands {
			if l, isLabel := c.(*instructions.LabelCommand); isLabel {
				for _, kv := range l.Labels {
					if kv.Key == "org.opencontainers.image.version" {
						label, ok = strings.Trim(kv.Value, `"`), true
					}
				}
			}
		}
	}
	if !ok || label != "${SDR_CADDY_VERSION}" {
		t.Errorf("the runtime image's org.opencontainers.image.version label is %q, want ${SDR_CADDY_VERSION}", label)
	}
	return version
}

// runtimePackages returns the apt packages of the runtime image.
func runtimePackages(t *testing.T) []string {
	t.Helper()
	df := readDockerfile(t, "containers/caddy/Dockerfile")
	return df.aptPackages(df.stage("runtime"))
}

// TestSDROSFixtureDevIsInvalid pins the fact the override works around:
// SDR_OS's own file cannot start its dev profile.
func TestSDROSFixtureDevIsInvalid(t *testing.T) {
	t.Parallel()
	_, err := loadSDROS(t, true, "", []string{"dev"})
	if err == nil || !strings.Contains(err.Error(), `"nats"`) {
		t.Errorf("fixture, profile dev: %v; SDR_OS's transport-server depends on nats, which dev lacks", err)
	}
	for _, profile := range []string{"sim", "train", "obs", "tools", "cuda", "rocm", "mlx"} {
		if _, err := loadSDROS(t, true, "", []string{profile}); err != nil {
			t.Errorf("fixture, profile %s: %v", profile, err)
		}
	}
}

// TestSDROSOverride merges the override over the fixture for every SDR_OS
// profile: webserver is gone, transport-server is sdr-caddy, and every other
// service's resolved model is the fixture's own.
func TestSDROSOverride(t *testing.T) {
	t.Parallel()
	for _, e := range sdrOSProblems(t, sdrOSOverride) {
		t.Error(e)
	}
}

// TestSDROSOverrideCheckerCatchesMistakes proves the checks can fail: each
// broken copy of the override is reported.
func TestSDROSOverrideCheckerCatchesMistakes(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile(filepath.Join(testenv.Root(), sdrOSOverride))
	if err != nil {
		t.Fatal(err)
	}
	good := string(src)
	cases := map[string][2]string{
		"webserver kept":               {"  webserver: !reset null\n", ""},
		"environment merged":           {"environment: !override", "environment:"},
		"nats dependency required":     {"        required: false\n", ""},
		"build kept":                   {"    build: !reset null\n", ""},
		"no host-gateway":              {"    extra_hosts:\n      - \"host.docker.internal:host-gateway\"\n", ""},
		"on the simulator's CPUs":      {"${SDR_CADDY_CPUSET:-0,1}", "${SDR_CADDY_CPUSET:-1,2}"},
		"health check with wget":       {`"caddy", "sdr-health", "http://127.0.0.1:80/health"`, `"wget", "-q", "http://127.0.0.1:80/health"`},
		"health check with curl":       {`"caddy", "sdr-health", "http://127.0.0.1:80/health"`, `"curl", "-fsS", "http://127.0.0.1:80/health"`},
		"health check of one site":     {`, "http://127.0.0.1:8080/health"]`, "]"},
		"another service touched":      {"services:\n", "services:\n  genesis-sim:\n    environment: {SDR_NATS_URL: nats://nats:4222}\n"},
		"project renamed":              {"services:\n", "name: sdr-caddy\nservices:\n"},
		"mount from our checkout":      {"      - ./dist:/srv/www:ro\n", "      - ./dist:/srv/www:ro\n      - ../sdr-caddy/Caddyfile.example:/etc/caddy/Caddyfile:ro\n"},
		"other image version":          {"${SDR_CADDY_VERSION:-0.1.0}", "${SDR_CADDY_VERSION:-latest}"},
		"TLS settings not passed":      {"${SDR_TLS_SITE:-}", "example.ts.net"},
		"NATS URL from SDR_NATS_URL":   {"${SDR_CADDY_NATS_URL-nats://nats:4222}", "${SDR_NATS_URL-nats://nats:4222}"},
		"empty NATS URL means default": {"${SDR_CADDY_NATS_URL-nats://nats:4222}", "${SDR_CADDY_NATS_URL:-nats://nats:4222}"},
		"port 8080 dropped":            {`      - "8080:8080"` + "\n", ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if !strings.Contains(good, c[0]) {
				t.Fatalf("the override no longer contains %q", c[0])
			}
			f := filepath.Join(t.TempDir(), "compose.override.yml")
			if err := os.WriteFile(f, []byte(strings.Replace(good, c[0], c[1], 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			if probs := sdrOSProblems(t, f); len(probs) == 0 {
				t.Error("accepted")
			}
		})
	}
}

// TestSDROSOverrideVariablesAreRead: every SDR_* variable the override sets
// is one Caddyfile.example (the image's /etc/caddy/Caddyfile) reads, or it
// has no effect.
func TestSDROSOverrideVariablesAreRead(t *testing.T) {
	t.Parallel()
	vars := caddyfileVars(t)
	for k := range sdrOSCaddyEnv {
		if !vars[k] {
			t.Errorf("the override sets %s, which Caddyfile.example does not read", k)
		}
	}
}

// TestSDROSDocs checks the commands of docs/compose.md: the image build, and
// the Compose lines run from an SDR_OS checkout with sdr-caddy in
// ../sdr-caddy (loaded against the fixture).
func TestSDROSDocs(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	md, err := os.ReadFile(filepath.Join(root, "docs/compose.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"v2.24.4", "docker-compose` 1.29"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("docs/compose.md does not say %q (the Compose version the override needs)", want)
		}
	}
	// The user the image runs as, which must be able to read SDR_OS's files.
	df, err := os.ReadFile(filepath.Join(root, "containers/caddy/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`useradd [^\n]*--uid (\d+)`).FindSubmatch(df); m == nil {
		t.Error("containers/caddy/Dockerfile adds no user with a fixed uid")
	} else if !strings.Contains(string(md), "(uid "+string(m[1])+")") {
		t.Errorf("docs/compose.md does not give the image's uid, %s", m[1])
	}
	blocks, err := parseDocBlocks(string(md))
	if err != nil {
		t.Fatal(err)
	}
	r := &readmeRun{t: t, root: root}
	seen := map[string]int{}
	for _, b := range blocks {
		seen[b.kind]++
		if err := checkComposeDocBlock(t, r, b); err != nil {
			t.Errorf("docs/compose.md:%d (%s): %v", b.line, b.kind, err)
		}
	}
	for _, kind := range []string{"docker-build", "sdr-os-compose", "sdr-os-dotenv"} {
		if seen[kind] == 0 {
			t.Errorf("docs/compose.md has no %s block", kind)
		}
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "(docs/compose.md)") {
		t.Error("README.md does not link docs/compose.md")
	}
}

// checkComposeDocBlock checks one block of docs/compose.md:
//
//	docker-build    as in the README; the tag is the image the override runs
//	sdr-os-compose  `[VAR=value ...] docker compose ...` lines run in the
//	                SDR_OS checkout: they load, and a dev line gives the
//	                embedded NATS server
//	sdr-os-dotenv   lines of SDR_OS's .env: COMPOSE_FILE's files load
func checkComposeDocBlock(t *testing.T, r *readmeRun, b docBlock) error {
	t.Helper()
	switch b.kind {
	case "docker-build":
		if err := r.dockerBuild(b); err != nil {
			return err
		}
		cmds, err := dockerCommands(b.body, "build", map[string]string{"-f": "file", "-t": "tag", "--target": "target"})
		if err != nil {
			return err
		}
		want := sdrOSImage + ":" + dockerfileVersion(t)
		for _, c := range cmds {
			if c.last("tag") != want {
				return fmt.Errorf("%q: tag %q, the override runs %s", c.line, c.last("tag"), want)
			}
		}
		return nil
	case "sdr-os-compose":
		for _, l := range commandLines(b.body) {
			var env []string
			f := strings.Fields(l)
			for len(f) > 0 && regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(f[0]) {
				env, f = append(env, f[0]), f[1:]
			}
			cmds, err := dockerCommands(strings.Join(f, " "), "compose", map[string]string{"-f": "file", "--file": "file", "--profile": "profile"})
			if err != nil {
				return err
			}
			c := cmds[0]
			p, err := loadSDRCheckout(t, c.opts["file"], c.opts["profile"], env...)
			if err != nil {
				return fmt.Errorf("%q: %w", l, err)
			}
			if slices.Contains(c.opts["profile"], "dev") {
				if got := envValue(p.Services["transport-server"].Environment, "SDR_NATS_URL"); got != "" {
					return fmt.Errorf("%q: dev has no nats service, but SDR_NATS_URL is %q", l, got)
				}
			}
		}
		return nil
	case "sdr-os-dotenv":
		for _, l := range commandLines(b.body) {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				return fmt.Errorf("%q is not VAR=value", l)
			}
			if k != "COMPOSE_FILE" {
				continue
			}
			p, err := loadSDRCheckout(t, strings.Split(v, ":"), []string{"sim"})
			if err != nil {
				return fmt.Errorf("%q: %w", l, err)
			}
			if p.Services["transport-server"].Image == "sdr_os-transport" {
				return fmt.Errorf("%q: the override is not applied", l)
			}
		}
		return nil
	}
	return fmt.Errorf("unknown doc-test kind %q", b.kind)
}

// loadSDRCheckout loads compose files named as from an SDR_OS checkout:
// docker-compose.yml is the fixture, ../sdr-caddy/ this repository.
func loadSDRCheckout(t *testing.T, files, profiles []string, env ...string) (*types.Project, error) {
	t.Helper()
	if len(files) == 0 {
		files = []string{"docker-compose.yml"}
	}
	if files[0] != "docker-compose.yml" {
		return nil, fmt.Errorf("the first file is %s, not SDR_OS's docker-compose.yml", files[0])
	}
	override := ""
	switch {
	case len(files) == 1:
	case len(files) == 2 && strings.HasPrefix(files[1], "../sdr-caddy/"):
		override = strings.TrimPrefix(files[1], "../sdr-caddy/")
	default:
		return nil, fmt.Errorf("files %v: want docker-compose.yml and ../sdr-caddy/%s", files, sdrOSOverride)
	}
	p, err := loadSDROS(t, true, override, profiles, env...)
	if err != nil {
		return nil, err
	}
	if probs := checkReferences(p); len(probs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(probs, "; "))
	}
	return p, nil
}
