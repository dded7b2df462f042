package deploy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/storage"
	"go.yaml.in/yaml/v4"

	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// ruleTests is a rule unit test file in promtool's format (the subset
// deploy/prometheus/alerts_test.yml uses; any other key is an error, so
// that nothing in it is silently skipped).
type ruleTests struct {
	RuleFiles          []string        `yaml:"rule_files"`
	EvaluationInterval model.Duration  `yaml:"evaluation_interval"`
	Tests              []ruleTestGroup `yaml:"tests"`
}

type ruleTestGroup struct {
	Name        string         `yaml:"name"`
	Interval    model.Duration `yaml:"interval"`
	InputSeries []struct {
		Series string `yaml:"series"`
		Values string `yaml:"values"`
	} `yaml:"input_series"`
	AlertRuleTests []struct {
		EvalTime  model.Duration `yaml:"eval_time"`
		Alertname string         `yaml:"alertname"`
		ExpAlerts []struct {
			ExpLabels map[string]string `yaml:"exp_labels"`
		} `yaml:"exp_alerts"`
	} `yaml:"alert_rule_test"`
}

// TestAlertRuleUnitTests runs deploy/prometheus/alerts_test.yml, the unit
// tests `promtool test rules` runs, with the PromQL engine of the
// Prometheus release docker-compose.yml runs: the input series are loaded
// as promtool loads them, each rule is evaluated every evaluation_interval
// from 0 to the test's eval_time with Prometheus's `for` semantics (an
// alert fires once its expression has held at every evaluation for the
// `for` duration), and the alerts firing at eval_time must be exactly the
// expected ones (labels: the expression's, the rule's and alertname).
func TestAlertRuleUnitTests(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(testenv.Root(), "deploy/prometheus")
	b, err := os.ReadFile(filepath.Join(dir, "alerts_test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f ruleTests
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("alerts_test.yml: %v", err)
	}
	if !slices.Equal(f.RuleFiles, []string{"alerts.yml"}) {
		t.Fatalf("alerts_test.yml tests %v, want alerts.yml", f.RuleFiles)
	}
	rules := map[string]alertRule{}
	for _, r := range readAlertRules(t) {
		rules[r.Alert] = r
	}
	every := time.Duration(f.EvaluationInterval)
	if every == 0 {
		every = time.Minute
	}
	tested := map[string]bool{}
	for _, g := range f.Tests {
		t.Run(g.Name, func(t *testing.T) {
			interval := time.Duration(g.Interval)
			if interval == 0 {
				interval = every
			}
			var load strings.Builder
			fmt.Fprintf(&load, "load %s\n", model.Duration(interval))
			for _, s := range g.InputSeries {
				fmt.Fprintf(&load, "  %s %s\n", s.Series, s.Values)
			}
			db := promqltest.LoadedStorage(t, load.String())
			engine := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
			for _, c := range g.AlertRuleTests {
				rule, ok := rules[c.Alertname]
				if !ok {
					t.Fatalf("alerts.yml has no alert %s", c.Alertname)
				}
				tested[c.Alertname] = true
				got := firingAlerts(t, engine, db, rule, every, time.Duration(c.EvalTime))
				var want []string
				for _, a := range c.ExpAlerts {
					l := map[string]string{"alertname": c.Alertname}
					for k, v := range a.ExpLabels {
						l[k] = v
					}
					want = append(want, labels.FromMap(l).String())
				}
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Errorf("%s at %s: firing %v, want %v", c.Alertname, model.Duration(c.EvalTime), got, want)
				}
			}
		})
	}
	// The alerts this change is about are covered.
	for _, a := range []string{"SdrSafetyEstop", "SdrRingNotAttached", "SdrVideoStopped"} {
		if !tested[a] {
			t.Errorf("alerts_test.yml does not test %s", a)
		}
	}
}

// firingAlerts evaluates rule every `every` from 0 to at and returns the
// label sets of its alerts firing at `at`, sorted.
func firingAlerts(t *testing.T, engine *promql.Engine, db storage.Queryable, rule alertRule, every, at time.Duration) []string {
	t.Helper()
	var hold time.Duration
	if rule.For != "" {
		d, err := model.ParseDuration(rule.For)
		if err != nil {
			t.Fatalf("%s: for %q: %v", rule.Alert, rule.For, err)
		}
		hold = time.Duration(d)
	}
	activeAt := map[string]time.Duration{}
	current := map[string]labels.Labels{}
	for ts := time.Duration(0); ts <= at; ts += every {
		q, err := engine.NewInstantQuery(context.Background(), db, nil, rule.Expr, time.Unix(0, 0).Add(ts))
		if err != nil {
			t.Fatalf("%s: %v", rule.Alert, err)
		}
		res := q.Exec(context.Background())
		if res.Err != nil {
			t.Fatalf("%s at %s: %v", rule.Alert, model.Duration(ts), res.Err)
		}
		vec, err := res.Vector()
		if err != nil {
			t.Fatalf("%s: %v", rule.Alert, err)
		}
		seen := map[string]labels.Labels{}
		for _, s := range vec {
			b := labels.NewBuilder(s.Metric)
			b.Del(labels.MetricName)
			for k, v := range rule.Labels {
				b.Set(k, v)
			}
			b.Set(labels.AlertName, rule.Alert)
			l := b.Labels()
			seen[l.String()] = l
			if _, ok := activeAt[l.String()]; !ok {
				activeAt[l.String()] = ts
			}
		}
		for k := range activeAt {
			if _, ok := seen[k]; !ok {
				delete(activeAt, k) // resolved
			}
		}
		current = seen
		q.Close()
	}
	var firing []string
	for k := range current {
		if at-activeAt[k] >= hold {
			firing = append(firing, k)
		}
	}
	slices.Sort(firing)
	return firing
}
