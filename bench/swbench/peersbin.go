package swbench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Peer tools the peers scenario builds, at the versions it compares with.
const (
	CentrifugoModule  = "github.com/centrifugal/centrifugo/v6"
	CentrifugoVersion = "v6.9.1"
	NATSServerModule  = "github.com/nats-io/nats-server/v2"
	NATSServerVersion = "v2.15.2"
)

// ToolCacheDir is where built peer tools are kept between runs:
// <user cache>/switchboard-bench.
func ToolCacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("swbench: no cache directory for the peer tools: %w", err)
	}
	return filepath.Join(dir, "switchboard-bench"), nil
}

// toolPath is where module@version's binary lives in the cache.
func toolPath(cache, module, version string) string {
	name := toolName(module)
	return filepath.Join(cache, name+"-"+version, name)
}

// toolName is the binary "go install" makes of module: its last path
// element, or the one before a major version suffix.
func toolName(module string) string {
	parts := strings.Split(module, "/")
	name := parts[len(parts)-1]
	if len(parts) > 1 && isMajorSuffix(name) {
		name = parts[len(parts)-2]
	}
	return name
}

// isMajorSuffix reports whether a module path element is a major version
// suffix ("v2", "v6"), which names no binary.
func isMajorSuffix(s string) bool {
	if len(s) < 2 || s[0] != 'v' {
		return false
	}
	for _, c := range s[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// installTool returns the cached binary of module@version, building it
// with "go install" first when it is not there. The build runs outside this
// repository, so its go.mod does not pin the tool's dependencies.
func installTool(ctx context.Context, cache, module, version string, log io.Writer) (string, error) {
	path := toolPath(cache, module, version)
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		return path, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("swbench: %w", err)
	}
	fmt.Fprintf(log, "building %s@%s into %s (once; kept for later runs)\n", module, version, filepath.Dir(path))
	cmd := exec.CommandContext(ctx, "go", "install", module+"@"+version)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(path), "GOWORK=off", "GOFLAGS=-buildvcs=false")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("swbench: go install %s@%s: %w", module, version, err)
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("swbench: go install %s@%s made no %s: %w", module, version, path, err)
	}
	return path, nil
}
