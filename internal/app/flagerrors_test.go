package app

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

// parseEdgeFlags parses args as the edge binary does, with the given
// environment, and returns the error and what the flag set printed.
func parseEdgeFlags(t *testing.T, args []string, env map[string]string) (error, string) {
	t.Helper()
	var cfg EdgeConfig
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	var out bytes.Buffer
	fs.SetOutput(&out)
	cfg.RegisterFlags(fs)
	err := Parse(fs, args, func(k string) string { return env[k] })
	return err, out.String()
}

// One mistyped flag answers with one line naming it and one pointing to
// -help, not the whole usage.
func TestAnUnknownFlagIsOneLineAndAPointerToHelp(t *testing.T) {
	err, printed := parseEdgeFlags(t, []string{"-listn", ":8080"}, nil)
	if err == nil {
		t.Fatal("an unknown flag was accepted")
	}
	want := "flag provided but not defined: -listn\nrun 'edge -help' for every flag"
	if err.Error() != want {
		t.Fatalf("error = %q, want %q", err, want)
	}
	if printed != "" {
		t.Fatalf("printed %d bytes of usage on an error, want none:\n%.300s", len(printed), printed)
	}
}

func TestADurationWithoutAUnitSaysSo(t *testing.T) {
	err, _ := parseEdgeFlags(t, []string{"-idle-timeout", "10"}, nil)
	if err == nil || !strings.HasPrefix(err.Error(), `invalid value "10" for -idle-timeout: a duration needs a unit, e.g. 10s`) {
		t.Fatalf("error = %v, want the unit hint", err)
	}
	err, _ = parseEdgeFlags(t, nil, map[string]string{"SWITCHBOARD_IDLE_TIMEOUT": "10"})
	if err == nil || !strings.Contains(err.Error(), "SWITCHBOARD_IDLE_TIMEOUT") || !strings.Contains(err.Error(), "a duration needs a unit") {
		t.Fatalf("environment error = %v, want the variable named and the unit hint", err)
	}
}

func TestStrayArgumentsPointToHelp(t *testing.T) {
	err, _ := parseEdgeFlags(t, []string{"8080"}, nil)
	if err == nil || !strings.Contains(err.Error(), `unexpected arguments: ["8080"]`) || !strings.Contains(err.Error(), "edge -help") {
		t.Fatalf("error = %v, want the stray argument named and a pointer to -help", err)
	}
}

// -help still prints every flag, with its variable and default.
func TestHelpPrintsTheUsage(t *testing.T) {
	err, printed := parseEdgeFlags(t, []string{"-help"}, nil)
	if err != flag.ErrHelp {
		t.Fatalf("error = %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(printed, "-idle-timeout (SWITCHBOARD_IDLE_TIMEOUT, default 10m0s)") || !strings.Contains(printed, "-version") {
		t.Fatalf("usage lacks the flag lines or -version:\n%.500s", printed)
	}
}

func TestVersionAnswersWithoutStarting(t *testing.T) {
	// A nil build would panic if Main went on to start the node.
	if code := Main("edge", []string{"-listen", "nonsense", "-version"}, func(*flag.FlagSet) {}, &Process{}, nil); code != 0 {
		t.Fatalf("Main(-version) = %d, want 0", code)
	}
}

// The cluster's flags are the cluster package's, checked as they are parsed.
func TestClusterFlagsRefuseWhatCannotWork(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-lease-ttl", "500ms"}, `invalid value "500ms" for flag -lease-ttl: must be at least 1s`},
		{[]string{"-lease-ttl", "15"}, `invalid value "15" for -lease-ttl: a duration needs a unit`},
		{[]string{"-registry-fail-mode", "maybe"}, `invalid value "maybe" for flag -registry-fail-mode: want open or closed`},
	} {
		err, _ := parseEdgeFlags(t, c.args, nil)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%v: error = %v, want %q", c.args, err, c.want)
		}
	}
	var cfg EdgeConfig
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := Parse(fs, []string{"-lease-ttl", "4s", "-fence-margin", "2s"}, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "fence margin 2s") {
		t.Errorf("a fence margin of half the lease passed Validate: %v", err)
	}
}
