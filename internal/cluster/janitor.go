package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/switchboardgw/switchboard/internal/service"
)

// JanitorConfig configures dead-node cleanup.
type JanitorConfig struct {
	// Interval between looks for dead nodes. Default 5s.
	Interval time.Duration
	// LockTTL is how long a cleanup lock lasts; it is extended after every
	// page, so it only needs to outlast one page. If the holder dies, another
	// node takes over after it. Default 30s.
	LockTTL time.Duration
	// PageSize is how many connections are read per round trip. Default 500.
	PageSize int
}

// Validate rejects negative values.
func (c JanitorConfig) Validate() error {
	if c.Interval < 0 || c.LockTTL < 0 || c.PageSize < 0 {
		return errors.New("cluster: janitor config: negative value")
	}
	return nil
}

func (c JanitorConfig) withDefaults() JanitorConfig {
	if c.Interval == 0 {
		c.Interval = DefaultJanitorInterval
	}
	if c.LockTTL == 0 {
		c.LockTTL = 30 * time.Second
	}
	if c.PageSize == 0 {
		c.PageSize = defaultPageSize
	}
	return c
}

// JanitorDeps are what a Janitor uses.
type JanitorDeps struct {
	// Registry is required.
	Registry Registry
	// Self is this node's ID: the lock holder. A node never cleans itself up.
	// Required.
	Self string
	// OnOrphan is called once for each connection of a dead node, before its
	// record is deleted (the lead wires it to a DISCONNECT event with status
	// 1006, reason "node lost"). Required.
	OnOrphan func(ctx context.Context, rec ConnRecord)
	// Healthy, if set, is asked before each sweep: a fenced node does not
	// clean up others.
	Healthy func() bool
	Logger  *slog.Logger
	Metrics *Metrics
}

// Janitor finds nodes whose lease expired and, one node at a time across the
// cluster, announces their connections as orphaned and removes them.
type Janitor struct {
	cfg  JanitorConfig
	deps JanitorDeps
	log  *slog.Logger
	m    *Metrics

	gate service.Gate
}

// NewJanitor returns a janitor; Run starts it.
func NewJanitor(cfg JanitorConfig, deps JanitorDeps) (*Janitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Registry == nil || deps.OnOrphan == nil || !ValidNodeID(deps.Self) {
		return nil, errors.New("cluster: janitor needs a Registry, OnOrphan and a valid Self")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Janitor{
		cfg:  cfg.withDefaults(),
		deps: deps,
		log:  log.With("janitor", deps.Self),
		m:    deps.Metrics.orNop(),
	}, nil
}

// Run sweeps every Interval until ctx ends or Shutdown.
func (j *Janitor) Run(ctx context.Context) error {
	if err := j.gate.Start("cluster: janitor"); err != nil {
		return err
	}
	defer j.gate.Finish()
	t := time.NewTicker(j.cfg.Interval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-j.gate.Stopping():
			return nil
		case <-t.C:
		}
		if j.deps.Healthy != nil && !j.deps.Healthy() {
			continue
		}
		if _, err := j.Sweep(ctx); err != nil && ctx.Err() == nil {
			j.m.cleanupFails.Inc()
			j.log.Warn("dead-node cleanup failed; will retry", "err", err)
		}
	}
}

// Shutdown stops the janitor; a cleanup in progress stops after its current
// page and is finished by another node later. Safe to call twice.
func (j *Janitor) Shutdown(ctx context.Context) error {
	return j.gate.Stop(ctx, "cluster: janitor")
}

// Sweep cleans up every expired node it can lock now and returns how many
// connections it orphaned.
func (j *Janitor) Sweep(ctx context.Context) (int, error) {
	nodes, err := j.deps.Registry.ExpiredNodes(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	var errs []error
	for _, node := range nodes {
		if node == j.deps.Self || !ValidNodeID(node) {
			continue
		}
		n, err := j.cleanNode(ctx, node)
		total += n
		if err != nil {
			errs = append(errs, fmt.Errorf("clean up %s: %w", node, err))
		}
	}
	return total, errors.Join(errs...)
}

// CleanNode runs the cleanup of one expired node now, whatever its ID: a
// process restarted with a fixed node ID runs it for what its previous
// incarnation left (Sweep skips this node's own ID). It does nothing and
// returns 0, nil if node's lease is current or another holder is cleaning it.
func (j *Janitor) CleanNode(ctx context.Context, node string) (int, error) {
	if !ValidNodeID(node) {
		return 0, fmt.Errorf("clean up %q: %w", node, ErrInvalidNodeID)
	}
	n, err := j.cleanNode(ctx, node)
	if err != nil {
		return n, fmt.Errorf("clean up %s: %w", node, err)
	}
	return n, nil
}

// errLockLost: the cleanup lock expired under us; another node continues.
var errLockLost = errors.New("cleanup lock lost")

func (j *Janitor) cleanNode(ctx context.Context, node string) (int, error) {
	reg := j.deps.Registry
	ok, err := reg.AcquireCleanup(ctx, node, j.deps.Self, j.cfg.LockTTL)
	if err != nil || !ok {
		return 0, err
	}
	defer func() {
		// Give the lock up even if ctx is done, so another node need not
		// wait for it to expire.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = reg.ReleaseCleanup(rctx, node, j.deps.Self)
	}()
	j.log.Info("cleaning up dead node", "dead_node", node)
	// A walk may return a connection twice; announce each once.
	seen := make(map[string]struct{})
	orphaned := 0
	for {
		cursor := ""
		for {
			page, next, err := reg.NodeConns(ctx, node, cursor, j.cfg.PageSize)
			if err != nil {
				return orphaned, err
			}
			ids := make([]string, 0, len(page))
			for _, rec := range page {
				ids = append(ids, rec.ID)
				if _, dup := seen[rec.ID]; dup {
					continue
				}
				seen[rec.ID] = struct{}{}
				j.deps.OnOrphan(ctx, rec)
				orphaned++
				j.m.orphans.Inc()
			}
			if err := reg.Unregister(ctx, node, ids...); err != nil {
				return orphaned, err
			}
			if ok, err := reg.AcquireCleanup(ctx, node, j.deps.Self, j.cfg.LockTTL); err != nil {
				return orphaned, err
			} else if !ok {
				return orphaned, errLockLost
			}
			if next == "" {
				break
			}
			cursor = next
		}
		// Nothing is added to a dead node's set, but a write that was in
		// flight when it died may land late: walk again until empty.
		left, err := reg.CountNode(ctx, node)
		if err != nil {
			return orphaned, err
		}
		if left == 0 {
			break
		}
	}
	removed, err := reg.RemoveNode(ctx, node)
	if err != nil {
		return orphaned, err
	}
	if removed {
		j.m.cleanups.Inc()
		j.log.Info("dead node cleaned up", "dead_node", node, "orphaned", orphaned)
	}
	return orphaned, nil
}
