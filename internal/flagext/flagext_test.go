package flagext

import (
	"flag"
	"slices"
	"testing"
)

func TestStringListReplacesAndTrims(t *testing.T) {
	var l []string
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	StringListVar(fs, &l, "l", "")
	if d := fs.Lookup("l").DefValue; d != "" {
		t.Fatalf("default %q, want empty", d)
	}
	if err := fs.Parse([]string{"-l", "a,b", "-l", " c , ,d "}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(l, []string{"c", "d"}) {
		t.Fatalf("list %q, want the last setting [c d] trimmed", l)
	}
	if s := fs.Lookup("l").Value.String(); s != "c,d" {
		t.Fatalf("String %q", s)
	}
}
