package version

import (
	"strings"
	"testing"
)

func TestStringPrefersTheReleaseVersion(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "1.2.3"
	if got := String(); got != "1.2.3" {
		t.Fatalf("String() = %q, want the ldflags version 1.2.3", got)
	}
	Version = ""
	if got := String(); !strings.HasPrefix(got, "dev") && !strings.HasPrefix(got, "v") {
		t.Fatalf("String() = %q without a release version, want dev… or a module version", got)
	}
}
