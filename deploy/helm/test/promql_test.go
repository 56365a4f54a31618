package test

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// TestAlertRulesParse: the rendered PrometheusRule's groups load as
// Prometheus loads a rule file: valid PromQL, durations and annotation
// templates.
func TestAlertRulesParse(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{
		"production":      ciValues("production"),
		"custom selector": append(slices.Clone(threeValues), "--set", "prometheusRule.enabled=true", "--set", `prometheusRule.selector=cluster="eu-1"\,job=~"relay.*"`),
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := render(t, args...)
			var pr struct {
				Spec json.RawMessage `json:"spec"`
			}
			decodeLenient(t, r, "PrometheusRule", &pr)
			spec, err := yaml.JSONToYAML(pr.Spec)
			if err != nil {
				t.Fatal(err)
			}
			groups, errs := rulefmt.Parse(spec, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
			for _, err := range errs {
				t.Errorf("rules do not load: %v", err)
			}
			if groups == nil || len(groups.Groups) == 0 || len(groups.Groups[0].Rules) == 0 {
				t.Fatal("no rules loaded")
			}
		})
	}
}

// TestDashboardQueriesParse: every query of the dashboard is valid PromQL
// once Grafana has put its variables in.
func TestDashboardQueriesParse(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "datagrid-relay.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "expr" {
					exprs = append(exprs, s)
				} else {
					walk(x)
				}
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	if len(exprs) < 10 {
		t.Fatalf("found %d queries in the dashboard", len(exprs))
	}
	grafana := strings.NewReplacer("$__rate_interval", "1m", "$__range", "6h", "$namespace", "relay", "$job", "relay-datagrid-relay|other", "$cluster", ".*", "$instance", ".+")
	p := parser.NewParser(parser.Options{})
	for _, e := range exprs {
		if _, err := p.ParseExpr(grafana.Replace(e)); err != nil {
			t.Errorf("query %q: %v", e, err)
		}
	}
}
