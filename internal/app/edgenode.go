package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/edge"
)

// Edge is a running edge node: WebSocket server, NATS connection (and an
// embedded NATS server in single-node mode), admin endpoints.
type Edge struct {
	cfg    EdgeConfig
	log    *slog.Logger
	reg    *prometheus.Registry
	nodeID string

	ws    *edge.Server
	admin *admin
	emb   *embeddedNATS
	nc    *nats.Conn

	shutdownOnce sync.Once
	shutdownErr  error
}

// NewEdge builds an edge node from cfg; nothing is served until Run.
func NewEdge(cfg EdgeConfig, log *slog.Logger) (_ *Edge, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Edge{cfg: cfg, log: log, reg: newRegistry()}
	defer func() {
		if err != nil {
			e.closeDeps()
		}
	}()
	e.nodeID = cfg.NodeID
	if e.nodeID == "" {
		e.nodeID = newNodeID()
	}
	natsURL := cfg.NATSURL
	if natsURL == "" {
		e.emb, err = startEmbeddedNATS(cfg.NATSEmbedListen, cfg.NATSEmbedJSDir)
		if err != nil {
			return nil, err
		}
		natsURL = e.emb.URL()
	}
	e.nc, err = connectNATS(natsURL, cfg, "switchboard-edge-"+e.nodeID, log)
	if err != nil {
		return nil, err
	}
	e.ws, err = edge.New(cfg.Edge, edge.Options{NodeID: e.nodeID, Registerer: e.reg, Logger: log})
	if err != nil {
		return nil, err
	}
	e.admin, err = newAdmin(cfg.AdminListen, e.reg, cfg.Pprof, log)
	if err != nil {
		return nil, err
	}
	return e, nil
}

// NodeID is this process's node ID.
func (e *Edge) NodeID() string { return e.nodeID }

// WSAddr is the WebSocket listener's address.
func (e *Edge) WSAddr() string { return e.ws.Addr().String() }

// AdminAddr is the admin listener's address.
func (e *Edge) AdminAddr() string { return e.admin.ln.Addr().String() }

// NATSURL is the NATS server the node uses (the embedded one in single-node mode).
func (e *Edge) NATSURL() string { return e.nc.ConnectedUrl() }

// Run serves until ctx ends, then drains (see Shutdown).
func (e *Edge) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); errc <- e.ws.Run(ctx) }()
	go func() { defer wg.Done(); errc <- e.admin.run() }()
	e.admin.ready.Store(true)
	embedded := ""
	if e.emb != nil {
		embedded = " (embedded)"
	}
	e.log.Info("edge node started", "node", e.nodeID, "websocket", "ws://"+e.WSAddr()+"/",
		"admin", "http://"+e.AdminAddr(), "nats", e.NATSURL()+embedded)
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, edge.ErrClosed) {
			runErr = err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), e.cfg.DrainTimeout)
	defer cancel()
	err := e.Shutdown(sctx)
	wg.Wait()
	return errors.Join(runErr, err)
}

// Shutdown drains in DESIGN.md's order: not ready → delay → stop accepting
// → close connections in waves with 1001 (each one's DISCONNECT emitted) →
// NATS drain → exit. Safe to call twice.
func (e *Edge) Shutdown(ctx context.Context) error {
	e.shutdownOnce.Do(func() {
		e.admin.ready.Store(false)
		e.log.Info("draining", "node", e.nodeID, "connections", e.ws.Count(), "delay", e.cfg.DrainDelay)
		if e.cfg.DrainDelay > 0 {
			select {
			case <-time.After(e.cfg.DrainDelay):
			case <-ctx.Done():
			}
		}
		var errs []error
		if err := e.ws.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		e.closeDeps()
		if err := e.admin.shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		e.shutdownErr = errors.Join(errs...)
		e.log.Info("edge node stopped", "node", e.nodeID)
	})
	return e.shutdownErr
}

// closeDeps drains NATS and stops the embedded server.
func (e *Edge) closeDeps() {
	if e.nc != nil {
		_ = e.nc.Drain()
		for i := 0; i < 200 && !e.nc.IsClosed(); i++ {
			time.Sleep(10 * time.Millisecond)
		}
		e.nc.Close()
	}
	if e.emb != nil {
		e.emb.shutdown()
	}
}

func connectNATS(url string, cfg EdgeConfig, name string, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("nats disconnected", "err", err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
	}
	if cfg.NATSCredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCredsFile))
	}
	if cfg.NATSUser != "" {
		opts = append(opts, nats.UserInfo(cfg.NATSUser, cfg.NATSPassword))
	}
	if cfg.NATSToken != "" {
		opts = append(opts, nats.Token(cfg.NATSToken))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", url, err)
	}
	return nc, nil
}

// newNodeID is the pod or host name plus a random suffix: unique per process
// start, and a legal NATS subject token.
func newNodeID() string {
	host, _ := os.Hostname()
	var b strings.Builder
	for _, r := range strings.ToLower(host) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		b.WriteString("edge")
	}
	var suf [4]byte
	_, _ = rand.Read(suf[:])
	return b.String() + "-" + hex.EncodeToString(suf[:])
}
