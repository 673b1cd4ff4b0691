package app

import (
	"errors"
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
	const flag, fix = "nats-embedded-listen", "free the port, choose another address, or use a running NATS server with -nats-url"
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, listenError(flag, addr, fix, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, listenError(flag, addr, fix, fmt.Errorf("port %q is not a number", portStr))
	}
	if port == 0 {
		port = -1 // nats-server's "random port"
	} else {
		// nats-server only logs a listen failure and never becomes ready:
		// try the address first, for the same clear error at once as the
		// other listeners give.
		ln, err := listenFlag(flag, addr, fix)
		if err != nil {
			return nil, err
		}
		ln.Close()
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
	fatal := make(chan string, 1)
	s.SetLoggerV2(natsServerLogger{log: log.With("lib", "nats-server"), fatal: fatal}, false, false, false)
	go s.Start() // nats-server owns this goroutine; Shutdown waits for it
	// Ready, or the server's own fatal error (the port taken between the
	// check above and its listen), whichever comes first.
	for deadline := time.Now().Add(10 * time.Second); !s.ReadyForConnections(50 * time.Millisecond); {
		select {
		case msg := <-fatal:
			s.Shutdown()
			return nil, listenError(flag, addr, fix, errors.New(msg))
		default:
		}
		if time.Now().After(deadline) {
			s.Shutdown()
			return nil, listenError(flag, addr, fix, errors.New("the embedded NATS server did not become ready within 10s"))
		}
	}
	return &embeddedNATS{srv: s}, nil
}

func (e *embeddedNATS) URL() string { return e.srv.ClientURL() }

func (e *embeddedNATS) shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
