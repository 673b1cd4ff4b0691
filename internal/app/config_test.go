package app

import (
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

func edgeFlags(t *testing.T) (*EdgeConfig, *flag.FlagSet) {
	t.Helper()
	var c EdgeConfig
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	c.RegisterFlags(fs)
	return &c, fs
}

func TestDefaultsAreValid(t *testing.T) {
	c, fs := edgeFlags(t)
	if err := Parse(fs, nil, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if c.NATSEmbedListen == "127.0.0.1:4222" {
		t.Fatal("the embedded NATS default collides with a standard NATS server")
	}
}

func TestEnvironmentSetsFlagsAndTheCommandLineWins(t *testing.T) {
	c, fs := edgeFlags(t)
	env := map[string]string{
		"SWITCHBOARD_MAX_FRAME_BYTES": "4096",
		"SWITCHBOARD_IDLE_TIMEOUT":    "1m",
		"SWITCHBOARD_LISTEN":          "127.0.0.1:1",
		"SWITCHBOARD_ALLOWED_ORIGINS": "https://a.example, https://b.example",
	}
	if err := Parse(fs, []string{"-listen", "127.0.0.1:2"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if c.Edge.MaxFrameBytes != 4096 || c.Edge.IdleTimeout != time.Minute {
		t.Fatalf("environment not applied: %+v", c.Edge)
	}
	if c.Edge.Listen != "127.0.0.1:2" {
		t.Fatalf("listen %q: the command line must win over the environment", c.Edge.Listen)
	}
	if len(c.Edge.AllowedOrigins) != 2 || c.Edge.AllowedOrigins[1] != "https://b.example" {
		t.Fatalf("list parsing: %q", c.Edge.AllowedOrigins)
	}
}

func TestBadValuesAreClearErrors(t *testing.T) {
	c, fs := edgeFlags(t)
	err := Parse(fs, nil, func(k string) string {
		if k == "SWITCHBOARD_IDLE_TIMEOUT" {
			return "soon"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "SWITCHBOARD_IDLE_TIMEOUT") {
		t.Fatalf("bad env value: %v, want an error naming the variable", err)
	}
	c, fs = edgeFlags(t)
	_ = Parse(fs, []string{"-connect-mode", "maybe", "-max-frame-bytes", "10"}, func(string) string { return "" })
	err = c.Validate()
	if err == nil || !strings.Contains(err.Error(), "connect mode") || !strings.Contains(err.Error(), "max frame bytes") {
		t.Fatalf("Validate: %v, want both problems named", err)
	}
}

// docs/configuration.md must document every flag (and so every variable).
func TestConfigurationDocCoversEveryFlag(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, fs := range allFlagSets() {
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(string(doc), "`-"+f.Name+"`") || !strings.Contains(string(doc), EnvName(f.Name)) {
				t.Errorf("docs/configuration.md does not document %s -%s (%s)", fs.Name(), f.Name, EnvName(f.Name))
			}
		})
	}
}

func allFlagSets() []*flag.FlagSet {
	var c EdgeConfig
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	c.RegisterFlags(fs)
	var r RouterConfig
	rfs := flag.NewFlagSet("router", flag.ContinueOnError)
	r.RegisterFlags(rfs)
	return []*flag.FlagSet{fs, rfs}
}

// UPDATE_DOCS=1 go test ./internal/app -run TestConfigurationTables
// rewrites the flag tables of docs/configuration.md; without it the test
// fails when they are out of date.
func TestConfigurationTables(t *testing.T) {
	const path = "../../docs/configuration.md"
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	want := doc
	for _, fs := range allFlagSets() {
		open, end := "<!-- flags:"+fs.Name()+" -->\n", "<!-- /flags:"+fs.Name()+" -->"
		i, j := strings.Index(want, open), strings.Index(want, end)
		if i < 0 || j < i {
			t.Fatalf("%s: markers for %s missing", path, fs.Name())
		}
		want = want[:i+len(open)] + FlagTable(fs) + want[j:]
	}
	if want == doc {
		return
	}
	if os.Getenv("UPDATE_DOCS") != "" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("%s is out of date: run UPDATE_DOCS=1 go test ./internal/app -run TestConfigurationTables", path)
}
