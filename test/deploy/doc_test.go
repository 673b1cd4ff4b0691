// Package deploy_test checks the deployment artefacts without a container
// engine, a cluster or any tool but Go: the Dockerfile (parsed; the binaries
// it builds must be static), docker-compose.yml (loaded with compose-go), the
// Helm chart (linted and rendered with helm's Go packages as `helm lint
// --strict` and `helm template` do, every manifest parsed strictly and
// validated with kubectl-validate's validator against the Kubernetes
// schemas), the Grafana dashboard and the Prometheus alert rules (every
// metric they query must exist in the code).
//
// It is a Go module of its own (test/deploy/go.mod), so helm's and
// Kubernetes' libraries stay out of the gateway's go.mod; kubectl-validate
// lives in a further module, test/deploy/kubeschema, because it needs older
// Kubernetes libraries than helm. `make test` runs both.
package deploy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
)

var (
	// repoRoot is the repository root: test/deploy is two levels down.
	repoRoot string
	// binDir holds the binaries imageBinaries builds; removed after the run.
	binDir string
)

func TestMain(m *testing.M) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		fmt.Fprintln(os.Stderr, "cannot locate the test file")
		os.Exit(2)
	}
	repoRoot = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	var err error
	if binDir, err = os.MkdirTemp("", "switchboard-deploy-test-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	_ = os.RemoveAll(binDir)
	os.Exit(code)
}

func root(testing.TB) string { return repoRoot }

func readFile(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root(t), rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return b
}

var metricNameRE = regexp.MustCompile(`Name:\s*"(switchboard_[a-z0-9_]+)"`)

// exportedMetrics is every switchboard_* metric name declared in the code
// (cmd/, internal/, pkg/), read from the source so the dashboard and alerts
// are checked against what the binaries really export.
func exportedMetrics(t testing.TB) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, dir := range []string{"cmd", "internal", "pkg"} {
		base := filepath.Join(root(t), dir)
		err := filepath.WalkDir(base, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) && path == base {
					return filepath.SkipDir
				}
				return err
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range metricNameRE.FindAllSubmatch(src, -1) {
				names[string(m[1])] = true
			}
			return nil
		})
		if err != nil {
			t.Fatalf("scan %s for metric names: %v", dir, err)
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in the code: the scan is broken", len(names))
	}
	return names
}

var (
	promQuoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promIdent  = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
)

// queriedMetrics returns the metric names a PromQL expression mentions:
// switchboard_*, go_* and process_* identifiers outside string literals.
func queriedMetrics(expr string) []string {
	expr = promQuoted.ReplaceAllString(expr, `""`)
	seen := map[string]bool{}
	var out []string
	for _, id := range promIdent.FindAllString(expr, -1) {
		if (strings.HasPrefix(id, "switchboard_") || strings.HasPrefix(id, "go_") || strings.HasPrefix(id, "process_")) && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// metricExists reports whether name is an exported series: a declared
// metric, or a histogram's _bucket/_sum/_count series. go_ and process_
// series come from client_golang's collectors and are taken on trust.
func metricExists(known map[string]bool, name string) bool {
	if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
		return true
	}
	if known[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && known[base] {
			return true
		}
	}
	return false
}

func TestQueriedMetricsIgnoresLabelsAndStrings(t *testing.T) {
	got := queriedMetrics(`sum by (instance) (rate(switchboard_a_total{job=~"switchboard_fake|x",reason="go_away"}[5m])) / go_goroutines`)
	want := []string{"go_goroutines", "switchboard_a_total"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("queriedMetrics = %v, want %v", got, want)
	}
	known := map[string]bool{"switchboard_h_seconds": true}
	if !metricExists(known, "switchboard_h_seconds_bucket") || metricExists(known, "switchboard_missing_total") {
		t.Fatal("metricExists: histogram series or unknown name misjudged")
	}
}
