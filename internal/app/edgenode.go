package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"net"
	"net/http"
	"net/netip"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/switchboardgw/switchboard/internal/admission"
	"github.com/switchboardgw/switchboard/internal/authn"
	"github.com/switchboardgw/switchboard/internal/clientip"
	"github.com/switchboardgw/switchboard/internal/cluster"
	"github.com/switchboardgw/switchboard/internal/console"
	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/groups"
	"github.com/switchboardgw/switchboard/internal/lifecycle"
	"github.com/switchboardgw/switchboard/internal/proxyproto"
	"github.com/switchboardgw/switchboard/internal/relay"
	"github.com/switchboardgw/switchboard/internal/rules"
	"github.com/switchboardgw/switchboard/internal/session"
	"github.com/switchboardgw/switchboard/internal/tlsreload"
	"github.com/switchboardgw/switchboard/internal/tlsterm"
)

// Edge is a running edge node: WebSocket server, lifecycle events over NATS
// (with an embedded NATS server in single-node mode), the ownership registry
// and lease, dead-node cleanup, command routing and the @connections API.
type Edge struct {
	cfg    EdgeConfig
	log    *slog.Logger
	reg    *prometheus.Registry
	nodeID string

	emb     *embeddedNATS
	nc      *nats.Conn
	rdb     redis.UniversalClient
	lc      *lifecycle.Lifecycle
	node    *cluster.Node
	janitor *cluster.Janitor
	cmds    *cluster.CommandServer
	router  *cluster.Router
	groups  *groups.Service
	relay   *relay.Service // resume through another edge

	// trustedPeer: a TCP peer in -trusted-proxies (nil when none), exempt
	// from -max-handshakes-per-ip on its own address.
	trustedPeer func(netip.Addr) bool

	clientIP func(peer string, h http.Header) string
	trusted  []netip.Prefix
	tlsLn    *tlsterm.Listener // wss:// bridges; nil without -ws-tls-cert
	handler  *session.Handler
	ws       *edge.Server
	api      *apiServer
	admin    *admin
	console  *console.Service // nil when off
	tap      *console.Tap     // route traffic for the console's tails; nil when off
	draining atomic.Bool

	cancel       context.CancelFunc
	wg           sync.WaitGroup
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
			e.abandon()
		}
	}()
	e.nodeID = cfg.NodeID
	if e.nodeID == "" {
		e.nodeID = cluster.NewNodeID("")
	}
	if !cluster.ValidNodeID(e.nodeID) {
		return nil, fmt.Errorf("node id %q: letters, digits, '-' and '_' only", e.nodeID)
	}

	natsURL := cfg.NATS.URL
	if natsURL == "" {
		e.emb, err = startEmbeddedNATS(cfg.NATSEmbedListen, cfg.NATSEmbedJSDir, log)
		if err != nil {
			return nil, err
		}
		natsURL = e.emb.URL()
	}
	var natsOpts []nats.Option
	if !cfg.Lifecycle.JetStream {
		// Core mode: an event published while NATS is away is dropped and
		// counted. nats.go's reconnect buffer would flush it on reconnect,
		// where it is lost without a trace if no backend has resubscribed yet.
		natsOpts = append(natsOpts, nats.ReconnectBufSize(-1))
	}
	if e.nc, err = connectNATS(natsURL, cfg.NATS, "switchboard-edge-"+e.nodeID, log, natsOpts...); err != nil {
		return nil, err
	}

	if err := natsConnectedGauge(e.reg, e.nc); err != nil {
		return nil, err
	}
	var registry cluster.Registry
	if cfg.Redis.Configured() {
		if e.rdb, err = newRedisClient(cfg.Redis); err != nil {
			return nil, err
		}
		if registry, err = cluster.NewRedisRegistry(cluster.RedisConfig{KeyPrefix: cfg.Redis.KeyPrefix}, e.rdb); err != nil {
			return nil, err
		}
	} else {
		registry = cluster.NewMemoryRegistry(nil)
	}
	cm, err := cluster.NewMetrics(e.reg)
	if err != nil {
		return nil, err
	}

	// The edge server and the cluster node need each other (the node asks
	// the hub for its connections; the handler asks the node): build the
	// node with closures over e.ws. It comes first: it is the fence of
	// every event the lifecycle publishes and every API call and fan-out
	// the edge serves for its own connections.
	ncfg := cfg.Node
	ncfg.ID = e.nodeID
	e.node, err = cluster.NewNode(ncfg,
		cluster.NodeDeps{Registry: registry, Logger: log, Metrics: cm,
			Reassert: func(ctx context.Context) []cluster.ConnRecord {
				if err := e.groups.Reassert(ctx); err != nil {
					log.Warn("group memberships not re-asserted", "err", err)
				}
				return e.handler.ReassertAll(e.ws)
			},
			Revoked: func(context.Context) { e.handler.RevokeAll(e.ws) },
			// A fixed -node-id restarted within its lease: announce what
			// the previous process left, with the janitor's own cleanup.
			CleanPrevious: func(ctx context.Context) error {
				_, err := e.janitor.CleanNode(ctx, e.nodeID)
				return err
			},
		})
	if err != nil {
		return nil, err
	}
	lcfg := cfg.Lifecycle // the flags' part; the rest is shared with the node
	lcfg.Fence, lcfg.Prefix, lcfg.NodeID = e.node, cfg.NATS.Prefix, e.nodeID
	if cfg.Console.Enabled {
		// On every edge, API or not: a tail on any node (a router's
		// included) shows the route traffic of the whole cluster.
		if e.tap, err = console.NewTap(e.nc, cfg.NATS.Prefix, e.nodeID, log); err != nil {
			return nil, err
		}
		lcfg.Tap = e.tap
	}
	e.lc, err = lifecycle.New(lcfg, e.nc, e.reg, log)
	if err != nil {
		return nil, err // already says "lifecycle: "
	}

	gstore, err := newGroupStore(e.rdb, cfg.Redis.KeyPrefix)
	if err != nil {
		return nil, err
	}
	e.groups, err = groups.New(groups.Config{Prefix: cfg.NATS.Prefix, NodeID: e.nodeID}, groups.Deps{
		NC: e.nc, Store: gstore, Registerer: e.reg, Logger: log, Fence: e.node,
		// Through the router: the owner lookup, timeout and dead-owner rule
		// of every node command.
		Remote: func(ctx context.Context, msg *nats.Msg) (*nats.Msg, error) { return e.router.Command(ctx, msg) }})
	if err != nil {
		return nil, err
	}
	jwt, adm, err := e.buildSecurity(cfg, log)
	if err != nil {
		return nil, err
	}
	e.handler, err = session.New(session.Config{NodeID: e.nodeID, DomainName: cfg.Lifecycle.DomainName, MsgShedClose: cfg.MsgShedClose},
		session.Deps{Events: e.lc, Owner: e.node, Groups: e.groups, JWT: jwt, Admission: adm, Logger: log})
	if err != nil {
		return nil, err
	}
	e.janitor, err = cluster.NewJanitor(cfg.Janitor, cluster.JanitorDeps{Registry: registry, Self: e.nodeID,
		OnOrphan: e.handler.Orphaned, Healthy: e.node.Healthy, Logger: log, Metrics: cm})
	if err != nil {
		return nil, err
	}
	rcfg := cfg.Relay
	rcfg.Prefix, rcfg.NodeID = cfg.NATS.Prefix, e.nodeID
	e.relay, err = relay.New(rcfg, relay.Deps{NC: e.nc,
		Call:        func(ctx context.Context, msg *nats.Msg) (*nats.Msg, error) { return e.router.Command(ctx, msg) },
		Credentials: e.handler.ResumeCredentials, Target: e.handler.ResumeTarget, Fence: e.node,
		Resume: func(ask edge.RemoteAsk, check func(*edge.Conn) error, sock net.Conn) (edge.RelayedResume, error) {
			return e.ws.ResumeRelayed(ask, check, sock)
		},
		Logger: log, Registerer: e.reg})
	if err != nil {
		return nil, err
	}
	ln, err := e.listen(cfg)
	if err != nil {
		return nil, err
	}
	e.ws, err = edge.New(cfg.Edge, edge.Options{NodeID: e.nodeID, Handler: e.handler, Registerer: e.reg, Logger: log,
		Listener: ln, ClientIP: e.clientIP, TrustedPeer: e.trustedPeer, Remote: e.relay})
	if err != nil {
		ln.Close()
		return nil, err
	}
	var direct net.Listener
	if cfg.Direct.Enabled() {
		if direct, err = net.Listen("tcp", cfg.Direct.Listen); err != nil {
			return nil, fmt.Errorf("-direct-listen %s: %w", cfg.Direct.Listen, err)
		}
	}
	e.cmds, err = cluster.NewCommandServer(cluster.CommandServerConfig{Prefix: cfg.NATS.Prefix, Node: e.nodeID},
		cluster.CommandServerDeps{NC: e.nc, Controller: e.handler.Local(e.ws), Logger: log, Metrics: cm,
			Direct: direct, Advertise: cfg.Direct.Advertise})
	if err != nil {
		if direct != nil {
			direct.Close()
		}
		return nil, err
	}
	membership, err := e.groups.Commands()
	if err != nil {
		return nil, err
	}
	if err := e.cmds.Handle(membership); err != nil {
		return nil, err
	}
	if err := e.cmds.Handle(e.relay.Commands()); err != nil {
		return nil, err
	}
	e.router, err = cluster.NewRouter(cluster.RouterConfig{Prefix: cfg.NATS.Prefix, Self: e.nodeID, Direct: cfg.Direct.Enabled()},
		cluster.RouterDeps{NC: e.nc, Registry: registry, Local: e.handler.Local(e.ws), Logger: log, Metrics: cm})
	if err != nil {
		return nil, err
	}
	if cfg.API.Listen != "" {
		if e.api, err = newAPIServer(cfg.API, e.router, e.groups, registry, e.reg, log); err != nil {
			return nil, err
		}
		if err := e.api.enableTLS(cfg.Process, log); err != nil {
			return nil, err
		}
	}
	if e.admin, err = newAdmin(cfg.AdminListen, e.reg, cfg.Pprof, log); err != nil {
		return nil, err
	}
	e.admin.check = func() error {
		if !e.node.Healthy() {
			return errors.New("cluster lease not held")
		}
		return nil
	}
	if e.console, err = newConsole(cfg.Console, consoleDeps{nc: e.nc, prefix: cfg.NATS.Prefix, nodeID: e.nodeID, role: "edge",
		gatherer: e.reg, ready: func() bool { return e.admin.ready.Load() && e.node.Healthy() }, draining: e.draining.Load,
		leaseAge: e.node.LeaseAge, api: e.api, admin: e.admin, log: log}); err != nil {
		return nil, err
	}
	return e, nil
}

// NodeID is this process's node ID.
func (e *Edge) NodeID() string { return e.nodeID }

// WSAddr is the WebSocket listener's address.
func (e *Edge) WSAddr() string { return e.ws.Addr().String() }

// APIAddr is the @connections API's address ("" when off).
func (e *Edge) APIAddr() string {
	if e.api == nil {
		return ""
	}
	return e.api.addr()
}

// AdminAddr is the admin listener's address.
func (e *Edge) AdminAddr() string { return e.admin.ln.Addr().String() }

// NATSURL is the NATS server the node uses (the embedded one in single-node mode).
func (e *Edge) NATSURL() string { return e.nc.ConnectedUrl() }

// Registry is the node's Prometheus registry.
func (e *Edge) Registry() *prometheus.Registry { return e.reg }

// Run serves until ctx ends, then drains (see Shutdown).
func (e *Edge) Run(ctx context.Context) error {
	rctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	errc := make(chan error, 16) // room for every part: a failing one never blocks
	run := func(name string, f func() error) {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			if err := f(); err != nil && !errors.Is(err, edge.ErrClosed) && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	run("lifecycle", func() error { return e.lc.Run(rctx) }) // first: events queued by the others wait for it
	run("session", func() error { return e.handler.Run(rctx) })
	run("cluster node", func() error { return e.node.Run(rctx) })
	run("janitor", func() error { return e.janitor.Run(rctx) })
	run("command server", func() error { return e.cmds.Run(rctx) })
	run("groups", func() error { return e.groups.Run(rctx) })
	run("relay", func() error { return e.relay.Run(rctx) })
	run("websocket", func() error { return e.ws.Run(rctx) })
	run("admin", e.admin.run)
	if e.api != nil {
		run("api", func() error { return e.api.run(rctx) })
	}
	if e.console != nil {
		run("console", func() error { return e.console.Run(rctx) })
	}
	if e.tap != nil {
		run("console tap", func() error { return e.tap.Run(rctx) })
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	for what, ready := range map[string]<-chan struct{}{"command": e.cmds.Ready(), "broadcast": e.groups.Ready()} {
		select {
		case <-ready:
		case <-wctx.Done():
			e.log.Warn(what + " subscription not confirmed yet")
		}
	}
	wcancel()
	e.admin.ready.Store(true)
	natsNote := e.NATSURL()
	if e.emb != nil {
		natsNote += " (embedded: backends connect here)"
	}
	registry := "memory (single node)"
	if e.rdb != nil {
		registry = "redis"
	}
	e.log.Info("edge node started", "node", e.nodeID, "websocket", displayAddr(e.WSAddr()), "api", displayAddr(e.APIAddr()),
		"admin", displayAddr(e.AdminAddr()), "nats", natsNote, "registry", registry)
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		e.log.Error("component failed; shutting down", "err", runErr)
	}
	sctx, scancel := context.WithTimeout(context.Background(), e.cfg.DrainTimeout)
	defer scancel()
	return errors.Join(runErr, e.Shutdown(sctx))
}

// Shutdown drains in DESIGN.md's order: not ready → delay → stop accepting
// → close connections in waves with 1001 (DISCONNECT for each) → registry
// cleanup → events flushed → NATS drain. Safe to call twice.
func (e *Edge) Shutdown(ctx context.Context) error {
	e.shutdownOnce.Do(func() {
		e.admin.ready.Store(false)
		e.draining.Store(true)
		e.log.Info("draining", "node", e.nodeID, "connections", e.ws.Count(), "delay", e.cfg.DrainDelay)
		if e.cfg.DrainDelay > 0 {
			select {
			case <-time.After(e.cfg.DrainDelay):
			case <-ctx.Done():
			}
		}
		var errs []error
		add := func(err error) {
			if err != nil {
				errs = append(errs, err)
			}
		}
		add(e.ws.Shutdown(ctx)) // every connection closed and its DISCONNECT queued
		if e.tlsLn != nil {
			e.tlsLn.Wait() // the TLS bridges end with their connections
		}
		// After the edge: the close frames of relayed connections went
		// through their pipes. Clients relayed here to another owner lose
		// their socket and resume elsewhere.
		add(e.relay.Shutdown(ctx))
		add(e.handler.Shutdown(ctx)) // every record removed (or queued for the registry)
		add(e.groups.Shutdown(ctx))
		if e.console != nil {
			add(e.console.Shutdown(ctx)) // ends the event tails before their servers wait for them
		}
		if e.tap != nil {
			add(e.tap.Shutdown(ctx))
		}
		if e.api != nil {
			add(e.api.shutdown(ctx))
		}
		add(e.cmds.Shutdown(ctx))
		add(e.router.Shutdown(ctx))
		add(e.janitor.Shutdown(ctx))
		add(e.lc.Shutdown(ctx)) // events flushed to NATS
		add(e.node.Shutdown(ctx))
		if e.cancel != nil {
			e.cancel()
		}
		add(e.admin.shutdown(ctx))
		e.wg.Wait()
		e.closeDeps()
		e.shutdownErr = errors.Join(errs...)
		e.log.Info("edge node stopped", "node", e.nodeID)
	})
	return e.shutdownErr
}

// abandon undoes a NewEdge that failed part way: what was built holds
// subscriptions (the lifecycle's replies) and connections that nothing else
// would ever release.
func (e *Edge) abandon() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if e.handler != nil {
		_ = e.handler.Shutdown(ctx)
	}
	if e.groups != nil {
		_ = e.groups.Shutdown(ctx)
	}
	if e.relay != nil {
		_ = e.relay.Shutdown(ctx)
	}
	if e.cmds != nil {
		_ = e.cmds.Shutdown(ctx) // closes -direct-listen
	}
	if e.lc != nil {
		_ = e.lc.Shutdown(ctx)
	}
	e.closeDeps()
}

// closeDeps drains NATS, closes Redis and stops the embedded NATS server.
func (e *Edge) closeDeps() {
	if e.nc != nil {
		if err := e.nc.Drain(); err == nil {
			for i := 0; i < 500 && !e.nc.IsClosed(); i++ {
				time.Sleep(10 * time.Millisecond)
			}
		}
		e.nc.Close()
	}
	if e.rdb != nil {
		_ = e.rdb.Close()
	}
	if e.emb != nil {
		e.emb.shutdown()
	}
}

func connectNATS(url string, cfg NATS, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
	}
	opts = append(opts, extra...)
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.NKeySeed != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeySeed)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed: %w", err)
		}
		opts = append(opts, o)
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", url, err)
	}
	return nc, nil
}

// buildSecurity sets up the JWT authorizer, admission control and client IP
// resolution from cfg (each off unless configured: nil).
func (e *Edge) buildSecurity(cfg EdgeConfig, log *slog.Logger) (jwt *authn.JWT, adm *admission.Controller, err error) {
	prefixes, err := clientip.ParsePrefixes(cfg.TrustedProxies)
	if err != nil {
		return nil, nil, fmt.Errorf("trusted proxies: %w", err)
	}
	e.trusted = prefixes
	if len(prefixes) > 0 {
		cip, err := clientip.New(clientip.Config{TrustedProxies: prefixes, Header: cfg.ForwardedHeader})
		if err != nil {
			return nil, nil, err
		}
		e.clientIP = cip.ClientIPString
		e.trustedPeer = cip.Trusted
	}
	if cfg.JWT.Enabled() {
		j := cfg.JWT
		j.ValidUserID = rules.ValidName
		jwt, err = authn.New(j, log)
		if err != nil {
			return nil, nil, fmt.Errorf("jwt: %w", err)
		}
	}
	if cfg.Admission.Enabled() {
		if adm, err = admission.New(cfg.Admission, e.reg); err != nil {
			return nil, nil, err
		}
	}
	return jwt, adm, nil
}

// listen opens the WebSocket listener, behind a PROXY protocol reader when
// configured.
func (e *Edge) listen(cfg EdgeConfig) (net.Listener, error) {
	ln, err := listenFlag("listen", cfg.Edge.Listen, "")
	if err != nil {
		return nil, err
	}
	if cfg.ProxyProtocol != "off" { // the PROXY header comes first, before any TLS
		pl, err := proxyproto.Listen(ln, proxyproto.Config{Required: cfg.ProxyProtocol == "required",
			Trusted: e.trusted, HeaderTimeout: cfg.Edge.HandshakeTimeout})
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("proxy protocol: %w", err)
		}
		ln = pl
	}
	if cfg.WSTLSCert != "" {
		rl, err := tlsreload.New(tlsreload.Config{CertFile: cfg.WSTLSCert, KeyFile: cfg.WSTLSKey}, e.log)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("websocket tls: %w", err)
		}
		tcfg := rl.TLSConfig()
		tcfg.NextProtos = []string{"http/1.1"} // WebSocket upgrades are HTTP/1.1
		tl, err := tlsterm.Listen(ln, tcfg, cfg.Edge.HandshakeTimeout)
		if err != nil {
			ln.Close()
			return nil, err
		}
		ln = tl
		e.tlsLn = tl
	}
	return ln, nil
}
