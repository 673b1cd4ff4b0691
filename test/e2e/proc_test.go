package e2e

import (
	"github.com/switchboardgw/switchboard/internal/freeport"

	"bytes"
	"context"
	"fmt"
	"io"

	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Deadlines. Generous: CI machines are slow and shared; a passing run never
// waits for them, every wait polls its condition.
const (
	startTimeout = 30 * time.Second // a process becomes ready
	waitTimeout  = 60 * time.Second // a condition in the cluster becomes true
	pollInterval = 20 * time.Millisecond
)

// eventually polls cond until it returns nil or the deadline passes, then
// fails the test with cond's last error.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(pollInterval)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	port, err := freeport.Pick()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// proc is one child process (an edge or a router). It is killed when the
// test ends, and with the test process (Pdeathsig) if that dies first.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
	err  error // exit status, valid after done is closed
}

// startProc starts bin with args, the machine's SWITCHBOARD_* variables
// removed so nothing but the flags configures it.
func startProc(t testing.TB, name, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, bin), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	p := &proc{t: t, name: name, cmd: cmd, log: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.log
	cmd.Stderr = p.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { // owned by p: ends when the process does; Cleanup waits for it
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		// With E2E_RACE=1 a race in a child process fails the test too.
		if out := p.log.String(); strings.Contains(out, "WARNING: DATA RACE") {
			i := strings.Index(out, "WARNING: DATA RACE")
			t.Errorf("%s: data race:\n%.4000s", name, out[i:])
		}
		if t.Failed() {
			t.Logf("--- log of %s (last 40 lines) ---\n%s", name, p.log.tail(40))
		}
	})
	return p
}

// running reports whether the process has not exited.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL, as a crash or an OOM kill would, and waits for the exit.
func (p *proc) kill() {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// pause sends SIGSTOP, as a VM freeze, a long GC pause or CPU starvation
// would look from outside: the process keeps its sockets and runs on where
// it stopped after resume. The process is always resumed when the test ends
// (before it is killed), so that no stopped process is left behind.
func (p *proc) pause() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		p.t.Fatalf("SIGSTOP %s: %v", p.name, err)
	}
	p.t.Cleanup(func() {
		if p.running() {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
}

// resume sends SIGCONT.
func (p *proc) resume() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		p.t.Fatalf("SIGCONT %s: %v", p.name, err)
	}
}

// terminate sends SIGTERM, as Kubernetes does, and waits for the exit; it
// fails the test if the process does not exit cleanly within timeout.
func (p *proc) terminate(timeout time.Duration) time.Duration {
	p.t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s of SIGTERM", p.name, timeout)
	}
	if p.err != nil {
		p.t.Fatalf("%s exited with %v after SIGTERM; log:\n%s", p.name, p.err, p.log.tail(40))
	}
	return time.Since(start)
}

// waitReady polls url until it answers 200, failing early if the process exits.
func (p *proc) waitReady(url string) {
	p.t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	eventually(p.t, startTimeout, p.name+" ready", func() error {
		if !p.running() {
			p.t.Fatalf("%s exited during start-up: %v; log:\n%s", p.name, p.err, p.log.tail(40))
		}
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

// lockedBuffer collects a process's output; it is written by os/exec's
// copying goroutine and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Bound the memory a chatty process can take; the tail is what matters.
	if b.buf.Len() > 8<<20 {
		rest := b.buf.Bytes()[b.buf.Len()-(4<<20):]
		b.buf = *bytes.NewBuffer(append([]byte(nil), rest...))
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) tail(n int) string {
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// httpGet fetches url and returns the body; for /metrics and friends.
func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return string(body), nil
}
