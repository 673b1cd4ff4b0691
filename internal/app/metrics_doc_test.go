package app

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// metricDoc is one metric as declared in the code.
type metricDoc struct {
	name, kind, help string
	labels           []string
}

// declaredMetrics finds every prometheus.*Opts literal with a Name in the
// non-test sources under root, with the labels of the New…Vec call around it.
func declaredMetrics(t *testing.T, root string) []metricDoc {
	t.Helper()
	var out []metricDoc
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !strings.HasPrefix(sel.Sel.Name, "New") {
				return true
			}
			lit, ok := call.Args[0].(*ast.CompositeLit)
			if !ok {
				return true
			}
			typ, ok := lit.Type.(*ast.SelectorExpr)
			if !ok || !strings.HasSuffix(typ.Sel.Name, "Opts") {
				return true
			}
			m := metricDoc{kind: strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(sel.Sel.Name, "New"), "Vec"))}
			for _, el := range lit.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				key := kv.Key.(*ast.Ident).Name
				if bl, ok := kv.Value.(*ast.BasicLit); ok && (key == "Name" || key == "Help") {
					v, _ := strconv.Unquote(bl.Value)
					if key == "Name" {
						m.name = v
					} else {
						m.help = v
					}
				}
			}
			if len(call.Args) > 1 {
				if labels, ok := call.Args[1].(*ast.CompositeLit); ok {
					for _, el := range labels.Elts {
						if bl, ok := el.(*ast.BasicLit); ok {
							v, _ := strconv.Unquote(bl.Value)
							m.labels = append(m.labels, v)
						}
					}
				}
			}
			if m.name != "" {
				out = append(out, m)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func metricsTable(ms []metricDoc) string {
	var b strings.Builder
	b.WriteString("| metric | type | labels | meaning |\n| --- | --- | --- | --- |\n")
	for _, m := range ms {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", m.name, m.kind, strings.Join(m.labels, ", "), strings.ReplaceAll(m.help, "|", "\\|"))
	}
	return b.String()
}

// docs/metrics.md lists every metric the code declares; UPDATE_DOCS=1
// rewrites its table.
func TestMetricsDocListsEveryMetric(t *testing.T) {
	ms := declaredMetrics(t, "../../internal")
	if len(ms) < 20 {
		t.Fatalf("found only %d metrics: the scanner is broken", len(ms))
	}
	seen := map[string]bool{}
	for _, m := range ms {
		if !strings.HasPrefix(m.name, "switchboard_") {
			t.Errorf("metric %s: every metric is named switchboard_…", m.name)
		}
		if seen[m.name] {
			t.Errorf("metric %s declared twice", m.name)
		}
		seen[m.name] = true
		for _, l := range m.labels {
			if strings.Contains(l, "id") && l != "outcome" {
				t.Errorf("metric %s: label %q looks unbounded", m.name, l)
			}
		}
	}
	const path = "../../docs/metrics.md"
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	open, end := "<!-- metrics -->\n", "<!-- /metrics -->"
	i, j := strings.Index(doc, open), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("%s: metrics markers missing", path)
	}
	want := doc[:i+len(open)] + metricsTable(ms) + doc[j:]
	if want == doc {
		return
	}
	if os.Getenv("UPDATE_DOCS") != "" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("%s is out of date: run make docs", path)
}
