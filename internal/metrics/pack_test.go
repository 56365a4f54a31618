package metrics_test

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/datagrid-relay/relay/internal/bootstrap"
	"github.com/datagrid-relay/relay/internal/datagrid"
	"github.com/datagrid-relay/relay/internal/ingress"
	"github.com/datagrid-relay/relay/internal/metrics"
)

// The observability pack shipped with the Helm chart, and the runbook its
// alerts link to. They name metrics by string, so a renamed metric would
// silently empty a panel or disarm an alert; these tests catch that.
const (
	chartDir       = "../../deploy/helm/datagrid-relay"
	dashboardPath  = chartDir + "/dashboards/datagrid-relay.json"
	rulesPath      = chartDir + "/templates/prometheusrule.yaml"
	operationsPath = "../../docs/operations.md"
)

var (
	metricName = regexp.MustCompile(`datagrid_relay_[a-z0-9_]+`)
	// outcomeMatcher finds outcome label matchers in PromQL: outcome="x",
	// outcome=~"x|y", outcome!~"x".
	outcomeMatcher = regexp.MustCompile(`outcome\s*(=~|!~|!=|=)\s*"([^"]*)"`)
)

// exported returns the metric families the relay registers.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	// The metrics with the series their owners declare at start.
	m := metrics.New(reg, metrics.BuildInfo{Version: "test", Revision: "test", GoVersion: "test"})
	ingress.NewHandler(ingress.Config{Metrics: m})
	bootstrap.NewRegistrar(nil, nil, bootstrap.Config{}, zap.NewNop(), m, nil)
	m.DeclareAPIOps(datagrid.Ops())
	m.ReadyCheck.WithLabelValues("nats")
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	return names
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(path))
	if err != nil {
		t.Fatalf("read the observability pack: %v", err)
	}
	return string(b)
}

// TestPackUsesExportedMetrics: every datagrid_relay_* name in the dashboard,
// the alerts and the runbook is a metric the relay exports (histogram series
// count as their family).
func TestPackUsesExportedMetrics(t *testing.T) {
	have := exported(t)
	for _, path := range []string{dashboardPath, rulesPath, operationsPath} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			text := readFile(t, path)
			used := map[string]bool{}
			for _, name := range metricName.FindAllString(text, -1) {
				used[familyOf(name, have)] = true
			}
			if len(used) == 0 && path != operationsPath {
				t.Fatalf("no datagrid_relay_ metric in %s", path)
			}
			for _, name := range sortedKeys(used) {
				if !have[name] {
					t.Errorf("%s uses %s, which the relay does not export (it exports %v)", path, name, relayMetrics(have))
				}
			}
		})
	}
}

// familyOf strips the _bucket, _count or _sum of a histogram series,
// unless the full name is itself a family.
func familyOf(name string, have map[string]bool) string {
	if have[name] {
		return name
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			return base
		}
	}
	return name
}

// TestPackOutcomes: outcome values the pack filters on are ones the relay
// uses, so a renamed outcome cannot silently empty an alert.
func TestPackOutcomes(t *testing.T) {
	known := map[string]bool{}
	for _, o := range []bootstrap.Outcome{bootstrap.ReconcileOK, bootstrap.ReconcileRepaired, bootstrap.ReconcileFailed} {
		known[string(o)] = true
	}
	for _, o := range ingress.Outcomes() {
		known[string(o)] = true
	}
	for _, path := range []string{dashboardPath, rulesPath} {
		// JSON escapes the quotes of PromQL strings.
		text := strings.ReplaceAll(readFile(t, path), `\"`, `"`)
		matches := outcomeMatcher.FindAllStringSubmatch(text, -1)
		if len(matches) == 0 {
			t.Errorf("%s filters on no outcome", path)
		}
		for _, m := range matches {
			for _, v := range strings.Split(m[2], "|") {
				if !known[v] {
					t.Errorf("%s: outcome%s%q: %q is not an outcome the relay reports", path, m[1], m[2], v)
				}
			}
		}
	}
}

// dashboard is the part of a Grafana dashboard the checks need.
type dashboard struct {
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr       string `json:"expr"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// TestDashboard: the dashboard picks its data source from $datasource, uses
// $__rate_interval for every range, and shows what the issue asks for.
func TestDashboard(t *testing.T) {
	text := readFile(t, dashboardPath)
	var d dashboard
	if err := json.Unmarshal([]byte(text), &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	hasVar := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus" {
			hasVar = true
		}
	}
	if !hasVar {
		t.Error(`no "datasource" template variable of type datasource (query prometheus)`)
	}
	for _, want := range []string{"$datasource", "$__rate_interval", "histogram_quantile("} {
		if !strings.Contains(text, want) {
			t.Errorf("dashboard does not use %s", want)
		}
	}

	// A range and the function it feeds: rates use $__rate_interval (as
	// Grafana's linter wants), counts over a window use $__range or a fixed
	// window, never $__rate_interval (whose length changes with the zoom).
	rangeSel := regexp.MustCompile(`([a-z_]+)\([^()\[\]]*\[([^\]]+)\]`)
	fixedWindow := regexp.MustCompile(`^[0-9]+[smhdw]$`)
	var exprs []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "$datasource" {
				t.Errorf("panel %q: datasource %+v, want uid $datasource", p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q: no query", p.Title)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
				if tg.Datasource != nil && tg.Datasource.UID != "$datasource" {
					t.Errorf("panel %q: target datasource %q, want $datasource", p.Title, tg.Datasource.UID)
				}
				for _, m := range rangeSel.FindAllStringSubmatch(tg.Expr, -1) {
					switch fn, r := m[1], m[2]; {
					case (fn == "rate" || fn == "irate") && r != "$__rate_interval":
						t.Errorf("panel %q: %s over [%s] in %q, want [$__rate_interval]", p.Title, fn, r, tg.Expr)
					case fn != "rate" && fn != "irate" && r != "$__range" && !fixedWindow.MatchString(r):
						t.Errorf("panel %q: %s over [%s] in %q, want [$__range] or a fixed window", p.Title, fn, r, tg.Expr)
					}
				}
			}
		}
	}
	walk(d.Panels)

	all := strings.Join(exprs, "\n")
	for what, want := range map[string]string{
		"delivery rate":           "rate(datagrid_relay_deliveries_total",
		"errors by reason":        "sum by (outcome)",
		"delivery latency":        "datagrid_relay_delivery_duration_seconds_bucket",
		"publish latency":         "datagrid_relay_nats_publish_duration_seconds_bucket",
		"in flight":               "datagrid_relay_deliveries_in_flight",
		"NATS state":              "datagrid_relay_nats_connected",
		"registration state":      "datagrid_relay_registration_healthy",
		"signing secrets":         "datagrid_relay_signing_secrets",
		"time since last publish": "datagrid_relay_last_published_timestamp_seconds",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("dashboard shows no %s (%s)", what, want)
		}
	}
}

// TestAlerts: every alert in the PrometheusRule template has a summary, a
// description and a runbook_url whose anchor is a section of
// docs/operations.md.
func TestAlerts(t *testing.T) {
	text := readFile(t, rulesPath)
	anchors := headingAnchors(readFile(t, operationsPath))

	blocks := strings.Split(text, "- alert: ")[1:]
	if len(blocks) == 0 {
		t.Fatal("no alert in the PrometheusRule template")
	}
	seen := map[string]bool{}
	for _, b := range blocks {
		name := strings.TrimSpace(strings.SplitN(b, "\n", 2)[0])
		if seen[name] {
			t.Errorf("alert %s defined twice", name)
		}
		seen[name] = true
		for _, key := range []string{"expr", "summary", "description", "runbook_url", "severity"} {
			if !regexp.MustCompile(`(?m)^\s+` + key + `:\s*\S`).MatchString(b) {
				t.Errorf("alert %s: no %s", name, key)
			}
		}
		m := regexp.MustCompile(`runbook_url:\s*(.+)`).FindStringSubmatch(b)
		if m == nil {
			continue
		}
		// The base URL is a template value; the anchor is literal.
		_, anchor, ok := strings.Cut(strings.TrimSpace(m[1]), "#")
		if !ok {
			t.Errorf("alert %s: runbook_url %q has no #anchor", name, m[1])
			continue
		}
		if anchor != strings.ToLower(name) {
			t.Errorf("alert %s: runbook anchor #%s, want #%s", name, anchor, strings.ToLower(name))
		}
		if !anchors[anchor] {
			t.Errorf("alert %s: docs/operations.md has no section #%s", name, anchor)
		}
		if !metricName.MatchString(strings.SplitN(b, "for:", 2)[0]) && name != "DatagridRelayDown" {
			t.Errorf("alert %s: expression uses no datagrid_relay_ metric", name)
		}
	}

	// The default runbook base is the operations guide.
	values := readFile(t, chartDir+"/values.yaml")
	m := regexp.MustCompile(`(?m)^\s*runbookBaseUrl:\s*(\S+)`).FindStringSubmatch(values)
	if m == nil {
		t.Fatal("values.yaml: no prometheusRule.runbookBaseUrl")
	}
	if u, err := url.Parse(m[1]); err != nil || !strings.HasSuffix(u.Path, "/docs/operations.md") {
		t.Errorf("runbookBaseUrl %q, want a URL of docs/operations.md", m[1])
	}
}

// headingAnchors returns the anchors GitHub gives the Markdown headings of
// doc: lower case, punctuation dropped, spaces as hyphens.
func headingAnchors(doc string) map[string]bool {
	anchors := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	inFence := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		slug := drop.ReplaceAllString(strings.ToLower(title), "")
		anchors[strings.ReplaceAll(slug, " ", "-")] = true
	}
	return anchors
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// relayMetrics lists the datagrid_relay_ families of have, for messages.
func relayMetrics(have map[string]bool) []string {
	var names []string
	for _, n := range sortedKeys(have) {
		if strings.HasPrefix(n, metrics.Namespace+"_") {
			names = append(names, n)
		}
	}
	return names
}
