package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/switchboardgw/switchboard/internal/cluster"
	"github.com/switchboardgw/switchboard/internal/console"
	"github.com/switchboardgw/switchboard/internal/groups"
)

// RouterConfig configures the stateless @connections API tier.
type RouterConfig struct {
	Process
	NATS
	Redis
	API
	// ShutdownTimeout bounds the graceful shutdown.
	ShutdownTimeout time.Duration
	// DirectCommands: reach edges on their -direct-listen where they have one.
	DirectCommands bool
}

// RegisterFlags binds every field to a flag with its default.
func (c *RouterConfig) RegisterFlags(fs *flag.FlagSet) {
	c.Process.registerFlags(fs)
	c.NATS.registerFlags(fs, "NATS server URL(s), comma-separated (required)")
	c.Redis.registerFlags(fs, "Redis URL of the ownership registry, e.g. redis://host:6379/0 (this or -redis-addrs is required)")
	c.API.registerFlags(fs, ":9090")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "finish in-flight API calls within this on SIGTERM")
	fs.BoolVar(&c.DirectCommands, "direct-commands", false, "send @connections calls to an edge on its -direct-listen connection where it has one, skipping nats-server (docs/cluster.md, \"Direct commands\"); NATS otherwise")
}

// Validate reports every setting that cannot work.
func (c *RouterConfig) Validate() error {
	var errs []error
	errs = append(errs, c.Process.validate()...)
	errs = append(errs, c.NATS.validate()...)
	errs = append(errs, c.Redis.validate()...)
	errs = append(errs, c.API.validate()...)
	if c.NATS.URL == "" {
		errs = append(errs, errors.New("-nats-url is required: the router reaches edges over NATS"))
	}
	if !c.Redis.Configured() {
		errs = append(errs, errors.New("-redis-url or -redis-addrs is required: the router finds owners in Redis"))
	}
	if c.API.Listen == "" {
		errs = append(errs, errors.New("-api-listen is required"))
	}
	return errors.Join(errs...)
}

// Router is a running router process: the @connections API for every
// connection in the cluster, with nothing of its own to lose.
type Router struct {
	cfg    RouterConfig
	log    *slog.Logger
	reg    *prometheus.Registry
	nc     *nats.Conn
	rdb    redis.UniversalClient
	api    *apiServer
	groups *groups.Service
	router *cluster.Router
	admin  *admin
	cons   *console.Service // nil when off
	cancel context.CancelFunc
	wg     sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
}

// NewRouter builds a router from cfg.
func NewRouter(cfg RouterConfig, log *slog.Logger) (_ *Router, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Router{cfg: cfg, log: log, reg: newRegistry()}
	defer func() {
		if err != nil {
			r.closeDeps()
		}
	}()
	if r.nc, err = connectNATS(cfg.NATS.URL, cfg.NATS, "switchboard-router", log); err != nil {
		return nil, err
	}
	if err := natsConnectedGauge(r.reg, r.nc); err != nil {
		return nil, err
	}
	if r.rdb, err = newRedisClient(cfg.Redis); err != nil {
		return nil, err
	}
	registry, err := cluster.NewRedisRegistry(cluster.RedisConfig{KeyPrefix: cfg.Redis.KeyPrefix}, r.rdb)
	if err != nil {
		return nil, err
	}
	cm, err := cluster.NewMetrics(r.reg)
	if err != nil {
		return nil, err
	}
	router, err := cluster.NewRouter(cluster.RouterConfig{Prefix: cfg.NATS.Prefix, Direct: cfg.DirectCommands},
		cluster.RouterDeps{NC: r.nc, Registry: registry, Logger: log, Metrics: cm})
	if err != nil {
		return nil, err
	}
	r.router = router
	gstore, err := newGroupStore(r.rdb, cfg.Redis.KeyPrefix)
	if err != nil {
		return nil, err
	}
	r.groups, err = groups.New(groups.Config{Prefix: cfg.NATS.Prefix}, groups.Deps{NC: r.nc, Store: gstore, Registerer: r.reg, Logger: log,
		Remote: router.Command})
	if err != nil {
		return nil, err
	}
	if r.api, err = newAPIServer(cfg.API, router, r.groups, registry, r.reg, log); err != nil {
		return nil, err
	}
	if err := r.api.enableTLS(cfg.Process, log); err != nil {
		return nil, err
	}
	if r.admin, err = newAdmin(cfg.AdminListen, r.reg, cfg.Pprof, log); err != nil {
		return nil, err
	}
	r.admin.check = func() error {
		if !r.nc.IsConnected() {
			return errors.New("nats not connected")
		}
		return nil
	}
	if r.cons, err = newConsole(cfg.Console, consoleDeps{nc: r.nc, prefix: cfg.NATS.Prefix, nodeID: cluster.NewNodeID("router"), role: "router",
		gatherer: r.reg, ready: r.admin.ready.Load, draining: func() bool { return false }, api: r.api, admin: r.admin, log: log}); err != nil {
		return nil, err
	}
	return r, nil
}

// APIAddr is the API listener's address.
func (r *Router) APIAddr() string { return r.api.addr() }

// AdminAddr is the admin listener's address.
func (r *Router) AdminAddr() string { return r.admin.ln.Addr().String() }

// Run serves until ctx ends, then shuts down.
func (r *Router) Run(ctx context.Context) error {
	rctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	errc := make(chan error, 4)
	r.wg.Add(3)
	go func() {
		defer r.wg.Done()
		if err := r.groups.Run(rctx); err != nil && !errors.Is(err, context.Canceled) {
			errc <- fmt.Errorf("groups: %w", err)
		}
	}()
	go func() {
		defer r.wg.Done()
		if err := r.api.run(rctx); err != nil {
			errc <- fmt.Errorf("api: %w", err)
		}
	}()
	go func() {
		defer r.wg.Done()
		if err := r.admin.run(); err != nil {
			errc <- err
		}
	}()
	if r.cons != nil {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := r.cons.Run(rctx); err != nil {
				errc <- err
			}
		}()
	}
	r.admin.ready.Store(true)
	r.log.Info("router started", "api", displayAddr(r.APIAddr()), "admin", displayAddr(r.AdminAddr()))
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	sctx, scancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
	defer scancel()
	return errors.Join(runErr, r.Shutdown(sctx))
}

// Shutdown stops taking calls, finishes those in flight, and closes. Safe twice.
func (r *Router) Shutdown(ctx context.Context) error {
	r.shutdownOnce.Do(func() {
		r.admin.ready.Store(false)
		var err error
		if r.cons != nil {
			err = r.cons.Shutdown(ctx) // ends the event tails before their servers wait for them
		}
		err = errors.Join(err, r.api.shutdown(ctx))
		err = errors.Join(err, r.groups.Shutdown(ctx))
		err = errors.Join(err, r.router.Shutdown(ctx)) // its direct connections, once no call is in flight
		if r.cancel != nil {
			r.cancel()
		}
		err = errors.Join(err, r.admin.shutdown(ctx))
		r.wg.Wait()
		r.closeDeps()
		r.shutdownErr = err
		r.log.Info("router stopped")
	})
	return r.shutdownErr
}

func (r *Router) closeDeps() {
	if r.nc != nil {
		r.nc.Close()
	}
	if r.rdb != nil {
		_ = r.rdb.Close()
	}
}
