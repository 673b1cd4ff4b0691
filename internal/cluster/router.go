package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/nodecmd"
	"github.com/switchboardgw/switchboard/internal/rules"
)

// Local is the edge's own hub: commands for connections it owns skip NATS.
type Local interface {
	conn.Controller
	// Owns reports whether the connection lives on this node right now.
	Owns(id string) bool
}

// RouterConfig configures a Router.
type RouterConfig struct {
	// Prefix starts every NATS subject. Default "switchboard".
	Prefix string
	// Self is this node's ID, or "" in a router-only process.
	Self string
	// Timeout bounds one remote command (a caller's earlier deadline wins).
	// Default 5s.
	Timeout time.Duration
	// CacheSize bounds the owner cache (entries, ~100 bytes each). Default
	// 100000.
	CacheSize int
	// Direct: send commands on an owner's direct connection when it has
	// one (DirectConfig), through NATS otherwise. Shutdown closes them.
	Direct bool
}

// Validate checks the config.
func (c RouterConfig) Validate() error {
	if err := validSubjectPrefix(c.Prefix); err != nil {
		return err
	}
	if c.Self != "" && !ValidNodeID(c.Self) {
		return fmt.Errorf("cluster: router config: self %q: %w", c.Self, ErrInvalidNodeID)
	}
	if c.Timeout < 0 || c.CacheSize < 0 {
		return errors.New("cluster: router config: negative value")
	}
	return nil
}

func (c RouterConfig) withDefaults() RouterConfig {
	if c.Prefix == "" {
		c.Prefix = nodecmd.DefaultPrefix
	}
	if c.Timeout == 0 {
		c.Timeout = nodecmd.DefaultTimeout
	}
	if c.CacheSize == 0 {
		c.CacheSize = 100000
	}
	return c
}

// validSubjectPrefix checks the subject prefix (rules.CheckSubjectPrefix);
// "" is the default.
func validSubjectPrefix(p string) error {
	if p == "" {
		return nil
	}
	if err := rules.CheckSubjectPrefix(p); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

// RouterDeps are what a Router uses.
type RouterDeps struct {
	// NC carries commands to other nodes. Required.
	NC *nats.Conn
	// Registry finds owners. Required.
	Registry Registry
	// Local is this node's hub; nil in a router-only process.
	Local   Local
	Logger  *slog.Logger
	Metrics *Metrics
}

// Router is a conn.Controller for every connection in the cluster: local
// ones go straight to the hub, others to their owner over NATS.
type Router struct {
	cfg   RouterConfig
	deps  RouterDeps
	log   *slog.Logger
	m     *Metrics
	cache *ownerCache
	calls *nodecmd.Client
}

var _ conn.Controller = (*Router)(nil)

// NewRouter returns a router. It holds no goroutines: nothing to run or shut
// down.
func NewRouter(cfg RouterConfig, deps RouterDeps) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NC == nil || deps.Registry == nil {
		return nil, errors.New("cluster: router needs a NATS connection and a Registry")
	}
	cfg = cfg.withDefaults()
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	calls, err := nodecmd.NewClient(nodecmd.ClientConfig{Prefix: cfg.Prefix, Timeout: cfg.Timeout, Direct: cfg.Direct}, deps.NC, deps.Registry)
	if err != nil {
		return nil, fmt.Errorf("cluster: router: %w", err)
	}
	return &Router{cfg: cfg, deps: deps, log: log, m: deps.Metrics.orNop(), cache: newOwnerCache(cfg.CacheSize), calls: calls}, nil
}

// Post implements conn.Controller.
func (r *Router) Post(ctx context.Context, id string, data []byte, binary bool) error {
	start := time.Now()
	if r.isLocal(id) {
		err := r.deps.Local.Post(ctx, id, data, binary)
		r.done(cmdPost, "local", start, err)
		return err
	}
	msg := nodecmd.NewRequest(cmdPost, id)
	if binary {
		msg.Header.Set(hdrBinary, "1")
	}
	msg.Data = data
	_, err := r.remote(ctx, id, msg)
	r.done(cmdPost, "remote", start, err)
	return err
}

// Info implements conn.Controller.
func (r *Router) Info(ctx context.Context, id string) (conn.Info, error) {
	start := time.Now()
	if r.isLocal(id) {
		info, err := r.deps.Local.Info(ctx, id)
		r.done(cmdInfo, "local", start, err)
		return info, err
	}
	msg := nodecmd.NewRequest(cmdInfo, id)
	reply, err := r.remote(ctx, id, msg)
	var info conn.Info
	if err == nil {
		if uerr := json.Unmarshal(reply.Data, &info); uerr != nil {
			err = fmt.Errorf("info %s: decode reply: %w", id, uerr)
		}
	}
	r.done(cmdInfo, "remote", start, err)
	return info, err
}

// Close implements conn.Controller.
func (r *Router) Close(ctx context.Context, id string, code int, reason string) error {
	start := time.Now()
	if err := rules.CheckClose(code, reason); err != nil {
		err = fmt.Errorf("close %s: %w", id, err)
		r.done(cmdClose, "local", start, err)
		return err
	}
	if r.isLocal(id) {
		err := r.deps.Local.Close(ctx, id, code, reason)
		r.done(cmdClose, "local", start, err)
		return err
	}
	msg := nodecmd.NewRequest(cmdClose, id)
	msg.Header.Set(hdrCode, strconv.Itoa(code))
	msg.Data = []byte(reason)
	_, err := r.remote(ctx, id, msg)
	r.done(cmdClose, "remote", start, err)
	return err
}

// SetState implements conn.StateSetter: it replaces the state a connection
// carries on its later events, on whichever node owns it.
func (r *Router) SetState(ctx context.Context, id string, state json.RawMessage) error {
	start := time.Now()
	if !conn.ValidState(state) {
		err := fmt.Errorf("state of %s: %w", id, conn.ErrInvalidState)
		r.done(cmdState, "local", start, err)
		return err
	}
	if r.isLocal(id) {
		ss, ok := r.deps.Local.(conn.StateSetter)
		if !ok {
			return fmt.Errorf("state of %s: %w: this node keeps no state", id, nodecmd.ErrRemote)
		}
		err := ss.SetState(ctx, id, state)
		r.done(cmdState, "local", start, err)
		return err
	}
	msg := nodecmd.NewRequest(cmdState, id)
	msg.Data = state
	_, err := r.remote(ctx, id, msg)
	r.done(cmdState, "remote", start, err)
	return err
}

func (r *Router) isLocal(id string) bool {
	return r.deps.Local != nil && conn.ValidID(id) && r.deps.Local.Owns(id)
}

func (r *Router) done(cmd, path string, start time.Time, err error) {
	r.m.routeSeconds.WithLabelValues(cmd, path).Observe(time.Since(start).Seconds())
	r.m.routed.WithLabelValues(cmd, nodecmd.Status(err)).Inc()
}

// owner finds the node that owns id, from the cache or the registry.
func (r *Router) owner(ctx context.Context, id string) (string, error) {
	if node, ok := r.cache.get(id); ok {
		r.m.cacheHits.Inc()
		return node, nil
	}
	r.m.cacheMisses.Inc()
	rec, err := r.deps.Registry.Lookup(ctx, id)
	if err != nil {
		if errors.Is(err, conn.ErrGone) {
			return "", err
		}
		return "", fmt.Errorf("%w: %w", conn.ErrUnavailable, err)
	}
	if !ValidNodeID(rec.Node) {
		return "", fmt.Errorf("owner of %s: %q: %w", id, rec.Node, ErrInvalidNodeID)
	}
	r.cache.put(id, rec.Node)
	return rec.Node, nil
}

// Shutdown closes the direct connections to other nodes (RouterConfig.Direct);
// later calls go through NATS.
func (r *Router) Shutdown(context.Context) error {
	r.calls.Close()
	return nil
}

// Command sends another package's command (nodecmd.NewRequest; its name
// a constant: it labels metrics) to the node that owns msg's connection,
// with the same owner lookup, timeout and dead-owner rule as the
// connection commands. The caller has checked that the connection is not
// local.
func (r *Router) Command(ctx context.Context, msg *nats.Msg) (*nats.Msg, error) {
	start := time.Now()
	reply, err := r.remote(ctx, msg.Header.Get(nodecmd.HdrID), msg)
	r.done(msg.Header.Get(nodecmd.HdrCommand), "remote", start, err)
	return reply, err
}

// remote sends a command to id's owner; nodecmd maps the answer, or its
// absence, to conn errors.
func (r *Router) remote(ctx context.Context, id string, msg *nats.Msg) (*nats.Msg, error) {
	if !conn.ValidID(id) {
		return nil, fmt.Errorf("%q: %w", id, conn.ErrInvalidID)
	}
	node, err := r.owner(ctx, id)
	if err != nil {
		return nil, err
	}
	if node == r.cfg.Self {
		// Recorded here, but the hub does not have it: it has closed.
		r.cache.drop(id)
		return nil, fmt.Errorf("%s: %w", id, conn.ErrGone)
	}
	reply, err := r.calls.Call(ctx, node, msg)
	if errors.Is(err, conn.ErrGone) {
		r.cache.drop(id)
	}
	return reply, err
}
