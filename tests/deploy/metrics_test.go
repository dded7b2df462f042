package deploy

import (
	"encoding/json"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

var (
	sdrMetric  = regexp.MustCompile(`caddy_sdr_[a-z0-9_]+`)
	anyMetric  = regexp.MustCompile(`(?m)^([a-z_:][a-z0-9_:]*)[{ ]`)
	scrapeLine = regexp.MustCompile(`(?m)^(caddy_sdr_[a-z0-9_]+?)(?:_bucket|_sum|_count)?[{ ]`)
	goString   = regexp.MustCompile(`"([a-z0-9_]+)"`)
)

// metricCatalog says whether a caddy_sdr_* metric exists: either a running
// Caddyfile.example exposes it while it streams, or the Go source declares
// it (a name ending in a string literal, the rest of it being a literal or
// the prefix of an exposed name, as in "stream_" + "origin_rejected_total")
// and it has no series yet because its label was never used.
type metricCatalog struct {
	scraped  map[string]bool
	literals map[string]bool
	// all is every series name the metrics site exposes (Caddy's own
	// caddy_http_* included), histogram suffixes and all.
	all map[string]bool
}

func (c *metricCatalog) has(name string) bool {
	if c.scraped[name] {
		return true
	}
	rest := strings.TrimPrefix(name, "caddy_sdr_")
	for i := 0; i < len(rest); i++ {
		if (i > 0 && rest[i-1] != '_') || !c.literals[rest[i:]] {
			continue
		}
		if i == 0 || c.literals[rest[:i]] {
			return true // a literal, or a literal prefix + a literal suffix
		}
		for n := range c.scraped {
			if strings.HasPrefix(n, "caddy_sdr_"+rest[:i]) {
				return true
			}
		}
	}
	return false
}

func newMetricCatalog(t *testing.T) *metricCatalog {
	t.Helper()
	e := startExample(t)
	writeFrames(t, e.ring)
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(e.edge, "http")+"/stream/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(testwait.Deadline(15 * time.Second))
	for i := 0; i < 3; i++ {
		if _, _, err := conn.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
	code, body, _ := get(t, "http://"+e.metrics+"/metrics")
	if code != 200 {
		t.Fatalf("metrics site /metrics = %d", code)
	}
	c := &metricCatalog{scraped: map[string]bool{}, literals: map[string]bool{}, all: map[string]bool{}}
	for _, m := range scrapeLine.FindAllStringSubmatch(body, -1) {
		c.scraped[m[1]] = true
	}
	for _, m := range anyMetric.FindAllStringSubmatch(body, -1) {
		c.all[m[1]] = true
	}
	if len(c.scraped) == 0 {
		t.Fatal("no caddy_sdr_* metric on the metrics site")
	}
	root := testenv.Root()
	for _, dir := range []string{"caddymodule", "internal", "shmring", "nvenc"} {
		_ = filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err == nil {
				for _, m := range goString.FindAllStringSubmatch(string(b), -1) {
					c.literals[m[1]] = true
				}
			}
			return nil
		})
	}
	return c
}

type grafanaVariable struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Query      any    `json:"query"`
	Definition string `json:"definition"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
}

type grafanaMapping struct {
	Type    string `json:"type"`
	Options map[string]struct {
		Text string `json:"text"`
	} `json:"options"`
}

type grafanaDashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []grafanaVariable `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		GridPos     *struct{ X, Y, W, H int } `json:"gridPos"`
		FieldConfig struct {
			Defaults struct {
				Mappings []grafanaMapping `json:"mappings"`
			} `json:"defaults"`
		} `json:"fieldConfig"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// alertRule is one rule of deploy/prometheus/alerts.yml.
type alertRule struct {
	group       string            // the name of the rule's group
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// readAlertRules returns every rule of deploy/prometheus/alerts.yml, in
// order, each with its group's name.
func readAlertRules(t *testing.T) []alertRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Name  string      `yaml:"name"`
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, filepath.Join(testenv.Root(), "deploy/prometheus/alerts.yml"), &f)
	var rules []alertRule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			r.group = g.Name
			rules = append(rules, r)
		}
	}
	return rules
}

// TestMetricNamesExist: every caddy_sdr_* name the dashboard, the alert
// rules, the README and docs/ use is one the binary has, so none of them
// watches or documents a metric that was renamed or never existed.
func TestMetricNamesExist(t *testing.T) {
	root := testenv.Root()
	cat := newMetricCatalog(t)
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("docs/*.md: %v", err)
	}
	files := []string{"deploy/grafana/dashboards/sdr-caddy.json", "deploy/prometheus/alerts.yml", "README.md"}
	for _, d := range docs {
		files = append(files, filepath.Join("docs", filepath.Base(d)))
	}
	documented := map[string]bool{}
	prefixes := map[string]string{} // family -> the file naming it
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range sdrMetric.FindAllString(string(b), -1) {
			if strings.HasPrefix(f, "docs") {
				documented[name] = true
			}
			if strings.HasSuffix(name, "_") { // a family: caddy_sdr_nats_*
				prefixes[name] = f
				continue
			}
			base := name
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if s, ok := strings.CutSuffix(name, suf); ok && cat.has(s) {
					base = s
				}
			}
			if !cat.has(base) {
				t.Errorf("%s uses %s, which sdr-caddy does not expose", f, name)
			}
		}
	}
	for p, f := range prefixes {
		found := false
		for name := range documented {
			found = found || (strings.HasPrefix(name, p) && cat.has(name))
		}
		if !found {
			t.Errorf("%s names the family %s*, of which docs/ documents no metric sdr-caddy exposes", f, p)
		}
	}
	// And every metric Caddyfile.example exposes is documented by its full
	// name, so that a search of docs/ finds it.
	for name := range cat.scraped {
		if !documented[name] {
			t.Errorf("docs/ does not document %s, which Caddyfile.example exposes", name)
		}
	}
	// Every metric a dashboard query selects exists: sdr-caddy's by the
	// catalog, Caddy's own (caddy_http_*, caddy_config_*) on the metrics
	// site of the running example, which has served requests by now.
	for _, e := range dashboardExprs(t) {
		names, err := promQLMetrics(e)
		if err != nil {
			t.Errorf("%s: %v", e, err)
		}
		for _, n := range names {
			base := n
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(n, suf); ok && cat.has(b) {
					base = b
				}
			}
			if !cat.has(base) && !cat.all[n] {
				t.Errorf("the dashboard queries %s, which the metrics site does not expose: %s", n, e)
			}
		}
	}
	// The check can fail.
	if cat.has("caddy_sdr_stream_no_such_metric_total") || cat.has("caddy_sdr_encoder_no_such_total") {
		t.Error("the catalog accepts a metric that does not exist")
	}
}

// TestGrafanaDashboard checks the dashboard's structure and that Grafana is
// provisioned with the kind of data source it asks for.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	b, err := os.ReadFile(filepath.Join(root, "deploy/grafana/dashboards/sdr-caddy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var ds struct {
		Datasources []struct {
			UID  string `yaml:"uid"`
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join(root, "deploy/grafana/provisioning/datasources/prometheus.yml"), &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Fatalf("datasource provisioning: %+v, want one prometheus at http://prometheus:9090 (the compose service)", ds.Datasources)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard without uid, title or panels")
	}
	ids := map[int]bool{}
	exprs := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q has no position", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		// The provisioned Prometheus is what the datasource variable offers
		// (TestGrafanaDashboardPortable).
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the data source variable", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Expr == "" || refs[tg.RefID] {
				t.Errorf("panel %q: empty expression or duplicate refId %q", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			exprs++
		}
	}
	if exprs == 0 {
		t.Error("dashboard has no query")
	}
}

// TestAlertRules checks that every alert says what to do.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	rules := readAlertRules(t)
	for _, rule := range rules {
		if rule.Alert == "" || rule.Expr == "" {
			t.Errorf("group %s: rule without alert name or expr", rule.group)
		}
		if rule.Labels["severity"] == "" || rule.Annotations["summary"] == "" || rule.Annotations["action"] == "" {
			t.Errorf("alert %s: needs labels.severity, annotations.summary and annotations.action", rule.Alert)
		}
	}
	if len(rules) == 0 {
		t.Error("no alert rule")
	}
}

// TestDocsListEveryAlert: the alert table of docs/metrics.md and
// alerts.yml name the same alerts.
func TestDocsListEveryAlert(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(testenv.Root(), "docs/metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	inRules := map[string]bool{}
	for _, rule := range readAlertRules(t) {
		inRules[rule.Alert] = true
		if !strings.Contains(md, "| `"+rule.Alert+"` |") {
			t.Errorf("docs/metrics.md's alert table lacks %s", rule.Alert)
		}
	}
	for _, m := range regexp.MustCompile("(?m)^\\| `(Sdr\\w+)` \\|").FindAllStringSubmatch(md, -1) {
		if !inRules[m[1]] {
			t.Errorf("docs/metrics.md lists the alert %s, which alerts.yml does not have", m[1])
		}
	}
}

// grafanaMacros are the Grafana variables the dashboard's queries use, with
// values that make them plain PromQL.
var grafanaMacros = strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h")

// promQLMetrics parses a PromQL expression with Prometheus's own parser and
// returns the metric names it selects.
func promQLMetrics(expr string) ([]string, error) {
	e, err := parser.ParseExpr(grafanaMacros.Replace(expr))
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && vs.Name != "" {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names, nil
}

// TestPromQLParses: every dashboard query and alert expression is valid
// PromQL, and every metric it selects is Prometheus's (up) or sdr-caddy's
// (caddy_sdr_*; whether each exists is TestMetricNamesExist's job).
func TestPromQLParses(t *testing.T) {
	t.Parallel()
	root := testenv.Root()
	_ = root
	exprs := dashboardExprs(t)
	for _, rule := range readAlertRules(t) {
		exprs = append(exprs, rule.Expr)
	}
	for _, e := range exprs {
		names, err := promQLMetrics(e)
		if err != nil {
			t.Errorf("%s: %v", e, err)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s selects no metric", e)
		}
		for _, n := range names {
			if n != "up" && !strings.HasPrefix(n, "caddy_sdr_") && !strings.HasPrefix(n, "caddy_http_") {
				t.Errorf("%s selects %s, neither up nor a caddy_sdr_ or caddy_http_ metric", e, n)
			}
		}
	}
	// The parser refuses what it should.
	if _, err := promQLMetrics("rate(caddy_sdr_stream_frames_in_total[1m]"); err == nil {
		t.Error("an unbalanced expression parsed")
	}
}

// TestGrafanaDashboardGenerated: the committed dashboard is what
// deploy/grafana/gen_dashboard.py writes, so edits go through the script.
func TestGrafanaDashboardGenerated(t *testing.T) {
	t.Parallel()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found")
	}
	root := testenv.Root()
	out, err := exec.Command(python, filepath.Join(root, "deploy/grafana/gen_dashboard.py")).Output()
	if err != nil {
		t.Fatalf("gen_dashboard.py: %v", err)
	}
	want, err := os.ReadFile(filepath.Join(root, "deploy/grafana/dashboards/sdr-caddy.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(want) {
		t.Error("deploy/grafana/dashboards/sdr-caddy.json differs from what deploy/grafana/gen_dashboard.py writes; regenerate it")
	}
}

// readDashboard reads the committed dashboard.
func readDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.Root(), "deploy/grafana/dashboards/sdr-caddy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	return d
}

// dashboardExprs returns every query of the dashboard.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	var exprs []string
	for _, p := range readDashboard(t).Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	return exprs
}

// TestGrafanaDashboardPortable: the dashboard imports into any Grafana: its
// panels query the data source of a datasource variable (a Prometheus), and
// every selector of every query is narrowed to an instance variable; the
// gate mode shows as ARMED, HOLD and ESTOP; Caddy's own HTTP metrics have
// panels.
func TestGrafanaDashboardPortable(t *testing.T) {
	t.Parallel()
	d := readDashboard(t)
	vars := map[string]grafanaVariable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v := vars["datasource"]; v.Type != "datasource" || v.Query != "prometheus" {
		t.Errorf("datasource variable %+v, want a prometheus data source variable", v)
	}
	if v := vars["instance"]; v.Type != "query" || v.Datasource == nil || v.Datasource.UID != "${datasource}" || !strings.Contains(v.Definition, "instance") {
		t.Errorf("instance variable %+v, want a query of the instance label on ${datasource}", v)
	} else if names, err := promQLMetrics(strings.TrimSuffix(strings.TrimPrefix(v.Definition, "label_values("), ", instance)")); err != nil || len(names) != 1 {
		t.Errorf("instance variable query %q: %v", v.Definition, err)
	}
	http := false
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not query ${datasource}", p.Title)
		}
		for _, tg := range p.Targets {
			e, err := parser.ParseExpr(grafanaMacros.Replace(tg.Expr))
			if err != nil {
				t.Errorf("%s: %v", tg.Expr, err)
				continue
			}
			parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
				vs, ok := n.(*parser.VectorSelector)
				if !ok {
					return nil
				}
				narrowed := false
				for _, m := range vs.LabelMatchers {
					narrowed = narrowed || (m.Name == "instance" && m.Value == "$instance")
				}
				if !narrowed {
					t.Errorf("panel %q: %s is not narrowed to $instance", p.Title, vs)
				}
				if strings.HasPrefix(vs.Name, "caddy_http_") {
					http = true
				}
				if vs.Name == "caddy_sdr_gate_mode" {
					checkGateMappings(t, p.Title, p.FieldConfig.Defaults.Mappings)
				}
				return nil
			})
		}
	}
	if !http {
		t.Error("no panel shows Caddy's caddy_http_* metrics")
	}
}

// checkGateMappings: the gate mode's values read as the protocol's names.
func checkGateMappings(t *testing.T, panel string, mappings []grafanaMapping) {
	t.Helper()
	want := map[string]string{"0": "ARMED", "1": "HOLD", "2": "ESTOP"}
	got := map[string]string{}
	for _, m := range mappings {
		if m.Type != "value" {
			continue
		}
		for v, o := range m.Options {
			got[v] = o.Text
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("panel %q maps the gate mode %v, want %v", panel, got, want)
	}
}
