package app

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// goroutines returns the stacks of the live goroutines, keyed by their
// "goroutine N" header.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[string]string)
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		head, _, _ := strings.Cut(string(g), " [")
		out[head] = string(g)
	}
	return out
}

// checkNoLeak fails t when a goroutine started after before is still alive
// once the leftovers of a failed construction had time to end.
func checkNoLeak(t *testing.T, before map[string]string) {
	t.Helper()
	var leaked []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		leaked = leaked[:0]
		for head, stack := range goroutines() {
			if _, ok := before[head]; ok || strings.Contains(stack, "app.goroutines(") {
				continue
			}
			leaked = append(leaked, stack)
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(leaked) > 0 {
		t.Fatalf("%d goroutines left behind by a failed NewEdge:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
	}
}

// A NewEdge that fails at any stage leaves no goroutine behind: whatever was
// built before the failure (embedded NATS, the lifecycle's publisher, the
// handler's unregister workers, the groups) is torn down.
func TestFailedNewEdgeLeaksNothing(t *testing.T) {
	dir := t.TempDir()
	badKey := filepath.Join(dir, "not-a-key")
	if err := os.WriteFile(badKey, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	badCert := filepath.Join(dir, "not-a-cert")
	if err := os.WriteFile(badCert, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := taken.Addr().String()

	for name, args := range map[string][]string{
		"bad JWT key file":        {"-jwt-keys-file", badKey},
		"missing JWT key file":    {"-jwt-keys-file", filepath.Join(dir, "absent")},
		"bad TLS files":           {"-ws-tls-cert", badCert, "-ws-tls-key", badCert},
		"websocket port taken":    {"-listen", busy},
		"API port taken":          {"-api-listen", busy},
		"admin port taken":        {"-admin-listen", busy},
		"embedded NATS port used": {"-nats-embedded-listen", busy},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testEdgeConfig(t, args...)
			before := goroutines()
			e, err := NewEdge(cfg, quiet)
			if err == nil {
				e.Shutdown(t.Context())
				t.Fatal("NewEdge succeeded, want an error")
			}
			checkNoLeak(t, before)
		})
	}
}
