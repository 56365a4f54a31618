package test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

const dashboardFile = "../datagrid-relay/dashboards/datagrid-relay.json"

// grafanaDashboard is the part of the dashboard JSON the checks read.
type grafanaDashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Editable   bool   `json:"editable"`
	Templating struct {
		List []grafanaVar `json:"list"`
	} `json:"templating"`
	Links []struct {
		URL string `json:"url"`
	} `json:"links"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaVar struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Query      any    `json:"query"`
	IncludeAll bool   `json:"includeAll"`
	AllValue   string `json:"allValue"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
}

type grafanaPanel struct {
	ID          int    `json:"id"`
	Title       string `json:"title"`
	Type        string `json:"type"`
	Description string `json:"description"`
	Datasource  *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		Instant    bool   `json:"instant"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

func readDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// leafPanels returns every panel that is not a row, rows' panels included.
func leafPanels(ps []grafanaPanel) []grafanaPanel {
	var out []grafanaPanel
	for _, p := range ps {
		out = append(out, leafPanels(p.Panels)...)
		if p.Type != "row" {
			out = append(out, p)
		}
	}
	return out
}

// grafanaUnits are the unit ids of Grafana's value formats the dashboard
// may use (packages/grafana-data/src/valueFormats/categories.ts).
var grafanaUnits = map[string]bool{
	"none": true, "short": true, "percent": true, "percentunit": true, "bytes": true, "decbytes": true,
	"s": true, "ms": true, "reqps": true, "ops": true, "bool": true, "bool_yes_no": true, "bool_on_off": true,
	"dateTimeFromNow": true, "cps": true, "rps": true, "wps": true,
}

// templateVars are the variables every query must use, with the matcher
// each query must carry.
var templateVars = map[string]string{
	"cluster":   `cluster=~"$cluster"`,
	"namespace": `namespace="$namespace"`,
	"job":       `job=~"$job"`,
	"instance":  `instance=~"$instance"`,
}

// TestDashboardLint checks the rules of Grafana's dashboard linter
// (template-datasource, template-job, template-instance,
// template-label-promql, panel-datasource, panel-units, target-promql,
// target-rate-interval, target-job, target-instance) plus the pack's own:
// not editable, a cluster and a namespace variable used by every query,
// counts over $__range or a fixed window, a description on every panel.
func TestDashboardLint(t *testing.T) {
	t.Parallel()
	d := readDashboard(t)
	if d.Editable {
		t.Error("dashboard is editable; want editable: false (it is provisioned from the chart)")
	}
	p := parser.NewParser(parser.Options{})
	vars := map[string]grafanaVar{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || v.Query != "prometheus" {
		t.Errorf("datasource variable %+v, want type datasource, query prometheus", v)
	}
	labelValues := regexp.MustCompile(`^label_values\((.*), ([a-z_]+)\)$`)
	for name := range templateVars {
		v, ok := vars[name]
		if !ok {
			t.Errorf("no %q template variable", name)
			continue
		}
		if v.Type != "query" || v.Datasource == nil || v.Datasource.UID != "$datasource" {
			t.Errorf("variable %s: type %q datasource %+v, want a query on $datasource", name, v.Type, v.Datasource)
		}
		q, _ := v.Query.(map[string]any)
		qs, _ := q["query"].(string)
		m := labelValues.FindStringSubmatch(qs)
		if m == nil || m[2] != name {
			t.Errorf("variable %s: query %q, want label_values(<selector>, %s)", name, qs, name)
			continue
		}
		if _, err := p.ParseExpr(grafanaExpand(m[1], "1m", "1h")); err != nil {
			t.Errorf("variable %s: %q: %v", name, m[1], err)
		}
		if name != "namespace" && (!v.IncludeAll || v.AllValue == "") {
			t.Errorf("variable %s: want includeAll with an allValue (a cluster label may be absent)", name)
		}
	}

	rangeFn := regexp.MustCompile(`([a-z_]+)\([^()\[\]]*\[([^\]]+)\]`)
	fixed := regexp.MustCompile(`^[0-9]+[smhdw]$`)
	panels := leafPanels(d.Panels)
	if len(panels) < 20 {
		t.Errorf("%d panels; want the whole dashboard", len(panels))
	}
	ids := map[int]bool{}
	for _, pn := range panels {
		if ids[pn.ID] {
			t.Errorf("panel %q: id %d used twice", pn.Title, pn.ID)
		}
		ids[pn.ID] = true
		if !grafanaUnits[pn.FieldConfig.Defaults.Unit] {
			t.Errorf("panel %q: unit %q, want one of Grafana's units", pn.Title, pn.FieldConfig.Defaults.Unit)
		}
		if strings.TrimSpace(pn.Description) == "" {
			t.Errorf("panel %q: no description", pn.Title)
		}
		if pn.Datasource == nil || pn.Datasource.UID != "$datasource" {
			t.Errorf("panel %q: datasource %+v, want $datasource", pn.Title, pn.Datasource)
		}
		if len(pn.Targets) == 0 {
			t.Errorf("panel %q: no query", pn.Title)
		}
		for _, tg := range pn.Targets {
			if tg.Datasource != nil && tg.Datasource.UID != "$datasource" {
				t.Errorf("panel %q: target datasource %q, want $datasource", pn.Title, tg.Datasource.UID)
			}
			expr, err := p.ParseExpr(grafanaExpand(tg.Expr, "1m", "6h"))
			if err != nil {
				t.Errorf("panel %q: %q: %v", pn.Title, tg.Expr, err)
				continue
			}
			// Every selector carries the four variables' matchers.
			for _, sel := range parser.ExtractSelectors(expr) {
				have := map[string]bool{}
				for _, m := range sel {
					have[m.String()] = true
				}
				for _, want := range templateVars {
					if !have[strings.NewReplacer("$cluster", ".*", "$namespace", "relay-ns", "$job", ".+", "$instance", ".+").Replace(want)] {
						t.Errorf("panel %q: selector %v lacks %s", pn.Title, sel, want)
					}
				}
				if !slices.ContainsFunc(sel, func(m *labels.Matcher) bool { return m.Name == labels.MetricName }) {
					t.Errorf("panel %q: selector %v names no metric", pn.Title, sel)
				}
			}
			for _, m := range rangeFn.FindAllStringSubmatch(tg.Expr, -1) {
				fn, r := m[1], m[2]
				switch {
				case (fn == "rate" || fn == "irate") && r != "$__rate_interval":
					t.Errorf("panel %q: %s over [%s], want [$__rate_interval]", pn.Title, fn, r)
				case fn != "rate" && fn != "irate" && r != "$__range" && !fixed.MatchString(r):
					t.Errorf("panel %q: %s over [%s], want [$__range] or a fixed window", pn.Title, fn, r)
				}
			}
		}
	}
}

// grafanaExpand substitutes the dashboard's variables as Grafana would with
// "All" selected.
func grafanaExpand(expr, rateInterval, rng string) string {
	return strings.NewReplacer(
		"$__rate_interval", rateInterval, "$__range", rng,
		"$cluster", ".*", "$namespace", "relay-ns", "$job", ".+", "$instance", ".+",
	).Replace(expr)
}

// TestDashboardPerRelease: two releases with the dashboard enabled get
// different uids, titles and file names (Grafana and the sidecar would
// otherwise keep one), and the runbook link follows runbookBaseUrl.
func TestDashboardPerRelease(t *testing.T) {
	t.Parallel()
	type got struct{ key, uid, title, link string }
	dash := func(ns string, args ...string) got {
		out, err := helmTemplate(t, append([]string{"--namespace", ns, "--set", "dashboard.enabled=true"}, append(threeValues, args...)...)...)
		if err != nil {
			t.Fatal(err)
		}
		for _, part := range docSep.Split(out, -1) {
			if strings.Contains(part, "grafana_dashboard") {
				var cm corev1.ConfigMap
				if err := yaml.Unmarshal([]byte(part), &cm); err != nil {
					t.Fatal(err)
				}
				for k, v := range cm.Data {
					var d grafanaDashboard
					if err := json.Unmarshal([]byte(v), &d); err != nil {
						t.Fatal(err)
					}
					if len(d.Links) != 1 {
						t.Fatalf("links %+v, want one runbook link", d.Links)
					}
					return got{k, d.UID, d.Title, d.Links[0].URL}
				}
			}
		}
		t.Fatalf("no dashboard ConfigMap in %s", out)
		return got{}
	}
	a := dash("team-a")
	b := dash("team-b", "--set", "prometheusRule.runbookBaseUrl=https://wiki.example.com/relay/")
	if a.key == b.key || a.uid == b.uid || a.title == b.title {
		t.Errorf("two releases collide: %+v and %+v", a, b)
	}
	if len(a.uid) > 40 || !strings.HasSuffix(a.key, ".json") {
		t.Errorf("uid %q (Grafana allows 40 characters), file %q", a.uid, a.key)
	}
	if b.link != "https://wiki.example.com/relay#alert-runbooks" {
		t.Errorf("runbook link %q, want it from prometheusRule.runbookBaseUrl", b.link)
	}
	if !strings.HasSuffix(a.link, "/docs/operations.md#alert-runbooks") {
		t.Errorf("default runbook link %q", a.link)
	}
	if f := readDashboard(t); a.uid == f.UID {
		t.Errorf("rendered uid %q is the file's", a.uid)
	}
}
