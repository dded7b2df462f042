package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// profiles are the SDR_OS compose profiles docker-compose.yml keeps.
var profiles = []string{"sim", "dev", "train", "obs", "cuda", "rocm", "mlx"}

// loadCompose parses compose files with compose-go, the loader Docker
// Compose v2 itself uses (schema validation, interpolation, normalization and
// its consistency checks), with only the given environment.
func loadCompose(t *testing.T, dir string, files []string, profiles []string, env ...string) (*types.Project, error) {
	t.Helper()
	return loadComposeChecked(t, true, dir, files, profiles, env...)
}

// loadComposeChecked is loadCompose with compose-go's consistency checks
// (what `docker compose` refuses to run) on or off. Files are relative to
// dir unless absolute.
func loadComposeChecked(t *testing.T, consistency bool, dir string, files []string, profiles []string, env ...string) (*types.Project, error) {
	t.Helper()
	abs := make([]string, len(files))
	for i, f := range files {
		abs[i] = f
		if !filepath.IsAbs(f) {
			abs[i] = filepath.Join(dir, f)
		}
	}
	opts, err := cli.NewProjectOptions(abs,
		cli.WithWorkingDirectory(dir),
		cli.WithEnv(env),
		cli.WithProfiles(profiles),
		cli.WithConsistency(consistency),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, fmt.Errorf("compose options for %v: %w", files, err)
	}
	return opts.LoadProject(context.Background())
}

// checkReferences reports every reference of an active service that does not
// resolve: networks, named volumes, and dependencies that the profiles leave
// disabled. compose-go checks the first two itself; this check does not rely
// on that.
func checkReferences(p *types.Project) []string {
	var errs []string
	for name, svc := range p.Services {
		for net := range svc.Networks {
			if _, ok := p.Networks[net]; !ok {
				errs = append(errs, fmt.Sprintf("service %s: undefined network %q", name, net))
			}
		}
		for _, v := range svc.Volumes {
			if v.Type != types.VolumeTypeVolume || v.Source == "" {
				continue
			}
			if _, ok := p.Volumes[v.Source]; !ok {
				errs = append(errs, fmt.Sprintf("service %s: undefined volume %q", name, v.Source))
			}
		}
		for dep, d := range svc.DependsOn {
			if _, ok := p.Services[dep]; !ok && d.Required {
				errs = append(errs, fmt.Sprintf("service %s: depends on %q, which profiles %v leave disabled", name, dep, p.Profiles))
			}
		}
		if svc.Image == "" {
			errs = append(errs, fmt.Sprintf("service %s: no image name", name))
		}
	}
	return errs
}

func TestComposeEveryProfileLoads(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	seen := map[string]bool{}
	for _, profile := range profiles {
		p, err := loadCompose(t, root, []string{"docker-compose.yml"}, []string{profile})
		if err != nil {
			t.Fatalf("profile %s: %v", profile, err)
		}
		if len(p.Services) == 0 {
			t.Errorf("profile %s enables no service", profile)
		}
		for _, e := range checkReferences(p) {
			t.Errorf("profile %s: %s", profile, e)
		}
		for name := range p.Services {
			seen[name] = true
		}
	}
	all, err := loadCompose(t, root, []string{"docker-compose.yml"}, []string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	for name := range all.Services {
		if !seen[name] {
			t.Errorf("service %s is in no profile of %v", name, profiles)
		}
	}
	for _, gone := range []string{"webserver", "transport-server"} {
		if _, ok := all.Services[gone]; ok {
			t.Errorf("service %s still present: caddy replaces it", gone)
		}
	}
}

func TestComposeCaddyService(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	for _, profile := range []string{"sim", "dev"} {
		p, err := loadCompose(t, root, []string{"docker-compose.yml"}, []string{profile})
		if err != nil {
			t.Fatal(err)
		}
		c, ok := p.Services["caddy"]
		if !ok {
			t.Fatalf("profile %s: no caddy service", profile)
		}
		if c.Build == nil || c.Build.Dockerfile != "containers/caddy/Dockerfile" || c.Build.Context != root {
			t.Errorf("caddy build = %+v, want containers/caddy/Dockerfile in this repository", c.Build)
		}
		for _, net := range []string{"edge", "backplane"} {
			if _, ok := c.Networks[net]; !ok {
				t.Errorf("caddy is not on network %s", net)
			}
		}
		if !p.Networks["backplane"].Internal {
			t.Errorf("network backplane is not internal")
		}
		published := map[string]bool{}
		for _, port := range c.Ports {
			published[port.Published] = true
		}
		for _, want := range []string{"80", "443", "8080"} {
			if !published[want] {
				t.Errorf("caddy does not publish port %s (published: %v)", want, c.Ports)
			}
		}
		if published["2019"] {
			t.Errorf("caddy publishes the admin port 2019 on the host")
		}
		var shm *types.ServiceVolumeConfig
		for i, v := range c.Volumes {
			if v.Source == "sdr_ipc" {
				shm = &c.Volumes[i]
			}
		}
		if shm == nil || shm.Target != "/dev/shm/sdr_os_ipc" || !shm.ReadOnly {
			t.Errorf("caddy must mount the sdr_ipc volume read-only at /dev/shm/sdr_os_ipc, got %+v", shm)
		}
		// The simulator writes the same volume at the same place.
		if sim, ok := p.Services["genesis-sim"]; ok && shm != nil {
			writes := false
			for _, v := range sim.Volumes {
				writes = writes || (v.Source == "sdr_ipc" && v.Target == shm.Target && !v.ReadOnly)
			}
			if !writes {
				t.Errorf("genesis-sim does not mount sdr_ipc read-write at %s", shm.Target)
			}
		}
		if o := p.Volumes["sdr_ipc"].DriverOpts; o["type"] != "tmpfs" {
			t.Errorf("volume sdr_ipc is not tmpfs: %v", o)
		}
		// Both sites' health, with the image's own client (it has no curl).
		if c.HealthCheck == nil || !slices.Equal(c.HealthCheck.Test, []string{"CMD", "caddy", "sdr-health", "http://127.0.0.1:80/health", "http://127.0.0.1:8080/health"}) {
			t.Errorf("caddy health check %+v, want caddy sdr-health of both sites' /health", c.HealthCheck)
		}
		// The Node app reaches the transport, now in caddy, on the
		// transport-compatible site's port, over a network they share.
		node := p.Services["node"]
		if h := node.Environment["TRANSPORT_HOST"]; h == nil || *h != "caddy" {
			t.Errorf("node TRANSPORT_HOST = %v, want caddy", h)
		}
		listen := ":8080"
		if v := c.Environment["SDR_LISTEN_ADDR"]; v != nil {
			listen = *v
		}
		if tp := node.Environment["TRANSPORT_PORT"]; tp == nil || !strings.HasSuffix(listen, ":"+*tp) {
			t.Errorf("node TRANSPORT_PORT = %v, caddy's transport site listens on %s", tp, listen)
		}
		shared := false
		for net := range node.Networks {
			_, ok := c.Networks[net]
			shared = shared || ok
		}
		if !shared {
			t.Error("node and caddy share no network")
		}
		// Every SDR_* variable the service sets must be one that
		// Caddyfile.example reads, or it has no effect.
		vars := caddyfileVars(t)
		for k := range c.Environment {
			if strings.HasPrefix(k, "SDR_") && !vars[k] {
				t.Errorf("caddy sets %s, which Caddyfile.example does not read", k)
			}
		}
	}
}

func TestComposeNvencOverlay(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	p, err := loadCompose(t, root, []string{"docker-compose.yml", "deploy/compose.nvenc.yml"}, []string{"sim"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range checkReferences(p) {
		t.Error(e)
	}
	c := p.Services["caddy"]
	if c.Build == nil || c.Build.Target != "cuda" {
		t.Errorf("overlay build = %+v, want target cuda", c.Build)
	}
	if caps := c.Environment["NVIDIA_DRIVER_CAPABILITIES"]; caps == nil || !strings.Contains(*caps, "video") {
		t.Errorf("NVIDIA_DRIVER_CAPABILITIES must include video, got %v", caps)
	}
	if c.Deploy == nil || len(c.Deploy.Resources.Reservations.Devices) == 0 {
		t.Errorf("overlay reserves no GPU")
	}
	// The ports survive the merge.
	if len(c.Ports) < 3 {
		t.Errorf("overlay lost ports: %v", c.Ports)
	}
}

// TestComposeCheckerCatchesBrokenFiles proves the checks above can fail: each
// broken file is rejected by the loader or by checkReferences.
func TestComposeCheckerCatchesBrokenFiles(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"undefined network": `
services:
  a:
    image: x
    networks: [nowhere]
`,
		"undefined volume": `
services:
  a:
    image: x
    volumes: ["missing:/data"]
`,
		"dependency disabled by profile": `
services:
  a:
    image: x
    profiles: [one]
    depends_on: {b: {condition: service_started}}
  b:
    image: y
    profiles: [two]
`,
		"unknown key": `
services:
  a:
    image: x
    helthcheck: {test: ["CMD", "true"]}
`,
	}
	for name, yml := range cases {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "compose.yml"), []byte(yml), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := loadCompose(t, dir, []string{"compose.yml"}, []string{"one"})
		if err == nil && len(checkReferences(p)) == 0 {
			t.Errorf("%s: accepted", name)
		}
	}
	// And a sound file passes.
	dir := t.TempDir()
	good := "services:\n  a:\n    image: x\n    profiles: [one]\n    networks: [n]\n    volumes: [\"v:/data\"]\nnetworks:\n  n: {}\nvolumes:\n  v: {}\n"
	if err := os.WriteFile(filepath.Join(dir, "compose.yml"), []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := loadCompose(t, dir, []string{"compose.yml"}, []string{"one"})
	if err != nil {
		t.Fatalf("sound file refused: %v", err)
	}
	if probs := checkReferences(p); len(probs) > 0 {
		t.Errorf("sound file: %v", probs)
	}
}

// TestPrometheusScrapesCaddyMetricsSite checks that Prometheus scrapes the
// caddy service's metrics site (SDR_METRICS_ADDR) and that the admin API,
// with /load and /stop, stays on the container's loopback: Caddyfile.example
// puts it on localhost:2019 unless SDR_ADMIN_ADDR says otherwise.
func TestPrometheusScrapesCaddyMetricsSite(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	p, err := loadCompose(t, root, []string{"docker-compose.yml"}, []string{"sim", "obs"})
	if err != nil {
		t.Fatal(err)
	}
	env := p.Services["caddy"].Environment
	if admin := env["SDR_ADMIN_ADDR"]; admin != nil && !strings.HasPrefix(*admin, "localhost:") && !strings.HasPrefix(*admin, "127.0.0.1:") {
		t.Errorf("caddy service sets SDR_ADMIN_ADDR=%s: the admin API leaves loopback", *admin)
	}
	metrics := env["SDR_METRICS_ADDR"]
	if metrics == nil {
		t.Fatal("caddy service does not set SDR_METRICS_ADDR: the metrics site stays on loopback, out of Prometheus's reach")
	}
	port, ok := strings.CutPrefix(*metrics, ":")
	if !ok {
		t.Fatalf("SDR_METRICS_ADDR %q: want :<port>, every interface of the container (it publishes no port)", *metrics)
	}
	for _, pc := range p.Services["caddy"].Ports {
		if pc.Published == port || pc.Target == mustAtoi(t, port) {
			t.Errorf("caddy publishes the metrics port %s on the host", port)
		}
	}
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, filepath.Join(root, "deploy/prometheus/prometheus.yml"), &cfg)
	found := false
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			if slices.Contains(st.Targets, "caddy:"+port) && (sc.MetricsPath == "" || sc.MetricsPath == "/metrics") {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("prometheus.yml does not scrape caddy:%s/metrics", port)
	}
	prom := p.Services["prometheus"]
	mounted := map[string]string{}
	for _, v := range prom.Volumes {
		if v.Type == types.VolumeTypeBind {
			mounted[v.Target] = v.Source
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("prometheus mounts %s, which does not exist: %v", v.Source, err)
			}
		}
	}
	for _, rf := range cfg.RuleFiles {
		if _, ok := mounted[rf]; !ok {
			t.Errorf("rule file %s is not mounted into the prometheus service", rf)
		}
	}
}

func mustAtoi(t *testing.T, s string) uint32 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		t.Fatalf("%q is not a port: %v", s, err)
	}
	return uint32(n)
}

// TestComposeRestartPolicies: every long-running service comes back after a
// crash or a reboot of the Docker daemon, unless it was stopped; jobs
// (training, the CI image targets) run once.
func TestComposeRestartPolicies(t *testing.T) {
	t.Parallel()
	p, err := loadCompose(t, testenv.Root(), []string{"docker-compose.yml"}, []string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	jobs := map[string]bool{"training-runner": true, "app-cuda": true, "app-rocm": true, "app-mlx": true}
	for name, svc := range p.Services {
		want := "unless-stopped"
		if jobs[name] {
			want = ""
		}
		if svc.Restart != want {
			t.Errorf("service %s: restart %q, want %q", name, svc.Restart, want)
		}
	}
}
