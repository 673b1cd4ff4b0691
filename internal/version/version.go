// Package version is the one answer to "which build is this": what -version
// prints and what the console shows for a node.
package version

import (
	"runtime/debug"
	"sync"
)

// Version is set at build time for releases:
//
//	go build -ldflags "-X github.com/switchboardgw/switchboard/internal/version.Version=0.1.0" ./cmd/...
var Version = ""

// String is Version when set, else the module version of a `go install`ed
// binary, else "dev" with the VCS revision when the build recorded one.
func String() string {
	if Version != "" {
		return Version
	}
	return fromBuild()
}

// fromBuild reads the build info once: the console asks on every status
// request.
var fromBuild = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	switch {
	case rev == "":
		return "dev"
	case dirty:
		return "dev-" + rev + "-dirty"
	}
	return "dev-" + rev
})
