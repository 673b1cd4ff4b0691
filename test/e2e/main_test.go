// Package e2e is Switchboard's end-to-end fault suite: it builds the real
// edge and router binaries, runs them as separate processes against a real
// redis-server and NATS on loopback, and checks what clients and a recording
// backend see while nodes, Redis and NATS fail. docs/testing.md lists the
// scenarios and what each one proves.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// binDir holds the edge and router binaries built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	if addr := os.Getenv(natsChildEnv); addr != "" {
		os.Exit(runNATSChild(addr)) // this process is a NATS server (natsproc_test.go)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "switchboard-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildBinaries(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// buildBinaries builds cmd/edge and cmd/router from this module into dir.
// E2E_RACE=1 builds them with the race detector (slower, catches more).
func buildBinaries(dir string) error {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if os.Getenv("E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/edge", "./cmd/router")
	cmd := exec.Command(goBin, args...)
	cmd.Dir = filepath.Join("..", "..") // the module root, from test/e2e
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build edge and router: %w\n%s", err, out)
	}
	return nil
}
