package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboardgw/switchboard/internal/service"
)

// ErrRegistryUnavailable: a new connection could not be recorded because the
// registry is unreachable, and FailMode is closed. The edge rejects the
// connection (HTTP 503).
var ErrRegistryUnavailable = errors.New("cluster: registry unavailable")

// FailMode says what happens to new connections while the registry is
// unreachable.
type FailMode string

const (
	// FailOpen accepts them; they are recorded once the registry is back.
	// Until then other nodes cannot route to them (410).
	FailOpen FailMode = "open"
	// FailClosed rejects them.
	FailClosed FailMode = "closed"
)

// startTimeout bounds the first lease renewal (see beat).
const startTimeout = time.Second

// NodeConfig configures a Node.
type NodeConfig struct {
	// ID is this node's ID, unique per process start (NewNodeID). Required.
	ID string
	// LeaseTTL is how long the lease lasts without renewal; it is renewed
	// every LeaseTTL/3. Other nodes clean up this node's connections once it
	// expires. Default 15s.
	LeaseTTL time.Duration
	// FenceMargin: the lease is in doubt (the node fences itself) once
	// LeaseTTL − FenceMargin has passed, on this process's monotonic clock,
	// since the start of its last successful renewal. The lease cannot
	// expire earlier than that start + LeaseTTL; the margin covers clock
	// rate differences and the time between a check and the act it allows.
	// Default LeaseTTL/5.
	FenceMargin time.Duration
	// FailMode for new connections during a registry outage. Default open.
	FailMode FailMode
	// RetryMin is the first delay after a failed renewal; it doubles up to
	// LeaseTTL/3. Default 100ms.
	RetryMin time.Duration
	// MaxPending bounds writes remembered during an outage. Past it,
	// registrations are dropped for a full re-assert and removals are
	// dropped (counted in switchboard_registry_errors_total). Default 100000.
	MaxPending int
	// Batch configures the write coalescer.
	Batch BatcherConfig
}

// Validate checks the config.
func (c NodeConfig) Validate() error {
	if !ValidNodeID(c.ID) {
		return fmt.Errorf("cluster: node config: id %q: %w", c.ID, ErrInvalidNodeID)
	}
	return c.ValidateSettings()
}

// ValidateSettings is Validate without the ID, for a process that checks its
// flags before it has chosen its node ID.
func (c NodeConfig) ValidateSettings() error {
	if c.LeaseTTL < 0 || c.RetryMin < 0 || c.MaxPending < 0 {
		return errors.New("cluster: node config: negative value")
	}
	if c.LeaseTTL != 0 && c.LeaseTTL < 30*time.Millisecond {
		return fmt.Errorf("cluster: node config: lease TTL %v too short", c.LeaseTTL)
	}
	if c.FenceMargin < 0 || (c.FenceMargin > 0 && c.FenceMargin >= c.withDefaults().LeaseTTL/2) {
		return fmt.Errorf("cluster: node config: fence margin %v: want 0 (default) or less than half the lease TTL", c.FenceMargin)
	}
	switch c.FailMode {
	case "", FailOpen, FailClosed:
	default:
		return fmt.Errorf("cluster: node config: fail mode %q: want open or closed", c.FailMode)
	}
	return c.Batch.Validate()
}

func (c NodeConfig) withDefaults() NodeConfig {
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.FenceMargin == 0 {
		c.FenceMargin = c.LeaseTTL / 5
	}
	if c.FailMode == "" {
		c.FailMode = DefaultFailMode
	}
	if c.RetryMin == 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.MaxPending == 0 {
		c.MaxPending = 100000
	}
	return c
}

// NodeDeps are what a Node uses.
type NodeDeps struct {
	// Registry is required.
	Registry Registry
	// Reassert returns every live connection this node owns. It is called
	// when the lease was lost (expired, or Redis came back empty), and the
	// records are written again. Required.
	Reassert func(ctx context.Context) []ConnRecord
	// Revoked is called when other nodes declared this node dead and already
	// announced its connections as disconnected (or a later process with
	// the same node ID took over): the owner must close the connections it
	// still has, without DISCONNECT events, and must not let any event of
	// theirs be queued once it returns. The epoch changes after it returns
	// and only then are Wait's callers released. Optional.
	Revoked func(ctx context.Context)
	// CleanPrevious runs the janitor's cleanup of this node's own ID
	// (Janitor.CleanNode): called when this process found the lease of an
	// earlier incarnation, before it takes the lease. Optional: without it
	// the node waits for another node's janitor.
	CleanPrevious func(ctx context.Context) error
	// Now is the clock (tests); default time.Now, whose monotonic reading
	// the fence uses.
	Now     func() time.Time
	Logger  *slog.Logger
	Metrics *Metrics
}

// Node is this process's membership in the cluster: it holds the lease,
// records the connections the edge accepts, and fences the edge while it
// cannot prove it owns what it serves. It implements lifecycle.Fence.
//
// The fence is computed from the monotonic clock at the moment of asking
// (after a SIGSTOP/SIGCONT or a long GC pause no timer may have fired yet):
// once LeaseTTL − FenceMargin has passed since the start of the last
// successful renewal, the lease is in doubt. Then Healthy is false, Wait
// blocks (and wakes the heartbeat to renew at once) until the lease is
// renewed (everything resumes) or found revoked (Revoked closes every
// connection, the epoch changes, then the waiters are released).
type Node struct {
	cfg   NodeConfig
	reg   Registry
	deps  NodeDeps
	log   *slog.Logger
	m     *Metrics
	batch *Batcher
	now   func() time.Time
	inc   string // this process start's incarnation token

	mu           sync.Mutex
	healthy      bool
	outage       bool
	needReassert bool
	pendingReg   map[string]ConnRecord
	pendingUnreg map[string]struct{}
	// The fence. held: the lease was taken by this process at least once;
	// a node that never held it cannot have been declared dead.
	held       bool
	renewedAt  time.Time     // start of the last renewal that left the lease held
	revoking   bool          // between LeaseRevoked and the epoch change
	superseded bool          // a later process with this node ID took over
	changed    chan struct{} // closed (and replaced) when the fence resolves
	epoch      atomic.Uint64
	kick       chan struct{} // wakes the heartbeat: the lease is in doubt
	// Wait's lock-free fast path: while the lease is held, the time (since
	// base, monotonic) until which it is not in doubt; 0: take the lock.
	base      time.Time
	fastUntil atomic.Int64

	gate service.Gate
}

// NewNode returns a node; Run starts its heartbeat.
func NewNode(cfg NodeConfig, deps NodeDeps) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Registry == nil || deps.Reassert == nil {
		return nil, errors.New("cluster: node needs a Registry and a Reassert func")
	}
	cfg = cfg.withDefaults()
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := deps.Metrics.orNop()
	b, err := NewBatcher(cfg.Batch, deps.Registry, m)
	if err != nil {
		return nil, err
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	n := &Node{
		cfg:          cfg,
		reg:          deps.Registry,
		deps:         deps,
		log:          log.With("node", cfg.ID),
		m:            m,
		batch:        b,
		now:          now,
		inc:          NewIncarnation(),
		changed:      make(chan struct{}),
		kick:         make(chan struct{}, 1),
		needReassert: true,
		pendingReg:   make(map[string]ConnRecord),
		pendingUnreg: make(map[string]struct{}),
	}
	n.base = now()
	f := n.inDoubt
	m.inDoubt.Store(&f)
	return n, nil
}

// ID is this node's ID.
func (n *Node) ID() string { return n.cfg.ID }

// Healthy reports whether the node holds its lease and has recorded its
// connections. While false the edge must not accept connections: it may not
// own what it would record. A registry outage alone keeps the node healthy
// in fail-open mode (connections stay, new ones are recorded later) and makes
// it unhealthy in fail-closed mode — until the lease is in doubt (the outage
// lasted LeaseTTL − FenceMargin): then other nodes may have declared this
// one dead. A registry unreachable at start-up makes a fail-open node
// healthy: it never held a lease, so nobody can have declared it dead.
func (n *Node) Healthy() bool {
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.revoking || n.superseded:
		return false
	case n.inDoubtLocked(now):
		n.wake()
		return false
	case !n.held:
		return n.outage && n.cfg.FailMode == FailOpen
	}
	return n.healthy && !(n.outage && n.cfg.FailMode == FailClosed)
}

// inDoubtLocked: the lease may have expired (see Node). n.mu is held.
func (n *Node) inDoubtLocked(now time.Time) bool {
	if n.revoking {
		return true
	}
	if !n.held || n.superseded {
		return false
	}
	return now.Sub(n.renewedAt) > n.cfg.LeaseTTL-n.cfg.FenceMargin
}

// wake asks the heartbeat to renew now.
func (n *Node) wake() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Wait implements lifecycle.Fence: it returns nil at once while the lease is
// held (or was never held: nothing can have been declared dead), and blocks
// while it is in doubt until it is renewed or found revoked, or ctx ends.
// The edge calls it before every event it publishes and every API call it
// serves for its own connections.
func (n *Node) Wait(ctx context.Context) error {
	if u := n.fastUntil.Load(); u != 0 && int64(n.now().Sub(n.base)) <= u {
		return nil
	}
	for {
		now := n.now()
		n.mu.Lock()
		doubt := n.inDoubtLocked(now)
		ch := n.changed
		n.mu.Unlock()
		if !doubt {
			return nil
		}
		n.wake()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("cluster: lease in doubt: %w", ctx.Err())
		}
	}
}

// Epoch implements lifecycle.Fence: it changes every time this node's
// connections are revoked (after Revoked has closed them).
func (n *Node) Epoch() uint64 { return n.epoch.Load() }

// renewed records a successful renewal that started at start and releases
// Wait's callers.
func (n *Node) renewed(start time.Time) {
	n.mu.Lock()
	if !n.held || start.After(n.renewedAt) {
		n.renewedAt = start
	}
	n.held = true
	n.resolveLocked()
	n.mu.Unlock()
}

// resolveLocked wakes Wait's callers to look again. n.mu is held.
func (n *Node) resolveLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
	if n.held && !n.revoking && !n.superseded {
		n.fastUntil.Store(int64(n.renewedAt.Sub(n.base) + n.cfg.LeaseTTL - n.cfg.FenceMargin))
	} else {
		n.fastUntil.Store(0)
	}
}

// inDoubt reports, for the metric, whether the lease is in doubt now.
func (n *Node) inDoubt() bool {
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.inDoubtLocked(now)
}

func (n *Node) setHealthy(h bool) {
	n.mu.Lock()
	n.healthy = h
	n.mu.Unlock()
	if h {
		n.m.leaseHeld.Set(1)
	} else {
		n.m.leaseHeld.Set(0)
	}
}

// RegisterNew records a connection the edge is about to accept (before the
// 101). It blocks until the record is durable. When the registry is
// unreachable it returns nil in fail-open mode (the record is written when
// the registry is back) and an error wrapping ErrRegistryUnavailable in
// fail-closed mode.
func (n *Node) RegisterNew(ctx context.Context, rec ConnRecord) error {
	if rec.Node == "" {
		rec.Node = n.cfg.ID
	}
	if rec.Node != n.cfg.ID {
		return fmt.Errorf("register %s: record names node %q, this is %q: %w", rec.ID, rec.Node, n.cfg.ID, ErrInvalidNodeID)
	}
	if err := checkRecord(rec); err != nil {
		return err
	}
	n.mu.Lock()
	// Until this process holds the lease, nothing is written into the node's
	// set: it may still hold what an earlier incarnation left, being cleaned
	// up (announced and deleted). Queued, it is written after the lease.
	outage := n.outage || !n.held
	n.mu.Unlock()
	var err error
	if !outage {
		// Known outage: do not make every connect wait for a timeout.
		if err = n.batch.Register(ctx, rec); err == nil {
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, ErrClosed) {
			return fmt.Errorf("register %s: %w", rec.ID, err)
		}
	}
	if n.cfg.FailMode == FailClosed {
		if err == nil {
			return fmt.Errorf("register %s: %w", rec.ID, ErrRegistryUnavailable)
		}
		return fmt.Errorf("register %s: %w: %w", rec.ID, ErrRegistryUnavailable, err)
	}
	n.queueRegister(rec)
	return nil
}

// Unregister removes a closed connection's record. A failure is not the
// caller's problem: the removal is retried with the next heartbeat.
func (n *Node) Unregister(ctx context.Context, id string) {
	n.mu.Lock()
	delete(n.pendingReg, id)
	outage := n.outage
	// A re-assert in progress may have read this connection as live: remove
	// it again afterwards.
	if n.needReassert {
		n.addUnregLocked(id)
	}
	n.mu.Unlock()
	if !outage {
		if err := n.batch.Unregister(ctx, n.cfg.ID, id); err == nil {
			return
		}
	}
	n.mu.Lock()
	n.addUnregLocked(id)
	n.mu.Unlock()
}

func (n *Node) queueRegister(rec ConnRecord) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.pendingUnreg, rec.ID)
	if len(n.pendingReg)+len(n.pendingUnreg) >= n.cfg.MaxPending {
		// Too many to remember one by one: re-assert everything instead.
		clear(n.pendingReg)
		n.needReassert = true
	} else {
		n.pendingReg[rec.ID] = rec
	}
	n.m.pending.Set(float64(len(n.pendingReg) + len(n.pendingUnreg)))
}

func (n *Node) addUnregLocked(id string) {
	if len(n.pendingReg)+len(n.pendingUnreg) >= n.cfg.MaxPending {
		n.m.registryErrors.WithLabelValues("unregister_dropped").Inc()
		return
	}
	n.pendingUnreg[id] = struct{}{}
	n.m.pending.Set(float64(len(n.pendingReg) + len(n.pendingUnreg)))
}

// Run renews the lease until ctx ends or Shutdown. The node becomes healthy
// after the first renewal and re-assert succeed.
func (n *Node) Run(ctx context.Context) error {
	if err := n.gate.Start("cluster: node"); err != nil {
		return err
	}
	defer n.gate.Finish()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := n.batch.Run(ctx); err != nil {
			n.log.Error("batcher stopped", "err", err)
		}
	})
	wg.Go(func() {
		select {
		case <-n.gate.Stopping():
			cancel()
		case <-ctx.Done():
		}
	})
	n.heartbeat(ctx)
	cancel()
	wg.Wait()
	return nil
}

func (n *Node) heartbeat(ctx context.Context) {
	interval := n.cfg.LeaseTTL / 3
	retry := n.cfg.RetryMin
	t := time.NewTimer(0)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
			// The lease is in doubt: renew now, not when the timer says
			// (after a pause it may not have fired yet), but not more often
			// than RetryMin while the registry keeps failing.
			if d := n.cfg.RetryMin - n.now().Sub(last); d > 0 {
				t.Reset(d)
				continue
			}
		}
		last = n.now()
		if n.beat(ctx, interval) {
			retry = n.cfg.RetryMin
			t.Reset(interval)
			continue
		}
		t.Reset(retry)
		retry = min(2*retry, interval)
	}
}

// beat renews the lease once and acts on what it found; false means retry
// soon.
func (n *Node) beat(ctx context.Context, interval time.Duration) bool {
	n.mu.Lock()
	inc := Incarnation{Token: n.inc, New: !n.held}
	superseded := n.superseded
	starting := !n.held && !n.outage
	n.mu.Unlock()
	timeout := interval
	if starting {
		// Until the first answer the node is not ready (503 to every
		// client): an unreachable registry must become a known outage, where
		// the fail mode decides, within a second, not after LeaseTTL/3.
		timeout = min(interval, startTimeout)
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if superseded {
		return false // nothing to renew: keep fenced, say so now and then
	}
	// The lease cannot expire before start + LeaseTTL, whenever Redis runs
	// the script: the fence counts from here.
	start := n.now()
	st, err := n.reg.RenewLease(rctx, n.cfg.ID, inc, n.cfg.LeaseTTL)
	if err != nil {
		if ctx.Err() != nil {
			return true
		}
		n.m.renewals.WithLabelValues("error").Inc()
		n.mu.Lock()
		was := n.outage
		n.outage = true
		n.mu.Unlock()
		switch {
		case was:
		case starting && n.cfg.FailMode == FailOpen:
			n.log.Warn("registry unreachable at start-up; fail_mode=open: accepting connections, recorded once it answers (retrying)", "err", err)
		case starting:
			n.log.Warn("registry unreachable at start-up; fail_mode=closed: refusing new connections with 503 until it answers (retrying)", "err", err)
		case n.cfg.FailMode == FailOpen:
			n.log.Warn("registry unreachable; keeping connections, accepting new ones (fail_mode=open) and retrying", "err", err)
		default:
			n.log.Warn("registry unreachable; keeping connections, refusing new ones with 503 (fail_mode=closed) and retrying", "err", err)
		}
		return false
	}
	n.m.renewals.WithLabelValues(st.String()).Inc()
	n.mu.Lock()
	if n.outage {
		n.log.Info("registry reachable again")
	}
	n.outage = false
	n.mu.Unlock()

	switch st {
	case LeaseHeld:
		n.renewed(start)
	case LeaseCleaning:
		n.setHealthy(false)
		n.log.Warn("lease expired and a janitor is cleaning up this node; fenced until it is done")
		return false
	case LeasePrevious:
		n.log.Warn("found the lease of an earlier process with this node ID; announcing and removing what it left before taking the lease")
		if n.deps.CleanPrevious != nil {
			if err := n.deps.CleanPrevious(ctx); err != nil {
				n.log.Warn("cleanup of the earlier incarnation failed; retrying", "err", err)
			}
		}
		return false
	case LeaseSuperseded:
		n.log.Error("another process took this node ID over; dropping every connection and serving nothing (is the node ID unique?)")
		n.revoke(ctx, start, false)
		return false
	case LeaseRevoked:
		n.log.Warn("this node was declared dead and its connections orphaned; dropping them")
		n.revoke(ctx, start, true)
	case LeaseLost:
		n.renewed(start)
		n.mu.Lock()
		if !n.needReassert {
			n.log.Warn("lease was lost (expired, or the registry lost its data); re-asserting connections")
		}
		n.needReassert = true
		n.mu.Unlock()
	}

	n.mu.Lock()
	need := n.needReassert
	n.mu.Unlock()
	if need {
		n.setHealthy(false)
		if err := n.reassert(rctx); err != nil {
			n.m.registryErrors.WithLabelValues("reassert").Inc()
			n.log.Warn("re-assert failed; retrying", "err", err)
			return false
		}
	}
	if err := n.flushPending(rctx); err != nil {
		n.log.Warn("writing queued registry changes failed; retrying", "err", err)
		return false
	}
	n.setHealthy(true)
	return true
}

// revoke drops every connection the cluster already announced as gone: no
// Wait returns until Revoked has closed them and the epoch changed, so that
// no event queued for them and no API call waiting for the fence reaches a
// client or the backend. held: the lease was taken afresh (LeaseRevoked).
func (n *Node) revoke(ctx context.Context, start time.Time, held bool) {
	n.mu.Lock()
	n.revoking = true
	n.fastUntil.Store(0)
	n.mu.Unlock()
	n.setHealthy(false)
	n.m.revocations.Inc()
	if n.deps.Revoked != nil {
		n.deps.Revoked(ctx)
	}
	n.epoch.Add(1)
	n.mu.Lock()
	n.revoking = false
	clear(n.pendingReg)
	if held {
		n.needReassert = true
		n.renewedAt = start
	} else {
		n.superseded = true
	}
	n.resolveLocked()
	n.mu.Unlock()
}

// reassert writes every live connection again, in pipelined chunks.
func (n *Node) reassert(ctx context.Context) error {
	n.mu.Lock()
	queued := make([]string, 0, len(n.pendingReg))
	for id := range n.pendingReg {
		queued = append(queued, id)
	}
	n.mu.Unlock()
	recs := n.deps.Reassert(ctx)
	for start := 0; start < len(recs); start += n.batch.cfg.MaxBatch {
		chunk := recs[start:min(start+n.batch.cfg.MaxBatch, len(recs))]
		for i := range chunk {
			if chunk[i].Node == "" {
				chunk[i].Node = n.cfg.ID
			}
		}
		if err := n.reg.Register(ctx, chunk...); err != nil {
			return fmt.Errorf("re-assert %d connections: %w", len(recs), err)
		}
	}
	n.mu.Lock()
	n.needReassert = false
	// Live connections queued before the snapshot are in it.
	for _, id := range queued {
		delete(n.pendingReg, id)
	}
	n.mu.Unlock()
	n.log.Info("re-asserted connections", "count", len(recs))
	return nil
}

// flushPending writes what was queued during an outage.
func (n *Node) flushPending(ctx context.Context) error {
	n.mu.Lock()
	regs := make([]ConnRecord, 0, len(n.pendingReg))
	for _, r := range n.pendingReg {
		regs = append(regs, r)
	}
	unregs := make([]string, 0, len(n.pendingUnreg))
	for id := range n.pendingUnreg {
		unregs = append(unregs, id)
	}
	n.mu.Unlock()
	if len(regs) == 0 && len(unregs) == 0 {
		return nil
	}
	for start := 0; start < len(regs); start += n.batch.cfg.MaxBatch {
		if err := n.reg.Register(ctx, regs[start:min(start+n.batch.cfg.MaxBatch, len(regs))]...); err != nil {
			return err
		}
	}
	for start := 0; start < len(unregs); start += n.batch.cfg.MaxBatch {
		if err := n.reg.Unregister(ctx, n.cfg.ID, unregs[start:min(start+n.batch.cfg.MaxBatch, len(unregs))]...); err != nil {
			return err
		}
	}
	n.mu.Lock()
	for _, r := range regs {
		// Unless it closed meanwhile (then it is queued for removal).
		if cur, ok := n.pendingReg[r.ID]; ok && cur.ID == r.ID {
			delete(n.pendingReg, r.ID)
		}
	}
	for _, id := range unregs {
		delete(n.pendingUnreg, id)
	}
	n.m.pending.Set(float64(len(n.pendingReg) + len(n.pendingUnreg)))
	n.mu.Unlock()
	return nil
}

// Shutdown stops the heartbeat and the batcher. If the node has no
// connections left in the registry it gives its lease up; otherwise the lease
// expires and a janitor announces what is left. Safe to call twice.
func (n *Node) Shutdown(ctx context.Context) error {
	if err := n.gate.Stop(ctx, "cluster: node"); err != nil {
		return err
	}
	if err := n.batch.Shutdown(ctx); err != nil {
		return err
	}
	n.setHealthy(false)
	n.mu.Lock()
	superseded := n.superseded
	n.mu.Unlock()
	if superseded {
		return nil // the lease and the records are the later process's
	}
	if err := n.flushPending(ctx); err != nil {
		return fmt.Errorf("cluster: node shutdown: queued writes: %w", err)
	}
	left, err := n.reg.CountNode(ctx, n.cfg.ID)
	if err != nil {
		return fmt.Errorf("cluster: node shutdown: %w", err)
	}
	if left > 0 {
		n.log.Warn("leaving connections for the janitor", "count", left)
		return nil
	}
	if err := n.reg.ReleaseLease(ctx, n.cfg.ID); err != nil {
		return fmt.Errorf("cluster: node shutdown: %w", err)
	}
	return nil
}
