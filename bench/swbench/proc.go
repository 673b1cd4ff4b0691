package swbench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchboardgw/switchboard/internal/freeport"
)

// Command is a program to start: Argv[0] is the binary. In a server's Argv,
// "{listen}" and "{admin}" are replaced by the addresses chosen for the run.
type Command struct {
	Argv []string
	// Env is added to the driver's own environment.
	Env []string
}

// ServerSpec names a server under test and how to start it.
type ServerSpec struct {
	Name string
	Cmd  Command
	// NATS, if set, is where the server's NATS is, for the echo scenario's
	// backend: a placeholder of Cmd (such as "{nats}") or host:port.
	NATS string
	// Prefix is the server's NATS subject prefix. Default "switchboard".
	Prefix string
}

// proc is a started child process with its output captured: stderr lines
// are scanned (for swload's ready line) and kept, bounded, for error reports.
type proc struct {
	name        string
	cmd         *exec.Cmd
	stdout      bytes.Buffer
	tail        tailBuffer
	ready       chan string // the ready line (swload's, unless startReady says), once
	readyPrefix string
	// anyExit: the exit status is no error (nats-server exits 1 after a
	// clean shutdown on SIGTERM).
	anyExit bool
	waited  chan struct{}
	err     error
	readWG  sync.WaitGroup
}

func start(name string, c Command, repl map[string]string) (*proc, error) {
	return startReady(name, c, repl, swloadReady)
}

// startReady is start for a process whose ready line begins with prefix.
func startReady(name string, c Command, repl map[string]string, prefix string) (*proc, error) {
	if len(c.Argv) == 0 {
		return nil, fmt.Errorf("swbench: %s: empty command", name)
	}
	argv := make([]string, len(c.Argv))
	for i, a := range c.Argv {
		for k, v := range repl {
			a = strings.ReplaceAll(a, k, v)
		}
		argv[i] = a
	}
	p := &proc{name: name, ready: make(chan string, 1), waited: make(chan struct{}), readyPrefix: prefix}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), c.Env...)
	// A driver that dies (Ctrl-C twice, a crash) takes its servers and
	// loaders with it rather than leaving them bound to their ports.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.Stdout = &p.stdout
	errPipe, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("swbench: %s: %w", name, err)
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("swbench: start %s (%s): %w", name, argv[0], err)
	}
	p.readWG.Go(func() { p.scan(errPipe) })
	go func() {
		// Wait only after stderr is drained, as os/exec requires.
		p.readWG.Wait()
		p.err = p.cmd.Wait()
		close(p.waited)
	}()
	return p, nil
}

func (p *proc) scan(r io.Reader) {
	sc := bufio.NewScanner(r)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		p.tail.add(line)
		if !sent && strings.HasPrefix(line, p.readyPrefix) {
			p.ready <- line
			sent = true
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.waited:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL if the process outlives timeout, and
// waits for it. The process's exit error is returned unless it was killed
// by the driver's own SIGTERM.
func (p *proc) stop(timeout time.Duration) error {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.waited:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.waited
		return fmt.Errorf("swbench: %s did not stop within %v; killed", p.name, timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signal() == syscall.SIGTERM {
		return nil
	}
	if p.err != nil && !p.anyExit {
		return fmt.Errorf("swbench: %s: %w; stderr:\n%s", p.name, p.err, p.tail.String())
	}
	return nil
}

// tailBuffer keeps the last lines of a process's stderr.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (t *tailBuffer) add(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 20 {
		t.lines = t.lines[1:]
	}
	t.lines = append(t.lines, l)
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr() (string, error) {
	port, err := freeport.Pick()
	if err != nil {
		return "", fmt.Errorf("swbench: %w", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// waitReady polls url until it answers 200, the process exits, or timeout.
func waitReady(ctx context.Context, p *proc, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := noKeepAlive.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("swbench: %s exited before ready: %v; stderr:\n%s", p.name, p.err, p.tail.String())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("swbench: %s not ready at %s: %w; stderr:\n%s", p.name, url, ctx.Err(), p.tail.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
