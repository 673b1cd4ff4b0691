package testenv

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// natsStartTimeout bounds how long an embedded server may take to accept
// clients. Generous: CI machines are slow and shared.
const natsStartTimeout = 20 * time.Second

// NATSOption adjusts a server started by StartNATS.
type NATSOption func(*natsOptions)

type natsOptions struct {
	jetstream bool
}

// WithJetStream enables JetStream, storing its files in a directory of the
// test's own (t.TempDir), which survives Restart.
func WithJetStream() NATSOption {
	return func(o *natsOptions) { o.jetstream = true }
}

// NATS is an embedded nats-server owned by one test: loopback only, a random
// port, no logging, shut down when the test ends. It never touches the
// machine's own NATS on 4222.
type NATS struct {
	t        testing.TB
	storeDir string
	js       bool

	mu   sync.Mutex
	srv  *server.Server
	port int
}

// StartNATS starts an embedded NATS server on a random 127.0.0.1 port and
// waits until it accepts clients.
func StartNATS(t testing.TB, opts ...NATSOption) *NATS {
	t.Helper()
	var o natsOptions
	for _, opt := range opts {
		opt(&o)
	}
	n := &NATS{t: t, js: o.jetstream}
	if o.jetstream {
		n.storeDir = t.TempDir()
	}
	t.Cleanup(n.Shutdown)
	srv, err := n.start(-1)
	if err != nil {
		t.Fatalf("testenv: start nats: %v", err)
	}
	n.mu.Lock()
	n.srv = srv
	n.port = srv.Addr().(*net.TCPAddr).Port
	n.mu.Unlock()
	return n
}

func (n *NATS) start(port int) (*server.Server, error) {
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		NoLog:     true,
		NoSigs:    true,
		JetStream: n.js,
		StoreDir:  n.storeDir,
		// Tests publish large bursts; keep the server from cutting off a
		// client that is merely slow on a loaded CI machine.
		MaxPending: 256 << 20,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("new server: %w", err)
	}
	go srv.Start() // Start returns once listeners run; the server owns its goroutines and Shutdown waits for them.
	if !srv.ReadyForConnections(natsStartTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("server on port %d not ready after %s", port, natsStartTimeout)
	}
	return srv, nil
}

// URL is the nats:// URL clients connect to. It stays the same across Restart.
func (n *NATS) URL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return fmt.Sprintf("nats://127.0.0.1:%d", n.port)
}

// Server is the running embedded server (nil while shut down).
func (n *NATS) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Shutdown stops the server and waits until it has stopped; clients see a
// disconnect and start reconnecting. Safe to call twice.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Restart stops the server if it runs and starts a new one on the same port
// (and, with JetStream, the same store), so reconnecting clients find it.
func (n *NATS) Restart() {
	n.t.Helper()
	n.Shutdown()
	n.mu.Lock()
	port := n.port
	n.mu.Unlock()
	// The old listener's port can linger briefly; retry until a deadline.
	deadline := time.Now().Add(natsStartTimeout)
	for {
		srv, err := n.start(port)
		if err == nil {
			n.mu.Lock()
			n.srv = srv
			n.mu.Unlock()
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("testenv: restart nats on port %d: %v", port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Connect returns a client connected to the server that reconnects forever
// (with a short wait, so fault tests recover quickly) and is closed when the
// test ends. Extra options are applied after the defaults.
func (n *NATS) Connect(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	all := append([]nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.Timeout(natsStartTimeout),
	}, opts...)
	nc, err := nats.Connect(n.URL(), all...)
	if err != nil {
		t.Fatalf("testenv: connect nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
