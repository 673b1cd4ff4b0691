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
		c.Prefix = "switchboard"
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
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
	return &Router{cfg: cfg, deps: deps, log: log, m: deps.Metrics.orNop(), cache: newOwnerCache(cfg.CacheSize)}, nil
}

// Post implements conn.Controller.
func (r *Router) Post(ctx context.Context, id string, data []byte, binary bool) error {
	start := time.Now()
	if r.isLocal(id) {
		err := r.deps.Local.Post(ctx, id, data, binary)
		r.done(cmdPost, "local", start, err)
		return err
	}
	msg := nats.NewMsg("")
	msg.Header.Set(hdrCommand, cmdPost)
	msg.Header.Set(hdrID, id)
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
	msg := nats.NewMsg("")
	msg.Header.Set(hdrCommand, cmdInfo)
	msg.Header.Set(hdrID, id)
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
	msg := nats.NewMsg("")
	msg.Header.Set(hdrCommand, cmdClose)
	msg.Header.Set(hdrID, id)
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
			return fmt.Errorf("state of %s: %w: this node keeps no state", id, errRemote)
		}
		err := ss.SetState(ctx, id, state)
		r.done(cmdState, "local", start, err)
		return err
	}
	msg := nats.NewMsg("")
	msg.Header.Set(hdrCommand, cmdState)
	msg.Header.Set(hdrID, id)
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
	r.m.routed.WithLabelValues(cmd, resultLabel(err)).Inc()
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

// remote sends a command to id's owner and maps the answer to conn errors.
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
	// The earlier of the caller's deadline and ours.
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	msg.Subject = nodeSubject(r.cfg.Prefix, node)
	reply, err := r.deps.NC.RequestMsgWithContext(ctx, msg)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			return nil, r.unreachable(ctx, id, node, err)
		}
		return nil, fmt.Errorf("%s on %s: %w: %w", id, node, conn.ErrUnavailable, err)
	}
	if err := statusError(reply.Header.Get(hdrStatus), reply.Header.Get(hdrError)); err != nil {
		if errors.Is(err, conn.ErrGone) {
			r.cache.drop(id)
		}
		return nil, fmt.Errorf("%s on %s: %w", id, node, err)
	}
	return reply, nil
}

// unreachable decides between "the owner died" (410: its connections are
// gone with it) and "the owner is slow or cut off" (503).
func (r *Router) unreachable(ctx context.Context, id, node string, cause error) error {
	// ctx may be spent: the check gets its own short budget.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	alive, err := r.deps.Registry.NodeAlive(cctx, node)
	if err == nil && !alive {
		r.cache.drop(id)
		return fmt.Errorf("%s: owner %s is dead: %w", id, node, conn.ErrGone)
	}
	return fmt.Errorf("%s on %s: %w: %w", id, node, conn.ErrUnavailable, cause)
}
