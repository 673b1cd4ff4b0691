// Package flagext holds the flag.Value types that the packages' own
// RegisterFlags share, so a list flag parses the same way in every package.
package flagext

import (
	"flag"
	"strings"
)

// StringList is a comma-separated list flag. Setting it replaces the list;
// entries are trimmed and empty ones dropped.
type StringList struct{ p *[]string }

// String joins the list with commas.
func (l StringList) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

// Set replaces the list with the comma-separated entries of s.
func (l StringList) Set(s string) error {
	*l.p = nil
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			*l.p = append(*l.p, e)
		}
	}
	return nil
}

// Get returns the list (flag.Getter).
func (l StringList) Get() any { return *l.p }

// StringListVar defines a comma-separated list flag stored in p.
func StringListVar(f *flag.FlagSet, p *[]string, name, usage string) {
	f.Var(StringList{p}, name, usage)
}
