package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"
)

// EnvPrefix prefixes the environment variable of every flag: -max-frame-bytes
// is SWITCHBOARD_MAX_FRAME_BYTES. A flag given on the command line wins.
const EnvPrefix = "SWITCHBOARD_"

// EnvName is the environment variable that sets flag name.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse parses args into fs, then fills every flag not given on the command
// line from its environment variable. Errors name both.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	// The flag package prints the whole usage on any error; a user who
	// mistyped one flag wants that one line and where to look instead.
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		usage(fs)
		return err
	}
	if err != nil {
		return fmt.Errorf("%s\nrun '%s -help' for every flag", explain(fs, err), fs.Name())
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q (flags start with -)\nrun '%s -help' for every flag", fs.Args(), fs.Name())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment %s=%q: %w%s", EnvName(f.Name), v, e, durationHint(f))
			}
		}
	})
	return err
}

var badValue = regexp.MustCompile(`^invalid value "(.*)" for flag -([^:]+): `)

// explain rewrites the flag package's error for a bad duration, which
// says only "parse error", into one that says what a duration looks like.
func explain(fs *flag.FlagSet, err error) string {
	m := badValue.FindStringSubmatch(err.Error())
	if m == nil {
		return err.Error()
	}
	why := strings.TrimPrefix(err.Error(), m[0])
	if f := fs.Lookup(m[2]); f != nil && (why == "parse error" || strings.HasPrefix(why, "time: ")) {
		if hint := durationHint(f); hint != "" {
			return fmt.Sprintf("invalid value %q for -%s%s", m[1], m[2], hint)
		}
	}
	return err.Error()
}

// durationHint is what to add to a duration flag's parse error.
func durationHint(f *flag.Flag) string {
	if g, ok := f.Value.(flag.Getter); ok {
		if _, ok := g.Get().(time.Duration); ok {
			return fmt.Sprintf(": a duration needs a unit, e.g. 10s, 500ms or 2m (default %s)", f.DefValue)
		}
	}
	return ""
}

func usage(fs *flag.FlagSet) {
	out := fs.Output()
	fmt.Fprintf(out, "Usage of %s:\n\nEvery flag can also be set with the environment variable shown; the flag wins.\n-version prints the version and exits.\n\n", fs.Name())
	fs.VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(out, "  -%s (%s, default %s)\n    \t%s\n", f.Name, EnvName(f.Name), def, f.Usage)
	})
}

// FlagTable renders fs as a Markdown table: flag, variable, default, meaning.
func FlagTable(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString("| flag | environment | default | meaning |\n| --- | --- | --- | --- |\n")
	fs.VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = "(empty)"
		}
		fmt.Fprintf(&b, "| `-%s` | `%s` | `%s` | %s |\n", f.Name, EnvName(f.Name), def, strings.ReplaceAll(f.Usage, "|", "\\|"))
	})
	return b.String()
}
