package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// natsChildEnv, set to host:port, makes the test binary a NATS server
// (TestMain): a NATS of its own process, which a scenario can SIGSTOP as a
// frozen VM or an overloaded server would be.
const natsChildEnv = "E2E_NATS_CHILD"

// runNATSChild serves NATS on addr until SIGTERM or SIGKILL.
func runNATSChild(addr string) int {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats child:", err)
		return 2
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats child:", err)
		return 2
	}
	srv, err := server.NewServer(&server.Options{Host: host, Port: p, NoLog: true, NoSigs: true, MaxPending: 256 << 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats child:", err)
		return 1
	}
	go srv.Start() // the server owns its goroutines
	if !srv.ReadyForConnections(startTimeout) {
		fmt.Fprintln(os.Stderr, "nats child: not ready")
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	srv.Shutdown()
	srv.WaitForShutdown()
	return 0
}

// natsProc is a NATS server in a child process.
type natsProc struct {
	t    testing.TB
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// startNATSProc runs a NATS server as a child process on a free loopback
// port and waits until it accepts clients. It is SIGCONTed and killed when
// the test ends, whatever state the test left it in.
func startNATSProc(t testing.TB) *natsProc {
	t.Helper()
	n := &natsProc{t: t, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), done: make(chan struct{})}
	n.cmd = exec.Command(os.Args[0], "-test.run=^$")
	n.cmd.Env = append(os.Environ(), natsChildEnv+"="+n.addr)
	n.cmd.Stdout, n.cmd.Stderr = os.Stderr, os.Stderr
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start nats child: %v", err)
	}
	go func() { // owned by n: ends with the process; Cleanup waits for it
		_ = n.cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		n.cont() // a stopped process must not outlive the test
		_ = n.cmd.Process.Signal(syscall.SIGKILL)
		<-n.done
	})
	eventually(t, startTimeout, "NATS child accepts clients", func() error {
		nc, err := nats.Connect(n.url(), nats.Timeout(time.Second))
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	})
	return n
}

func (n *natsProc) url() string { return "nats://" + n.addr }

// stop freezes the server (SIGSTOP): its sockets stay open, nothing is read.
func (n *natsProc) stop() {
	n.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		n.t.Fatalf("SIGSTOP nats: %v", err)
	}
}

// cont resumes it (SIGCONT); harmless when it runs.
func (n *natsProc) cont() { _ = n.cmd.Process.Signal(syscall.SIGCONT) }
