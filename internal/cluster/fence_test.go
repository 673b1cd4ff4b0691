package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeClock is the time a paused process would see on waking: it jumps.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// stallable is a registry whose lease renewals fail while stalled: a process
// that cannot renew, whether paused or cut off from Redis.
type stallable struct {
	Registry
	stalled atomic.Bool
}

var errStalled = errors.New("registry stalled (test)")

func (s *stallable) RenewLease(ctx context.Context, node string, inc Incarnation, ttl time.Duration) (LeaseState, error) {
	if s.stalled.Load() {
		return 0, errStalled
	}
	return s.Registry.RenewLease(ctx, node, inc, ttl)
}

// fencedNode runs a node on a fake clock shared with a memory registry.
func fencedNode(t *testing.T, deps NodeDeps) (*Node, *stallable, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	reg := &stallable{Registry: NewMemoryRegistry(clk.Now)}
	deps.Registry, deps.Now = reg, clk.Now
	if deps.Reassert == nil {
		deps.Reassert = newLiveConns().reassert
	}
	n := runNode(t, NodeConfig{ID: NewNodeID("edge"), LeaseTTL: 3 * time.Second, RetryMin: 10 * time.Millisecond}, deps)
	eventually(t, "node healthy", n.Healthy)
	return n, reg, clk
}

func waitShort(n *Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	return n.Wait(ctx)
}

// The fence is computed from the clock at the moment of asking: a process
// that wakes up after a pause past TTL − margin is fenced before any timer
// of its own has fired, and resumes once a renewal succeeds.
func TestFenceInDoubtFromTheMonotonicClockThenRenewed(t *testing.T) {
	m, _ := NewMetrics(nil)
	n, reg, clk := fencedNode(t, NodeDeps{Metrics: m})
	if err := waitShort(n); err != nil {
		t.Fatalf("Wait while the lease is held: %v", err)
	}
	reg.stalled.Store(true)
	clk.Advance(2500 * time.Millisecond) // TTL 3s − margin 600ms = 2.4s
	if n.Healthy() {
		t.Fatal("Healthy after 2.5 s without a renewal (TTL 3 s, margin 600 ms)")
	}
	if err := waitShort(n); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait while in doubt = %v, want it to block until ctx ends", err)
	}
	if got := testutil.ToFloat64(m.leaseInDoubt); got != 1 {
		t.Fatalf("switchboard_lease_in_doubt = %v, want 1", got)
	}
	done := make(chan error, 1)
	go func() { done <- n.Wait(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v while the lease is in doubt", err)
	case <-time.After(100 * time.Millisecond):
	}
	reg.stalled.Store(false) // the lease had not expired: renewed, not revoked
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait after the renewal: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Wait still blocked after the registry came back")
	}
	if n.Epoch() != 0 {
		t.Fatalf("Epoch = %d after a renewal, want 0 (nothing revoked)", n.Epoch())
	}
	eventually(t, "node healthy again", n.Healthy)
	if got := testutil.ToFloat64(m.leaseInDoubt); got != 0 {
		t.Fatalf("switchboard_lease_in_doubt = %v after the renewal, want 0", got)
	}
}

// Declared dead during the pause: Revoked closes the connections while every
// waiter is still held, then the epoch changes, then the waiters go.
func TestFenceRevokedReleasesWaitersOnlyAfterRevokedAndEpoch(t *testing.T) {
	var (
		mu             sync.Mutex
		epochAtRevoke  = uint64(99)
		returnedBefore bool
	)
	var waiterDone atomic.Bool
	var n *Node
	n, reg, clk := fencedNode(t, NodeDeps{Revoked: func(context.Context) {
		mu.Lock()
		epochAtRevoke, returnedBefore = n.Epoch(), waiterDone.Load()
		mu.Unlock()
		time.Sleep(50 * time.Millisecond) // closing connections takes a moment
	}})
	ctx := testCtx(t)
	if err := n.RegisterNew(ctx, record(n.ID())); err != nil {
		t.Fatal(err)
	}
	reg.stalled.Store(true)
	clk.Advance(4 * time.Second) // past the lease: the registry sees it expired
	done := make(chan error, 1)
	go func() {
		err := n.Wait(context.Background())
		waiterDone.Store(true)
		done <- err
	}()
	// Another node's janitor announces the connection and removes the node.
	var orphans atomic.Int64
	j, err := NewJanitor(JanitorConfig{}, JanitorDeps{Registry: reg.Registry, Self: NewNodeID("other"),
		OnOrphan: func(context.Context, ConnRecord) { orphans.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := j.CleanNode(ctx, n.ID()); err != nil || got != 1 {
		t.Fatalf("janitor orphaned %d, %v; want 1", got, err)
	}
	reg.stalled.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait after the revocation: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Wait still blocked after the revocation")
	}
	mu.Lock()
	defer mu.Unlock()
	if epochAtRevoke != 0 || returnedBefore {
		t.Fatalf("Revoked ran with epoch %d, waiter already released %v; want 0, false", epochAtRevoke, returnedBefore)
	}
	if n.Epoch() != 1 {
		t.Fatalf("Epoch after the revocation = %d, want 1", n.Epoch())
	}
	eventually(t, "node healthy with a fresh lease", n.Healthy)
}

// Redis unreachable at start: a fail-open node accepts (it never held a
// lease, so nobody can have declared it dead) and writes the records once
// Redis is back; a fail-closed one does not.
func TestFenceStartWithRegistryUnreachable(t *testing.T) {
	for _, mode := range []FailMode{FailOpen, FailClosed} {
		t.Run(string(mode), func(t *testing.T) {
			reg := &stallable{Registry: NewMemoryRegistry(nil)}
			reg.stalled.Store(true)
			m, _ := NewMetrics(nil)
			live := newLiveConns()
			n := runNode(t, NodeConfig{ID: NewNodeID("edge"), LeaseTTL: 300 * time.Millisecond, RetryMin: 10 * time.Millisecond, FailMode: mode},
				NodeDeps{Registry: reg, Reassert: live.reassert, Metrics: m})
			eventually(t, "a failed first renewal", func() bool {
				return testutil.ToFloat64(m.renewals.WithLabelValues("error")) > 0
			})
			if mode == FailClosed {
				if n.Healthy() {
					t.Fatal("fail-closed node healthy without a registry")
				}
				return
			}
			eventually(t, "fail-open node healthy without a registry", n.Healthy)
			time.Sleep(400 * time.Millisecond) // longer than the TTL: still open
			if !n.Healthy() || waitShort(n) != nil {
				t.Fatal("fail-open node that never held a lease fenced itself")
			}
			ctx := testCtx(t)
			rec := record(n.ID())
			if err := n.RegisterNew(ctx, rec); err != nil {
				t.Fatalf("RegisterNew during the outage: %v", err)
			}
			live.add(rec)
			reg.stalled.Store(false)
			eventually(t, "record written once the registry is back", func() bool {
				_, err := reg.Lookup(ctx, rec.ID)
				return err == nil
			})
		})
	}
}

// A process restarted with the same node ID before its predecessor's lease
// expired announces everything the predecessor left (the janitor's cleanup)
// before it takes the lease.
func TestFencePreviousIncarnationCleanedBeforeTheLease(t *testing.T) {
	reg := NewMemoryRegistry(nil)
	ctx := testCtx(t)
	id := "edge-fixed"
	if _, err := reg.RenewLease(ctx, id, Incarnation{Token: "earlier"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	var left []ConnRecord
	for range 3 {
		r := record(id)
		left = append(left, r)
		if err := reg.Register(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	orphaned := map[string]int{}
	j, err := NewJanitor(JanitorConfig{}, JanitorDeps{Registry: reg, Self: id, OnOrphan: func(_ context.Context, r ConnRecord) {
		mu.Lock()
		orphaned[r.ID]++
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	n := runNode(t, NodeConfig{ID: id, LeaseTTL: time.Second, RetryMin: 10 * time.Millisecond}, NodeDeps{
		Registry: reg, Reassert: newLiveConns().reassert,
		CleanPrevious: func(ctx context.Context) error { _, err := j.CleanNode(ctx, id); return err },
	})
	eventually(t, "restarted node healthy", n.Healthy)
	mu.Lock()
	for _, r := range left {
		if orphaned[r.ID] != 1 {
			t.Errorf("connection %s of the earlier incarnation announced %d times, want 1", r.ID, orphaned[r.ID])
		}
	}
	mu.Unlock()
	if c, err := reg.CountNode(ctx, id); err != nil || c != 0 {
		t.Fatalf("records of the earlier incarnation left: %d, %v", c, err)
	}
	if n.Epoch() != 0 {
		t.Fatalf("Epoch = %d: the new process revoked itself", n.Epoch())
	}
}

// A process that was paused while a later one took its node ID over drops
// its connections and serves nothing; it leaves the later one's lease alone.
func TestFenceSupersededByALaterIncarnation(t *testing.T) {
	reg := NewMemoryRegistry(nil)
	ctx := testCtx(t)
	revoked := make(chan struct{}, 1)
	n := runNode(t, NodeConfig{ID: "edge-twin", LeaseTTL: 600 * time.Millisecond, RetryMin: 10 * time.Millisecond}, NodeDeps{
		Registry: reg, Reassert: newLiveConns().reassert,
		Revoked: func(context.Context) { revoked <- struct{}{} },
	})
	eventually(t, "node healthy", n.Healthy)
	later := Incarnation{Token: "later", New: true}
	eventually(t, "the later process takes the node ID over", func() bool {
		st, err := reg.RenewLease(ctx, n.ID(), later, time.Minute)
		if err == nil && st == LeasePrevious {
			if ok, _ := reg.RemoveNode(ctx, n.ID()); ok {
				st, err = reg.RenewLease(ctx, n.ID(), later, time.Minute)
			}
		}
		return err == nil && st == LeaseLost
	})
	select {
	case <-revoked:
	case <-time.After(waitFor):
		t.Fatal("Revoked not called on the superseded process")
	}
	eventually(t, "epoch changed", func() bool { return n.Epoch() == 1 })
	if n.Healthy() {
		t.Fatal("superseded process healthy")
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := n.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if alive, err := reg.NodeAlive(ctx, n.ID()); err != nil || !alive {
		t.Fatalf("the later process's lease after the old one's shutdown: alive %v, %v", alive, err)
	}
}

// Wait is asked before every event and every API call: while the lease is
// held it takes no lock.
func BenchmarkNodeWaitHeld(b *testing.B) {
	n, err := NewNode(NodeConfig{ID: NewNodeID("edge"), LeaseTTL: time.Hour},
		NodeDeps{Registry: NewMemoryRegistry(nil), Reassert: newLiveConns().reassert})
	if err != nil {
		b.Fatal(err)
	}
	n.renewed(time.Now())
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := n.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// hanging is a registry that never answers a renewal (a Redis that
// accepts the connection and says nothing): each call lasts its deadline.
type hanging struct{ Registry }

func (hanging) RenewLease(ctx context.Context, _ string, _ Incarnation, _ time.Duration) (LeaseState, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

// A registry that hangs at start-up becomes a known outage after the first
// renewal's short deadline, not after LeaseTTL/3 (here 200s): the fail-open
// node is ready, as its log says, instead of answering 503 meanwhile.
func TestFailOpenNodeReadySoonWhenTheRegistryHangsAtStart(t *testing.T) {
	n := runNode(t, NodeConfig{ID: NewNodeID("edge"), LeaseTTL: 10 * time.Minute, FailMode: FailOpen},
		NodeDeps{Registry: hanging{NewMemoryRegistry(nil)}, Reassert: newLiveConns().reassert})
	if n.Healthy() {
		t.Fatal("healthy before the first renewal has answered or failed")
	}
	eventually(t, "fail-open node healthy while the registry hangs", n.Healthy)
}
