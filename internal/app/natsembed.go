package app

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// embeddedNATS runs a NATS server inside the edge process for the
// single-node default, so a backend can attach without running one.
type embeddedNATS struct{ srv *server.Server }

// startEmbeddedNATS starts the server on addr, with JetStream in storeDir if
// set. Its log lines go to log (NoLog keeps nats-server's own stderr logger
// off, also across a config reload).
func startEmbeddedNATS(addr, storeDir string, log *slog.Logger) (*embeddedNATS, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats listen %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats port %q: %w", portStr, err)
	}
	if port == 0 {
		port = -1 // nats-server's "random port"
	}
	opts := &server.Options{Host: host, Port: port, NoSigs: true, NoLog: true, ServerName: "switchboard-embedded"}
	if storeDir != "" {
		opts.JetStream = true
		opts.StoreDir = storeDir
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	s.SetLoggerV2(natsServerLogger{log: log.With("lib", "nats-server")}, false, false, false)
	go s.Start() // nats-server owns this goroutine; Shutdown waits for it
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s did not start", addr)
	}
	return &embeddedNATS{srv: s}, nil
}

func (e *embeddedNATS) URL() string { return e.srv.ClientURL() }

func (e *embeddedNATS) shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
