package cluster

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// orphanLog records OnOrphan calls from any number of janitors.
type orphanLog struct {
	mu    sync.Mutex
	calls map[string]int
}

func (o *orphanLog) onOrphan(ctx context.Context, rec ConnRecord) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.calls == nil {
		o.calls = map[string]int{}
	}
	o.calls[rec.ID]++
}

func (o *orphanLog) snapshot() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string]int, len(o.calls))
	for k, v := range o.calls {
		out[k] = v
	}
	return out
}

// A node dies with N connections; two surviving nodes' janitors race to clean
// it up: exactly N OnOrphan calls in total, one per connection, and the dead
// node and its records are gone.
func TestTwoJanitorsCleanUpADeadNodeExactlyOnce(t *testing.T) {
	reg, _ := startRedisRegistry(t)
	ctx := testCtx(t)
	dead := NewNodeID("dead")
	if _, err := reg.RenewLease(ctx, dead, Incarnation{}, time.Minute); err != nil {
		t.Fatal(err)
	}
	const n = 1500
	want := map[string]ConnRecord{}
	var recs []ConnRecord
	for i := 0; i < n; i++ {
		r := record(dead)
		want[r.ID] = r
		recs = append(recs, r)
	}
	if err := reg.Register(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	// The node "dies": its last renewal gives a short lease that runs out.
	if _, err := reg.RenewLease(ctx, dead, Incarnation{}, shortTTL); err != nil {
		t.Fatal(err)
	}

	var log orphanLog
	m, _ := NewMetrics(nil)
	var janitors []*Janitor
	for _, self := range []string{NewNodeID("alive1"), NewNodeID("alive2")} {
		if _, err := reg.RenewLease(ctx, self, Incarnation{}, time.Minute); err != nil {
			t.Fatal(err)
		}
		j, err := NewJanitor(JanitorConfig{Interval: 20 * time.Millisecond, PageSize: 100},
			JanitorDeps{Registry: reg, Self: self, OnOrphan: log.onOrphan, Metrics: m})
		if err != nil {
			t.Fatal(err)
		}
		janitors = append(janitors, j)
	}
	var wg sync.WaitGroup
	for _, j := range janitors {
		wg.Go(func() {
			if err := j.Run(ctx); err != nil {
				t.Errorf("Janitor.Run: %v", err)
			}
		})
	}
	eventually(t, "the dead node to be removed", func() bool {
		exp, err := reg.ExpiredNodes(ctx)
		alive, _ := reg.NodeAlive(ctx, dead)
		return err == nil && len(exp) == 0 && !alive && testutil.ToFloat64(m.cleanups) == 1
	})
	for _, j := range janitors {
		if err := j.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if err := j.Shutdown(ctx); err != nil {
			t.Fatalf("second Shutdown: %v", err)
		}
	}
	wg.Wait()
	// Sweeping again finds nothing: cleanup is done once.
	for _, j := range janitors {
		if n, err := j.Sweep(ctx); err != nil || n != 0 {
			t.Fatalf("a later Sweep orphaned %d more (%v)", n, err)
		}
	}

	calls := log.snapshot()
	if len(calls) != n {
		t.Fatalf("OnOrphan saw %d connections, want %d", len(calls), n)
	}
	for id, c := range calls {
		if c != 1 {
			t.Fatalf("OnOrphan called %d times for %s, want once", c, id)
		}
		if _, ok := want[id]; !ok {
			t.Fatalf("OnOrphan called for unknown connection %s", id)
		}
	}
	if got := testutil.ToFloat64(m.orphans); got != n {
		t.Fatalf("orphaned connections metric = %v, want %d", got, n)
	}
	if _, err := reg.Lookup(ctx, recs[0].ID); !errors.Is(err, conn.ErrGone) {
		t.Fatalf("Lookup of an orphaned connection: %v, want ErrGone", err)
	}
	if c, _ := reg.CountAll(ctx); c != 0 {
		t.Fatalf("CountAll after cleanup = %d, want 0", c)
	}
}

func TestJanitorLeavesLiveNodesAndItselfAlone(t *testing.T) {
	reg := NewMemoryRegistry(nil)
	ctx := testCtx(t)
	self, live := NewNodeID("self"), NewNodeID("live")
	if _, err := reg.RenewLease(ctx, live, Incarnation{}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.RenewLease(ctx, self, Incarnation{}, shortTTL); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(ctx, record(live), record(self)); err != nil {
		t.Fatal(err)
	}
	expire(t, reg, self)
	var log orphanLog
	j, err := NewJanitor(JanitorConfig{}, JanitorDeps{Registry: reg, Self: self, OnOrphan: log.onOrphan})
	if err != nil {
		t.Fatal(err)
	}
	n, err := j.Sweep(ctx)
	if err != nil || n != 0 || len(log.snapshot()) != 0 {
		t.Fatalf("Sweep = %d, %v, calls %v; want nothing orphaned", n, err, log.snapshot())
	}
	if c, _ := reg.CountAll(ctx); c != 2 {
		t.Fatalf("CountAll = %d, want 2 (nothing removed)", c)
	}
}

// End to end on Redis Cluster: node A dies with its connections; node B's
// janitor announces each of them once and lookups answer gone.
func TestDeadNodesConnectionsAreOrphanedByASurvivorOnRedisCluster(t *testing.T) {
	srv := testenv.StartRedisCluster(t, 3)
	reg, err := NewRedisRegistry(RedisConfig{KeyPrefix: uniquePrefix(t)}, newClusterClient(t, srv.Addrs()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	// A second's lease: short for the test, long enough that a loaded
	// machine's slow round trip does not put it in doubt before A dies.
	nodeA, err := NewNode(NodeConfig{ID: NewNodeID("a"), LeaseTTL: time.Second},
		NodeDeps{Registry: reg, Reassert: newLiveConns().reassert})
	if err != nil {
		t.Fatal(err)
	}
	ctxA, killA := context.WithCancel(ctx)
	doneA := make(chan error, 1)
	go func() { doneA <- nodeA.Run(ctxA) }()
	// Healthy alone is also true after a first renewal that timed out
	// (fail open), when registrations are only queued: wait for the lease.
	eventually(t, "node A holding its lease", func() bool {
		alive, err := reg.NodeAlive(ctx, nodeA.ID())
		return nodeA.Healthy() && err == nil && alive
	})
	var recs []ConnRecord
	for i := 0; i < 50; i++ {
		r := record(nodeA.ID())
		if err := nodeA.RegisterNew(ctx, r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}

	nodeB := runNode(t, NodeConfig{ID: NewNodeID("b"), LeaseTTL: 3 * time.Second},
		NodeDeps{Registry: reg, Reassert: newLiveConns().reassert})
	eventually(t, "node B healthy", nodeB.Healthy)
	var log orphanLog
	j, err := NewJanitor(JanitorConfig{Interval: 50 * time.Millisecond},
		JanitorDeps{Registry: reg, Self: nodeB.ID(), OnOrphan: log.onOrphan, Healthy: nodeB.Healthy})
	if err != nil {
		t.Fatal(err)
	}
	doneJ := make(chan error, 1)
	go func() { doneJ <- j.Run(ctx) }()
	t.Cleanup(func() {
		_ = j.Shutdown(context.Background())
		<-doneJ
	})

	killA() // A stops renewing, as if the process died
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	eventually(t, "all of A's connections to be orphaned", func() bool { return len(log.snapshot()) == len(recs) })
	eventually(t, "A to be removed", func() bool {
		exp, err := reg.ExpiredNodes(ctx)
		return err == nil && len(exp) == 0
	})
	for _, r := range recs {
		if c := log.snapshot()[r.ID]; c != 1 {
			t.Fatalf("OnOrphan called %d times for %s, want 1", c, r.ID)
		}
		if _, err := reg.Lookup(ctx, r.ID); !errors.Is(err, conn.ErrGone) {
			t.Fatalf("Lookup after cleanup: %v, want ErrGone", err)
		}
	}
	if alive, _ := reg.NodeAlive(ctx, nodeB.ID()); !alive {
		t.Fatal("the survivor lost its own lease")
	}
}
