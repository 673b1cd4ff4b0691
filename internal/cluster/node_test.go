package cluster

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// liveConns stands in for the edge's hub: the connections it holds.
type liveConns struct {
	mu    sync.Mutex
	recs  map[string]ConnRecord
	calls int
}

func newLiveConns() *liveConns { return &liveConns{recs: map[string]ConnRecord{}} }

func (l *liveConns) add(r ConnRecord) {
	l.mu.Lock()
	l.recs[r.ID] = r
	l.mu.Unlock()
}

func (l *liveConns) remove(id string) {
	l.mu.Lock()
	delete(l.recs, id)
	l.mu.Unlock()
}

func (l *liveConns) reassert(ctx context.Context) []ConnRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	out := make([]ConnRecord, 0, len(l.recs))
	for _, r := range l.recs {
		out = append(out, r)
	}
	return out
}

// runNode starts a node and stops it when the test ends.
func runNode(t *testing.T, cfg NodeConfig, deps NodeDeps) *Node {
	t.Helper()
	n, err := NewNode(cfg, deps)
	if err != nil {
		t.Fatalf("NewNode: %v", err)
	}
	startNode(t, n)
	return n
}

// startNode runs n and stops it when the test ends.
func startNode(t *testing.T, n *Node) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- n.Run(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), waitFor)
		defer scancel()
		_ = n.Shutdown(sctx)
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Node.Run: %v", err)
		}
	})
}

func TestNodeBecomesHealthyAndRecordsConnections(t *testing.T) {
	reg := NewMemoryRegistry(nil)
	live := newLiveConns()
	m, _ := NewMetrics(nil)
	n := runNode(t, NodeConfig{ID: NewNodeID("edge"), LeaseTTL: 300 * time.Millisecond},
		NodeDeps{Registry: reg, Reassert: live.reassert, Metrics: m})
	eventually(t, "node healthy", n.Healthy)
	ctx := testCtx(t)
	rec := record("")
	if err := n.RegisterNew(ctx, rec); err != nil {
		t.Fatalf("RegisterNew: %v", err)
	}
	got, err := reg.Lookup(ctx, rec.ID)
	if err != nil || got.Node != n.ID() {
		t.Fatalf("Lookup = %+v, %v; want owner %s", got, err, n.ID())
	}
	// The heartbeat keeps renewing the lease, and each renewal finds it held.
	eventually(t, "five renewals", func() bool {
		return testutil.ToFloat64(m.renewals.WithLabelValues("held")) >= 5
	})
	if alive, _ := reg.NodeAlive(ctx, n.ID()); !alive {
		t.Fatal("lease expired although the node is running")
	}
	if lost := testutil.ToFloat64(m.renewals.WithLabelValues("lost")); lost != 1 {
		t.Fatalf("lost renewals = %v, want 1 (the first, when no lease existed)", lost)
	}
	n.Unregister(ctx, rec.ID)
	if _, err := reg.Lookup(ctx, rec.ID); !errors.Is(err, conn.ErrGone) {
		t.Fatalf("Lookup after Unregister: %v, want ErrGone", err)
	}
	if err := n.RegisterNew(ctx, ConnRecord{ID: conn.NewID(), Node: "someone-else"}); !errors.Is(err, ErrInvalidNodeID) {
		t.Fatalf("RegisterNew for another node: %v, want ErrInvalidNodeID", err)
	}
}

func TestNodeGivesUpItsLeaseOnShutdownWhenEmpty(t *testing.T) {
	reg := NewMemoryRegistry(nil)
	n, err := NewNode(NodeConfig{ID: NewNodeID("edge")}, NodeDeps{Registry: reg, Reassert: newLiveConns().reassert})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	errc := make(chan error, 1)
	go func() { errc <- n.Run(ctx) }()
	eventually(t, "node healthy", n.Healthy)
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := n.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if alive, _ := reg.NodeAlive(ctx, n.ID()); alive {
		t.Fatal("lease still held after shutdown")
	}
	if err := n.RegisterNew(ctx, record(n.ID())); !errors.Is(err, ErrClosed) {
		t.Fatalf("RegisterNew after Shutdown: %v, want ErrClosed", err)
	}
}

// Redis killed and restarted empty: the node keeps its connections, notices
// its lease is gone, re-asserts them all, and lookups work again.
func TestNodeReassertsAfterRedisRestartsEmpty(t *testing.T) {
	reg, srv := startRedisRegistry(t)
	promReg := prometheus.NewRegistry()
	m, err := NewMetrics(promReg)
	if err != nil {
		t.Fatal(err)
	}
	live := newLiveConns()
	// The outage is checked within the lease (a longer outage puts it in
	// doubt, and then even a fail-open node fences itself): 10 s leaves a
	// loaded machine room between the kill and the check (3 s did not, at a
	// load average of 17 on 2 cores); the re-assert still comes within a
	// renewal period (TTL/3) of the restart.
	n := runNode(t, NodeConfig{ID: NewNodeID("edge"), LeaseTTL: 10 * time.Second, RetryMin: 20 * time.Millisecond},
		NodeDeps{Registry: Instrument(reg, m), Reassert: live.reassert, Metrics: m})
	eventually(t, "node healthy", n.Healthy)
	ctx := testCtx(t)
	var recs []ConnRecord
	for i := 0; i < 200; i++ {
		r := record(n.ID())
		live.add(r)
		if err := n.RegisterNew(ctx, r); err != nil {
			t.Fatalf("RegisterNew: %v", err)
		}
		recs = append(recs, r)
	}

	srv.Kill()
	eventually(t, "renewal errors to be counted", func() bool {
		return testutil.ToFloat64(m.renewals.WithLabelValues("error")) > 0
	})
	// Fail-open (the default): a connection accepted during the outage is
	// accepted, and recorded later.
	late := record(n.ID())
	live.add(late)
	if err := n.RegisterNew(ctx, late); err != nil {
		t.Fatalf("RegisterNew during outage in fail-open mode: %v", err)
	}
	if !n.Healthy() {
		t.Fatal("fail-open node fenced itself during a mere outage")
	}

	srv.Restart()
	eventually(t, "every connection to be found again", func() bool {
		for _, r := range append(recs, late) {
			if got, err := reg.Lookup(ctx, r.ID); err != nil || got.Node != n.ID() {
				return false
			}
		}
		return true
	})
	if c, _ := reg.CountNode(ctx, n.ID()); c != 201 {
		t.Fatalf("CountNode after re-assert = %d, want 201", c)
	}
	if testutil.ToFloat64(m.renewals.WithLabelValues("lost")) < 1 {
		t.Fatal("the lost lease was not counted")
	}
	eventually(t, "node healthy again", n.Healthy)
}

func TestFailClosedRejectsNewConnectionsDuringOutage(t *testing.T) {
	reg, srv := startRedisRegistry(t)
	n := runNode(t, NodeConfig{ID: NewNodeID("edge"), LeaseTTL: 600 * time.Millisecond, FailMode: FailClosed, RetryMin: 20 * time.Millisecond},
		NodeDeps{Registry: reg, Reassert: newLiveConns().reassert})
	eventually(t, "node healthy", n.Healthy)
	srv.Kill()
	eventually(t, "fail-closed node to fence itself", func() bool { return !n.Healthy() })
	ctx := testCtx(t)
	if err := n.RegisterNew(ctx, record(n.ID())); !errors.Is(err, ErrRegistryUnavailable) {
		t.Fatalf("RegisterNew during outage: %v, want ErrRegistryUnavailable", err)
	}
	srv.Restart()
	eventually(t, "node healthy after Redis returns", n.Healthy)
	if err := n.RegisterNew(ctx, record(n.ID())); err != nil {
		t.Fatalf("RegisterNew after recovery: %v", err)
	}
}

// A node paused past its lease, declared dead and cleaned up, learns on its
// return that its connections were orphaned.
func TestNodeLearnsItWasRevoked(t *testing.T) {
	reg := NewMemoryRegistry(nil)
	ctx := testCtx(t)
	id := NewNodeID("edge")
	revoked := make(chan struct{}, 1)
	n, err := NewNode(NodeConfig{ID: id, LeaseTTL: time.Second}, NodeDeps{
		Registry: reg, Reassert: newLiveConns().reassert,
		Revoked: func(context.Context) { revoked <- struct{}{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	// This very process (its incarnation) held the lease before its pause.
	if _, err := reg.RenewLease(ctx, id, Incarnation{Token: n.inc}, shortTTL); err != nil {
		t.Fatal(err)
	}
	expire(t, reg, id)
	if ok, err := reg.RemoveNode(ctx, id); err != nil || !ok {
		t.Fatalf("RemoveNode = %v, %v", ok, err)
	}
	startNode(t, n)
	select {
	case <-revoked:
	case <-time.After(waitFor):
		t.Fatal("Revoked was not called")
	}
	eventually(t, "node healthy with a fresh lease", n.Healthy)
}

func TestBatcherCoalescesConcurrentRegistrations(t *testing.T) {
	reg, _ := startRedisRegistry(t)
	m, _ := NewMetrics(nil)
	b, err := NewBatcher(BatcherConfig{}, reg, m)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	var wg sync.WaitGroup
	const n = 2000
	for i := 0; i < n; i++ {
		wg.Go(func() {
			if err := b.Register(ctx, record("node-b")); err != nil {
				t.Errorf("Register: %v", err)
			}
		})
	}
	wg.Wait()
	if c, _ := reg.CountNode(ctx, "node-b"); c != n {
		t.Fatalf("CountNode = %d, want %d", c, n)
	}
	// Fewer round trips than writes: the point of the batcher.
	var hm = &dtoHistogram{}
	hm.read(t, m.batchSize)
	if hm.count >= n {
		t.Fatalf("%d round trips for %d registrations: nothing was coalesced", hm.count, n)
	}
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := b.Register(ctx, record("node-b")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Register after Shutdown: %v, want ErrClosed", err)
	}
}

func TestNodeIDsAreUniqueAndSafeAsSubjectTokens(t *testing.T) {
	seen := map[string]bool{}
	for _, prefix := range []string{"edge-0", "pod.name with spaces>*", "", "{x}"} {
		for i := 0; i < 100; i++ {
			id := NewNodeID(prefix)
			if !ValidNodeID(id) {
				t.Fatalf("NewNodeID(%q) = %q, not a valid node ID", prefix, id)
			}
			if seen[id] {
				t.Fatalf("NewNodeID(%q) repeated %q", prefix, id)
			}
			seen[id] = true
		}
	}
}
