package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// The one conformance suite every Registry implementation must pass: the
// memory registry behaves exactly like Redis, standalone or Cluster.
func TestRegistryConformance(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		runRegistrySuite(t, func(t *testing.T) Registry { return NewMemoryRegistry(nil) })
	})
	t.Run("redis", func(t *testing.T) {
		client := newRedisClient(t, testenv.StartRedis(t).Addr())
		runRegistrySuite(t, func(t *testing.T) Registry {
			r, err := NewRedisRegistry(RedisConfig{KeyPrefix: uniquePrefix(t)}, client)
			if err != nil {
				t.Fatal(err)
			}
			return r
		})
	})
	t.Run("redis_cluster", func(t *testing.T) {
		client := newClusterClient(t, testenv.StartRedisCluster(t, 3).Addrs())
		runRegistrySuite(t, func(t *testing.T) Registry {
			r, err := NewRedisRegistry(RedisConfig{KeyPrefix: uniquePrefix(t)}, client)
			if err != nil {
				t.Fatal(err)
			}
			return r
		})
	})
}

// shortTTL is a lease that expires quickly, so tests can watch expiry.
const shortTTL = 100 * time.Millisecond

func record(node string) ConnRecord {
	return ConnRecord{
		ID:          conn.NewID(),
		Node:        node,
		ConnectedAt: time.Now().UTC().Truncate(time.Millisecond),
		SourceIP:    "203.0.113.7",
		UserAgent:   "test-agent/1.0",
		UserID:      "user-1",
		Principal:   json.RawMessage(`{"role":"admin"}`),
	}
}

func sameRecord(a, b ConnRecord) bool {
	return a.ID == b.ID && a.Node == b.Node && a.ConnectedAt.Equal(b.ConnectedAt) &&
		a.SourceIP == b.SourceIP && a.UserAgent == b.UserAgent && a.UserID == b.UserID &&
		string(a.Principal) == string(b.Principal)
}

// expire waits until node's short lease has run out.
func expire(t *testing.T, reg Registry, node string) {
	t.Helper()
	ctx := testCtx(t)
	eventually(t, "lease of "+node+" to expire", func() bool {
		alive, err := reg.NodeAlive(ctx, node)
		return err == nil && !alive
	})
}

func allConns(t *testing.T, reg Registry, node string, limit int) []ConnRecord {
	t.Helper()
	ctx := testCtx(t)
	var out []ConnRecord
	seen := map[string]bool{}
	cursor := ""
	for {
		page, next, err := reg.NodeConns(ctx, node, cursor, limit)
		if err != nil {
			t.Fatalf("NodeConns: %v", err)
		}
		if len(page) > 2*limit {
			t.Fatalf("NodeConns returned %d records, limit (a hint) %d", len(page), limit)
		}
		for _, r := range page {
			if !seen[r.ID] {
				seen[r.ID] = true
				out = append(out, r)
			}
		}
		if next == "" {
			return out
		}
		cursor = next
	}
}

func runRegistrySuite(t *testing.T, newReg func(t *testing.T) Registry) {
	t.Run("a registered connection can be looked up until it is unregistered", func(t *testing.T) {
		t.Parallel()
		reg, ctx := newReg(t), testCtx(t)
		rec := record("node-a")
		if err := reg.Register(ctx, rec); err != nil {
			t.Fatalf("Register: %v", err)
		}
		got, err := reg.Lookup(ctx, rec.ID)
		if err != nil {
			t.Fatalf("Lookup: %v", err)
		}
		if !sameRecord(got, rec) {
			t.Fatalf("Lookup = %+v, want %+v", got, rec)
		}
		if err := reg.Unregister(ctx, "node-a", rec.ID); err != nil {
			t.Fatalf("Unregister: %v", err)
		}
		if _, err := reg.Lookup(ctx, rec.ID); !errors.Is(err, conn.ErrGone) {
			t.Fatalf("Lookup after Unregister: err = %v, want ErrGone", err)
		}
		if n, err := reg.CountNode(ctx, "node-a"); err != nil || n != 0 {
			t.Fatalf("CountNode after Unregister = %d, %v; want 0", n, err)
		}
	})

	t.Run("unknown connections are gone and malformed IDs are rejected before storage", func(t *testing.T) {
		t.Parallel()
		reg, ctx := newReg(t), testCtx(t)
		if _, err := reg.Lookup(ctx, conn.NewID()); !errors.Is(err, conn.ErrGone) {
			t.Fatalf("Lookup(unknown): err = %v, want ErrGone", err)
		}
		for _, bad := range []string{"", "short", "has space in it!", "{tag}xxxxxxxxxxx"} {
			if _, err := reg.Lookup(ctx, bad); !errors.Is(err, conn.ErrInvalidID) {
				t.Errorf("Lookup(%q): err = %v, want ErrInvalidID", bad, err)
			}
			if err := reg.Register(ctx, ConnRecord{ID: bad, Node: "n"}); !errors.Is(err, conn.ErrInvalidID) {
				t.Errorf("Register(id %q): err = %v, want ErrInvalidID", bad, err)
			}
		}
		for _, bad := range []string{"", "a.b", "a b", "{x}", "a*", "x>"} {
			if err := reg.Register(ctx, ConnRecord{ID: conn.NewID(), Node: bad}); !errors.Is(err, ErrInvalidNodeID) {
				t.Errorf("Register(node %q): err = %v, want ErrInvalidNodeID", bad, err)
			}
			if _, err := reg.RenewLease(ctx, bad, Incarnation{}, time.Second); !errors.Is(err, ErrInvalidNodeID) {
				t.Errorf("RenewLease(%q): err = %v, want ErrInvalidNodeID", bad, err)
			}
		}
	})

	t.Run("batched registrations are counted per node and cluster-wide and paged completely", func(t *testing.T) {
		t.Parallel()
		reg, ctx := newReg(t), testCtx(t)
		for _, n := range []string{"node-a", "node-b"} {
			if _, err := reg.RenewLease(ctx, n, Incarnation{}, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		var a, b []ConnRecord
		for i := 0; i < 700; i++ {
			a = append(a, record("node-a"))
		}
		for i := 0; i < 300; i++ {
			b = append(b, record("node-b"))
		}
		if err := reg.Register(ctx, append(slices.Clone(a), b...)...); err != nil {
			t.Fatalf("Register(1000): %v", err)
		}
		if n, err := reg.CountNode(ctx, "node-a"); err != nil || n != 700 {
			t.Fatalf("CountNode(a) = %d, %v; want 700", n, err)
		}
		if n, err := reg.CountAll(ctx); err != nil || n != 1000 {
			t.Fatalf("CountAll = %d, %v; want 1000", n, err)
		}
		if nodes, err := reg.Nodes(ctx); err != nil || !slices.Equal(nodes, []string{"node-a", "node-b"}) {
			t.Fatalf("Nodes = %v, %v; want [node-a node-b]", nodes, err)
		}
		got := allConns(t, reg, "node-a", 64)
		if len(got) != 700 {
			t.Fatalf("paged %d records of node-a, want 700", len(got))
		}
		want := map[string]ConnRecord{}
		for _, r := range a {
			want[r.ID] = r
		}
		for _, r := range got {
			if w, ok := want[r.ID]; !ok || !sameRecord(r, w) {
				t.Fatalf("paged record %+v does not match registered %+v", r, w)
			}
		}
		ids := make([]string, 0, 100)
		for _, r := range a[:100] {
			ids = append(ids, r.ID)
		}
		if err := reg.Unregister(ctx, "node-a", ids...); err != nil {
			t.Fatal(err)
		}
		if n, err := reg.CountAll(ctx); err != nil || n != 900 {
			t.Fatalf("CountAll after removing 100 = %d, %v; want 900", n, err)
		}
	})

	t.Run("concurrent registrations all land", func(t *testing.T) {
		t.Parallel()
		reg, ctx := newReg(t), testCtx(t)
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for g := 0; g < 50; g++ {
			wg.Go(func() {
				for i := 0; i < 10; i++ {
					if err := reg.Register(ctx, record("node-c")); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("Register: %v", err)
		}
		if n, err := reg.CountNode(ctx, "node-c"); err != nil || n != 500 {
			t.Fatalf("CountNode = %d, %v; want 500", n, err)
		}
	})

	t.Run("a lease is lost when absent or expired and held while renewed", func(t *testing.T) {
		t.Parallel()
		reg, ctx := newReg(t), testCtx(t)
		node := "node-l"
		if st, err := reg.RenewLease(ctx, node, Incarnation{}, time.Minute); err != nil || st != LeaseLost {
			t.Fatalf("first RenewLease = %v, %v; want lost (absent)", st, err)
		}
		if st, err := reg.RenewLease(ctx, node, Incarnation{}, time.Minute); err != nil || st != LeaseHeld {
			t.Fatalf("second RenewLease = %v, %v; want held", st, err)
		}
		if alive, err := reg.NodeAlive(ctx, node); err != nil || !alive {
			t.Fatalf("NodeAlive = %v, %v; want true", alive, err)
		}
		if exp, err := reg.ExpiredNodes(ctx); err != nil || slices.Contains(exp, node) {
			t.Fatalf("ExpiredNodes = %v, %v; must not list a live node", exp, err)
		}
		if _, err := reg.RenewLease(ctx, node, Incarnation{}, shortTTL); err != nil {
			t.Fatal(err)
		}
		expire(t, reg, node)
		if exp, err := reg.ExpiredNodes(ctx); err != nil || !slices.Contains(exp, node) {
			t.Fatalf("ExpiredNodes = %v, %v; want it to list %s", exp, err, node)
		}
		if st, err := reg.RenewLease(ctx, node, Incarnation{}, time.Minute); err != nil || st != LeaseLost {
			t.Fatalf("RenewLease after expiry = %v, %v; want lost", st, err)
		}
		if alive, _ := reg.NodeAlive(ctx, "never-seen"); alive {
			t.Fatal("NodeAlive(never-seen) = true")
		}
	})

	t.Run("exactly one holder gets the cleanup lock of an expired node and the node cannot return meanwhile", func(t *testing.T) {
		t.Parallel()
		reg, ctx := newReg(t), testCtx(t)
		node := "node-x"
		if _, err := reg.RenewLease(ctx, node, Incarnation{}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if ok, err := reg.AcquireCleanup(ctx, node, "j1", time.Minute); err != nil || ok {
			t.Fatalf("AcquireCleanup on a live node = %v, %v; want false", ok, err)
		}
		if _, err := reg.RenewLease(ctx, node, Incarnation{}, shortTTL); err != nil {
			t.Fatal(err)
		}
		expire(t, reg, node)
		var wins int
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Go(func() {
				ok, err := reg.AcquireCleanup(ctx, node, fmt.Sprintf("j%d", i), time.Minute)
				if err != nil {
					t.Errorf("AcquireCleanup: %v", err)
				}
				if ok {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d of 8 concurrent holders got the lock, want exactly 1", wins)
		}
		if ok, _ := reg.AcquireCleanup(ctx, node, "j1", time.Minute); ok {
			// j1 may be the winner; then a second holder must still lose.
			if ok2, _ := reg.AcquireCleanup(ctx, node, "j2", time.Minute); ok2 {
				t.Fatal("j1 and j2 both hold the lock")
			}
		}
		if st, err := reg.RenewLease(ctx, node, Incarnation{}, time.Minute); err != nil || st != LeaseCleaning {
			t.Fatalf("RenewLease during cleanup = %v, %v; want cleaning", st, err)
		}
		if alive, _ := reg.NodeAlive(ctx, node); alive {
			t.Fatal("a node being cleaned up came back alive")
		}
	})

	t.Run("a released lock can be taken by another holder", func(t *testing.T) {
		t.Parallel()
		reg, ctx := newReg(t), testCtx(t)
		node := "node-r"
		if _, err := reg.RenewLease(ctx, node, Incarnation{}, shortTTL); err != nil {
			t.Fatal(err)
		}
		expire(t, reg, node)
		if ok, err := reg.AcquireCleanup(ctx, node, "a", time.Minute); err != nil || !ok {
			t.Fatalf("AcquireCleanup(a) = %v, %v; want true", ok, err)
		}
		if err := reg.ReleaseCleanup(ctx, node, "b"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := reg.AcquireCleanup(ctx, node, "b", time.Minute); ok {
			t.Fatal("b released a's lock")
		}
		if ok, _ := reg.AcquireCleanup(ctx, node, "a", time.Minute); !ok {
			t.Fatal("a could not extend its own lock")
		}
		if err := reg.ReleaseCleanup(ctx, node, "a"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := reg.AcquireCleanup(ctx, node, "b", time.Minute); !ok {
			t.Fatal("b could not take the lock after a released it")
		}
	})

	t.Run("removing a dead node drops its records and revokes it if it returns", func(t *testing.T) {
		t.Parallel()
		reg, ctx := newReg(t), testCtx(t)
		node := "node-d"
		if _, err := reg.RenewLease(ctx, node, Incarnation{}, time.Minute); err != nil {
			t.Fatal(err)
		}
		recs := []ConnRecord{record(node), record(node), record(node)}
		if err := reg.Register(ctx, recs...); err != nil {
			t.Fatal(err)
		}
		if ok, err := reg.RemoveNode(ctx, node); err != nil || ok {
			t.Fatalf("RemoveNode on a live node = %v, %v; want false", ok, err)
		}
		if n, _ := reg.CountNode(ctx, node); n != 3 {
			t.Fatalf("RemoveNode on a live node dropped records: %d left", n)
		}
		if _, err := reg.RenewLease(ctx, node, Incarnation{}, shortTTL); err != nil {
			t.Fatal(err)
		}
		expire(t, reg, node)
		if ok, err := reg.RemoveNode(ctx, node); err != nil || !ok {
			t.Fatalf("RemoveNode on an expired node = %v, %v; want true", ok, err)
		}
		for _, r := range recs {
			if _, err := reg.Lookup(ctx, r.ID); !errors.Is(err, conn.ErrGone) {
				t.Fatalf("Lookup after RemoveNode: %v, want ErrGone", err)
			}
		}
		if exp, _ := reg.ExpiredNodes(ctx); slices.Contains(exp, node) {
			t.Fatal("a removed node is still listed as expired")
		}
		if n, _ := reg.CountAll(ctx); n != 0 {
			t.Fatalf("CountAll after RemoveNode = %d, want 0", n)
		}
		if nodes, err := reg.Nodes(ctx); err != nil || slices.Contains(nodes, node) {
			t.Fatalf("Nodes after RemoveNode = %v, %v; want it gone", nodes, err)
		}
		if st, err := reg.RenewLease(ctx, node, Incarnation{}, time.Minute); err != nil || st != LeaseRevoked {
			t.Fatalf("RenewLease of a removed node = %v, %v; want revoked", st, err)
		}
		if st, err := reg.RenewLease(ctx, node, Incarnation{}, time.Minute); err != nil || st != LeaseHeld {
			t.Fatalf("RenewLease after revoked = %v, %v; want held", st, err)
		}
	})

	t.Run("releasing a lease forgets the node and its records", func(t *testing.T) {
		t.Parallel()
		reg, ctx := newReg(t), testCtx(t)
		node := "node-q"
		if _, err := reg.RenewLease(ctx, node, Incarnation{}, time.Minute); err != nil {
			t.Fatal(err)
		}
		rec := record(node)
		if err := reg.Register(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if err := reg.ReleaseLease(ctx, node); err != nil {
			t.Fatalf("ReleaseLease: %v", err)
		}
		if alive, _ := reg.NodeAlive(ctx, node); alive {
			t.Fatal("node alive after ReleaseLease")
		}
		if _, err := reg.Lookup(ctx, rec.ID); !errors.Is(err, conn.ErrGone) {
			t.Fatalf("Lookup after ReleaseLease: %v, want ErrGone", err)
		}
		if st, _ := reg.RenewLease(ctx, node, Incarnation{}, time.Minute); st != LeaseLost {
			t.Fatalf("RenewLease after ReleaseLease = %v, want lost (not revoked)", st)
		}
	})

	t.Run("a restarted incarnation finds its predecessor's lease, and a tombstone is revoked only for the incarnation removed", func(t *testing.T) {
		t.Parallel()
		reg, ctx := newReg(t), testCtx(t)
		node := "node-inc"
		old, next := Incarnation{Token: "old"}, Incarnation{Token: "next", New: true}
		if st, err := reg.RenewLease(ctx, node, old, time.Minute); err != nil || st != LeaseLost {
			t.Fatalf("first RenewLease = %v, %v; want lost", st, err)
		}
		rec := record(node)
		if err := reg.Register(ctx, rec); err != nil {
			t.Fatal(err)
		}
		// The new process does not take the old lease: it is expired for
		// the cleanup, at once rather than after its TTL.
		if st, err := reg.RenewLease(ctx, node, next, time.Minute); err != nil || st != LeasePrevious {
			t.Fatalf("RenewLease by a new incarnation = %v, %v; want previous", st, err)
		}
		if exp, _ := reg.ExpiredNodes(ctx); !slices.Contains(exp, node) {
			t.Fatalf("expired nodes %v: the predecessor's lease must be expired for its cleanup", exp)
		}
		if ok, err := reg.AcquireCleanup(ctx, node, node, time.Minute); err != nil || !ok {
			t.Fatalf("AcquireCleanup of the predecessor = %v, %v", ok, err)
		}
		if st, err := reg.RenewLease(ctx, node, next, time.Minute); err != nil || st != LeaseCleaning {
			t.Fatalf("RenewLease during the predecessor's cleanup = %v, %v; want cleaning", st, err)
		}
		if err := reg.Unregister(ctx, node, rec.ID); err != nil {
			t.Fatal(err)
		}
		if ok, err := reg.RemoveNode(ctx, node); err != nil || !ok {
			t.Fatalf("RemoveNode = %v, %v", ok, err)
		}
		// The tombstone is the old incarnation's: the new one starts afresh…
		if st, err := reg.RenewLease(ctx, node, next, time.Minute); err != nil || st != LeaseLost {
			t.Fatalf("RenewLease by the new incarnation after the cleanup = %v, %v; want lost", st, err)
		}
		next.New = false
		if st, err := reg.RenewLease(ctx, node, next, time.Minute); err != nil || st != LeaseHeld {
			t.Fatalf("RenewLease = %v, %v; want held", st, err)
		}
		// …and the old one, if it was only paused, learns it was superseded.
		if st, err := reg.RenewLease(ctx, node, old, time.Minute); err != nil || st != LeaseSuperseded {
			t.Fatalf("RenewLease by the old incarnation = %v, %v; want superseded", st, err)
		}
		if st, err := reg.RenewLease(ctx, node, next, time.Minute); err != nil || st != LeaseHeld {
			t.Fatalf("RenewLease after the old one asked = %v, %v; want held (untouched)", st, err)
		}
	})
}
