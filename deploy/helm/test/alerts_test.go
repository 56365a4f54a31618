package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
	"sigs.k8s.io/yaml"
)

// The alert unit tests live in testdata/alerts.test.yaml, in the format of
// `promtool test rules`. promtool cannot be `go install`ed, so the file is
// run here with the same library calls promtool makes (cmd/promtool's
// unittest.go): promqltest's lazy loader for the input series, the rules
// manager to load and evaluate the groups, one evaluation per interval.
//
// The rules under test are the ones the chart renders: the test renders
// the PrometheusRule, writes its groups to rules.yaml (the file's
// rule_files) and loads that.
//
// Two things go further than promtool:
//   - A test group whose name starts with "silent:" asserts that no alert
//     of any rule fires at any evaluation, not only the ones it lists.
//   - TestAlertsCovered checks that every alert of the chart fires in some
//     test and that the silent groups for a fresh install, zero traffic
//     and scanner noise exist.
//
// Deviation from promtool: exp_annotations are compared only when given
// (promtool compares them always); labels are compared exactly.

const alertTestFile = "testdata/alerts.test.yaml"

// Namespace and job of the test series: what the chart's default selector
// selects for `helm template relay --namespace relay-ns`.
const alertSelector = `job="` + fullname + `",namespace="` + namespace + `"`

type ruleTestFile struct {
	RuleFiles          []string       `json:"rule_files"`
	EvaluationInterval model.Duration `json:"evaluation_interval"`
	Tests              []ruleTest     `json:"tests"`
}

type ruleTest struct {
	Name           string            `json:"name"`
	Interval       model.Duration    `json:"interval"`
	StartTimestamp int64             `json:"start_timestamp"`
	InputSeries    []inputSeries     `json:"input_series"`
	AlertRuleTests []alertRuleTest   `json:"alert_rule_test"`
	ExternalLabels map[string]string `json:"external_labels"`
}

type inputSeries struct {
	Series string `json:"series"`
	Values string `json:"values"`
}

type alertRuleTest struct {
	EvalTime  model.Duration `json:"eval_time"`
	Alertname string         `json:"alertname"`
	ExpAlerts []expAlert     `json:"exp_alerts"`
}

type expAlert struct {
	ExpLabels      map[string]string `json:"exp_labels"`
	ExpAnnotations map[string]string `json:"exp_annotations"`
}

// renderedRules renders the chart's PrometheusRule with extra helm args
// and returns its spec (the groups) as rule-file YAML.
func renderedRules(t *testing.T, args ...string) []byte {
	t.Helper()
	r := render(t, append(append(slices.Clone(threeValues), "--set", "prometheusRule.enabled=true"), args...)...)
	var pr struct {
		Spec json.RawMessage `json:"spec"`
	}
	decodeLenient(t, r, "PrometheusRule", &pr)
	spec, err := yaml.JSONToYAML(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func loadRuleTests(t *testing.T) ruleTestFile {
	t.Helper()
	b, err := os.ReadFile(alertTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleTestFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", alertTestFile, err)
	}
	if f.EvaluationInterval == 0 {
		f.EvaluationInterval = model.Duration(time.Minute)
	}
	if len(f.RuleFiles) != 1 || f.RuleFiles[0] != "rules.yaml" {
		t.Fatalf("%s: rule_files %v, want [rules.yaml] (the rules the chart renders)", alertTestFile, f.RuleFiles)
	}
	return f
}

// TestAlerts runs testdata/alerts.test.yaml over the rules the chart
// renders with its default thresholds.
func TestAlerts(t *testing.T) {
	t.Parallel()
	f := loadRuleTests(t)
	rulesFile := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rulesFile, renderedRules(t), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tg := range f.Tests {
		t.Run(tg.Name, func(t *testing.T) {
			t.Parallel()
			for _, err := range runRuleTest(tg, time.Duration(f.EvaluationInterval), rulesFile) {
				t.Error(err)
			}
		})
	}
}

// TestAlertsCovered: every alert the chart renders is shown to fire by some
// test, and the three silent situations are tested.
func TestAlertsCovered(t *testing.T) {
	t.Parallel()
	f := loadRuleTests(t)
	var groups struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(renderedRules(t), &groups); err != nil {
		t.Fatal(err)
	}
	fires := map[string]bool{}
	silent := map[string]bool{}
	for _, tg := range f.Tests {
		if strings.HasPrefix(tg.Name, "silent:") {
			silent[tg.Name] = true
		}
		for _, a := range tg.AlertRuleTests {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !fires[r.Alert] {
				t.Errorf("alert %s: no test in %s shows it firing", r.Alert, alertTestFile)
			}
		}
	}
	if n < 10 {
		t.Errorf("the chart renders %d alerts; want the whole set", n)
	}
	for _, want := range []string{"silent: fresh install", "silent: zero traffic", "silent: scanner noise"} {
		if !silent[want] {
			t.Errorf("%s has no test group %q", alertTestFile, want)
		}
	}
}

// TestAlertRunnerFails: the runner reports an expectation that does not
// hold, so a green TestAlerts means something.
func TestAlertRunnerFails(t *testing.T) {
	t.Parallel()
	rulesFile := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rulesFile, renderedRules(t), 0o600); err != nil {
		t.Fatal(err)
	}
	up := inputSeries{Series: `up{` + alertSelector + `,instance="a"}`, Values: "1x30"}
	cases := map[string]ruleTest{
		"expects a firing alert that does not fire": {
			Name:        "wrong",
			InputSeries: []inputSeries{up},
			AlertRuleTests: []alertRuleTest{{EvalTime: model.Duration(20 * time.Minute), Alertname: "DatagridRelayDown",
				ExpAlerts: []expAlert{{ExpLabels: map[string]string{"severity": "critical"}}}}},
		},
		"silent group where an alert fires": {
			Name:           "silent: wrong",
			InputSeries:    []inputSeries{{Series: `up{` + alertSelector + `,instance="a"}`, Values: "0x30"}},
			AlertRuleTests: []alertRuleTest{{EvalTime: model.Duration(20 * time.Minute), Alertname: "DatagridRelayNotReady"}},
		},
	}
	for name, tg := range cases {
		if errs := runRuleTest(tg, time.Minute, rulesFile); len(errs) == 0 {
			t.Errorf("%s: the runner reported no error", name)
		}
	}
}

// runRuleTest evaluates one test group as promtool does and returns every
// mismatch.
func runRuleTest(tg ruleTest, evalInterval time.Duration, rulesFile string) []error {
	interval := time.Duration(tg.Interval)
	if interval == 0 {
		interval = evalInterval
	}
	var load strings.Builder
	fmt.Fprintf(&load, "load %s\n", model.Duration(interval))
	for _, s := range tg.InputSeries {
		fmt.Fprintf(&load, "  %s %s\n", s.Series, s.Values)
	}
	start := time.Unix(tg.StartTimestamp, 0).UTC()
	suite, err := promqltest.NewLazyLoader(load.String(), promqltest.LazyLoaderOpts{
		EnableAtModifier: true, EnableNegativeOffset: true, StartTime: start,
	})
	if err != nil {
		return []error{fmt.Errorf("input series: %w", err)}
	}
	defer suite.Close()
	suite.SubqueryInterval = evalInterval

	p := parser.NewParser(parser.Options{})
	m := rules.NewManager(&rules.ManagerOptions{
		QueryFunc:  rules.EngineQueryFunc(suite.QueryEngine(), suite.Storage()),
		Appendable: suite.Storage(),
		Context:    context.Background(),
		NotifyFunc: func(context.Context, string, ...*rules.Alert) {},
		Logger:     promslog.NewNopLogger(),
		Parser:     p,
	})
	groupsMap, errs := m.LoadGroups(interval, labels.FromMap(tg.ExternalLabels), "", nil, false, rulesFile)
	if errs != nil {
		return errs
	}
	var groups []*rules.Group
	for _, g := range groupsMap {
		groups = append(groups, g)
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].Name() < groups[j].Name() })
	for _, g := range groups {
		for _, r := range g.Rules() {
			if ar, ok := r.(*rules.AlertingRule); ok {
				ar.SetRestored(true)
			}
		}
	}

	silent := strings.HasPrefix(tg.Name, "silent:")
	byTime := map[model.Duration][]alertRuleTest{}
	var maxEval model.Duration
	for _, a := range tg.AlertRuleTests {
		byTime[a.EvalTime] = append(byTime[a.EvalTime], a)
		maxEval = max(maxEval, a.EvalTime)
	}
	var out []error
	for ts := start; !ts.After(start.Add(time.Duration(maxEval))); ts = ts.Add(evalInterval) {
		var loadErr error
		suite.WithSamplesTill(ts, func(err error) {
			if err != nil {
				loadErr = err
				return
			}
			for _, g := range groups {
				g.Eval(suite.Context(), ts)
			}
		})
		if loadErr != nil {
			return append(out, loadErr)
		}
		at := model.Duration(ts.Sub(start))
		firing := map[string][]*rules.Alert{}
		for _, g := range groups {
			for _, r := range g.Rules() {
				if r.LastError() != nil {
					return append(out, fmt.Errorf("rule %s at %s: %w", r.Name(), at, r.LastError()))
				}
				ar, ok := r.(*rules.AlertingRule)
				if !ok {
					continue
				}
				for _, a := range ar.ActiveAlerts() {
					if a.State == rules.StateFiring {
						firing[ar.Name()] = append(firing[ar.Name()], a)
					}
				}
			}
		}
		if silent {
			for name, as := range firing {
				out = append(out, fmt.Errorf("at %s: %s fires (%s); want no alert in a silent group", at, name, as[0].Labels))
			}
			if len(firing) > 0 {
				return out
			}
		}
		// Like promtool, compare at the evaluation t with t <= eval_time < t+interval.
		for want, tests := range byTime {
			if time.Duration(want) < time.Duration(at) || time.Duration(want) >= time.Duration(at)+evalInterval {
				continue
			}
			for _, a := range tests {
				if err := compareAlerts(a, firing[a.Alertname]); err != nil {
					out = append(out, fmt.Errorf("at %s: %s: %w", a.EvalTime, a.Alertname, err))
				}
			}
		}
	}
	return out
}

// compareAlerts: the firing alerts have exactly the expected label sets
// (alertname added), and the expected annotations where given.
func compareAlerts(a alertRuleTest, got []*rules.Alert) error {
	gotLabels := make([]string, 0, len(got))
	for _, g := range got {
		gotLabels = append(gotLabels, g.Labels.String())
	}
	wantLabels := make([]string, 0, len(a.ExpAlerts))
	for _, e := range a.ExpAlerts {
		l := map[string]string{labels.AlertName: a.Alertname}
		for k, v := range e.ExpLabels {
			l[k] = v
		}
		wantLabels = append(wantLabels, labels.FromMap(l).String())
	}
	sort.Strings(gotLabels)
	sort.Strings(wantLabels)
	if !slices.Equal(gotLabels, wantLabels) {
		return fmt.Errorf("firing alerts\n  got  %v\n  want %v", gotLabels, wantLabels)
	}
	for _, e := range a.ExpAlerts {
		if len(e.ExpAnnotations) == 0 {
			continue
		}
		l := map[string]string{labels.AlertName: a.Alertname}
		for k, v := range e.ExpLabels {
			l[k] = v
		}
		want := labels.FromMap(l)
		for _, g := range got {
			if !labels.Equal(g.Labels, want) {
				continue
			}
			for k, v := range e.ExpAnnotations {
				if gv := g.Annotations.Get(k); gv != v {
					return fmt.Errorf("annotation %s of %s: got %q, want %q", k, want, gv, v)
				}
			}
		}
	}
	return nil
}
