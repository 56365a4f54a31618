package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/template"

	"sigs.k8s.io/yaml"
)

// The chart's README.md is generated, helm-docs style, from
// README.md.gotmpl and the "# --" comments of values.yaml, so that `helm
// show readme` answers with what values.yaml says. TestChartReadme fails
// when README.md is stale; regenerate it with
//
//	UPDATE_README=1 go test -run TestChartReadme ./...
//
// (in deploy/helm/test). The comments follow helm-docs' convention, so
// helm-docs itself would read them too.

// valueDoc is one documented key of values.yaml.
type valueDoc struct {
	Key         string
	Type        string
	Default     string
	Description string
}

var (
	keyLine     = regexp.MustCompile(`^(\s*)([A-Za-z0-9_.-]+):(\s|$)`)
	docStart    = regexp.MustCompile(`^\s*# --(?: (.*))?$`)
	commentLine = regexp.MustCompile(`^\s*#\s?(.*)$`)
)

// valueDocs reads the "# --" comments of values.yaml and the key each
// documents, with the key's default from the parsed file.
func valueDocs(valuesYAML []byte) ([]valueDoc, error) {
	var values map[string]any
	if err := yaml.Unmarshal(valuesYAML, &values); err != nil {
		return nil, err
	}
	type frame struct {
		indent int
		key    string
	}
	var stack []frame
	var docs []valueDoc
	var pending []string
	inDoc := false
	sc := bufio.NewScanner(bytes.NewReader(valuesYAML))
	for sc.Scan() {
		line := sc.Text()
		if m := docStart.FindStringSubmatch(line); m != nil {
			pending, inDoc = []string{m[1]}, true
			continue
		}
		if m := commentLine.FindStringSubmatch(line); m != nil {
			if inDoc {
				pending = append(pending, m[1])
			}
			continue
		}
		if strings.TrimSpace(line) == "" {
			pending, inDoc = nil, false
			continue
		}
		m := keyLine.FindStringSubmatch(line)
		if m == nil { // a list item or a continuation: not a key of ours
			pending, inDoc = nil, false
			continue
		}
		indent := len(m[1])
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		stack = append(stack, frame{indent, m[2]})
		if inDoc {
			var path []string
			for _, f := range stack {
				path = append(path, f.key)
			}
			v, ok := lookup(values, path)
			if !ok {
				return nil, fmt.Errorf("values.yaml: %s documented but not found", strings.Join(path, "."))
			}
			b, err := json.Marshal(v)
			if err != nil {
				return nil, err
			}
			docs = append(docs, valueDoc{
				Key: strings.Join(path, "."), Type: typeOf(v), Default: string(b),
				Description: strings.Join(strings.Fields(strings.Join(pending, " ")), " "),
			})
		}
		pending, inDoc = nil, false
	}
	return docs, sc.Err()
}

func lookup(m map[string]any, path []string) (any, bool) {
	var cur any = m
	for _, k := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func typeOf(v any) string {
	switch v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "list"
	case string:
		return "string"
	case bool:
		return "bool"
	case float64:
		return "number"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// renderReadme renders README.md.gotmpl with the chart's metadata and the
// values table.
func renderReadme(t *testing.T) []byte {
	t.Helper()
	tmpl, err := template.ParseFiles(filepath.Join(chartDir, "README.md.gotmpl"))
	if err != nil {
		t.Fatal(err)
	}
	chartYAML, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var chart map[string]any
	if err := yaml.Unmarshal(chartYAML, &chart); err != nil {
		t.Fatal(err)
	}
	valuesYAML, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := valueDocs(valuesYAML)
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	table.WriteString("| Key | Type | Default | Description |\n| --- | --- | --- | --- |\n")
	cell := strings.NewReplacer("|", `\|`, "\n", " ")
	for _, d := range docs {
		def := d.Default
		if len(def) > 80 {
			def = "see values.yaml"
		} else {
			def = "`" + cell.Replace(def) + "`"
		}
		fmt.Fprintf(&table, "| `%s` | %s | %s | %s |\n", d.Key, d.Type, def, cell.Replace(d.Description))
	}
	var out bytes.Buffer
	if err := tmpl.Execute(&out, map[string]any{"Chart": chart, "ValuesTable": table.String(), "Values": docs}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestChartReadme: README.md is what the template and values.yaml's
// comments make (UPDATE_README=1 rewrites it).
func TestChartReadme(t *testing.T) {
	t.Parallel()
	want := renderReadme(t)
	path := filepath.Join(chartDir, "README.md")
	if os.Getenv("UPDATE_README") != "" {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v; generate it with UPDATE_README=1 go test -run TestChartReadme ./... in deploy/helm/test", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale: regenerate it with UPDATE_README=1 go test -run TestChartReadme ./... in deploy/helm/test", path)
	}
}

// TestValuesDocumented: every top-level key of values.yaml and every leaf
// of the sections the README lists is documented, and the parser finds the
// keys the README needs (so a parser bug cannot empty the table).
func TestValuesDocumented(t *testing.T) {
	t.Parallel()
	valuesYAML, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := valueDocs(valuesYAML)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, d := range docs {
		have[d.Key] = true
		if d.Description == "" {
			t.Errorf("%s: empty description", d.Key)
		}
	}
	for _, want := range []string{"mode", "publicUrl", "capabilitiesCheck", "config.maxInflightBytes", "networkPolicy.egress.enabled",
		"prometheusRule.noDeliveries.for", "httpRoute.parentRefs", "commonLabels", "resources", "deregisterHook.ttlSecondsAfterFinished"} {
		if !have[want] {
			t.Errorf("values.yaml: %s has no \"# --\" comment (documented: %d keys)", want, len(docs))
		}
	}
	var values map[string]any
	if err := yaml.Unmarshal(valuesYAML, &values); err != nil {
		t.Fatal(err)
	}
	for k, v := range values {
		if have[k] {
			continue
		}
		// A section: documented through its keys.
		sub, ok := v.(map[string]any)
		if !ok {
			t.Errorf("values.yaml: top-level %s has no \"# --\" comment", k)
			continue
		}
		documented := false
		for sk := range sub {
			documented = documented || have[k+"."+sk]
		}
		if !documented {
			t.Errorf("values.yaml: section %s documents none of its keys", k)
		}
	}
}
