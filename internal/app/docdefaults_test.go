package app

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/switchboardgw/switchboard/internal/lifecycle"
)

// flagDefaultRE finds a default the prose quotes for a flag:
// "`-event-queue`, default 65536" or "(`-drain-window`, default `5s`)".
var flagDefaultRE = regexp.MustCompile("`-([a-z0-9-]+)`,? default `?([^\\s,;)`]+)")

// Every default docs/*.md and README.md quote for a flag is the flag's
// default as the binary registers it, so the docs cannot drift from the code.
func TestDocsQuoteFlagDefaults(t *testing.T) {
	defs := map[string]string{}
	for _, fs := range allFlagSets() {
		fs.VisitAll(func(f *flag.Flag) { defs[f.Name] = f.DefValue })
	}
	files, _ := filepath.Glob("../../docs/*.md")
	files = append(files, "../../README.md")
	checked := 0
	for _, path := range files {
		if filepath.Base(path) == "benchmarks.md" {
			continue // quotes the flags of the bench tools, not of edge and router
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range flagDefaultRE.FindAllStringSubmatch(string(raw), -1) {
			def, ok := defs[m[1]]
			if !ok {
				continue // another program's flag (swbench, swload)
			}
			checked++
			if got := strings.ReplaceAll(m[2], ",", ""); got != def {
				t.Errorf("%s quotes -%s default %q; the code's is %q", path, m[1], m[2], def)
			}
		}
	}
	if checked < 3 {
		t.Fatalf("only %d quoted defaults found: the scanner is broken", checked)
	}
	// docs/protocol.md's table of $connect modes marks the default one.
	raw, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := "`" + string(lifecycle.DefaultConnectMode) + "` (default)"; !strings.Contains(string(raw), want) {
		t.Errorf("docs/protocol.md does not mark %s as the default $connect mode", want)
	}
}
