package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// Scenario 4: Redis is killed and restarted empty. No connection drops;
// connects during the outage follow each edge's -registry-fail-mode (edges
// 0 and 1 open: accepted; edge 2 closed: 503); once Redis is back every edge
// re-asserts what it owns and lookups through the router work again.
func TestRedisRestartedEmpty(t *testing.T) {
	// The outage (about 2 s) must be well within the lease: an outage longer
	// than lease TTL − fence margin puts the lease in doubt (other nodes may
	// have declared an edge dead), and then the owners hold their events and
	// serve no post until Redis answers (docs/cluster.md).
	lease := []string{"-lease-ttl", "15s"}
	cl := startCluster(t, clusterConfig{edgeArgs: func(i int) []string {
		if i == 2 {
			return append(lease, "-registry-fail-mode", "closed")
		}
		return lease
	}})
	clients := dialMany(t, cl, []int{0, 1, 2}, 150)
	router := cl.api(cl.routers[0].apiURL())
	ctx := context.Background()

	cl.redis.Kill()
	killed := time.Now()

	var extra []*wsClient // accepted by edge 2 before it noticed (counted in the invariant)
	// Fail closed: edge 2 refuses new connections with 503 once it has
	// noticed the outage (it cannot record them).
	eventually(t, waitTimeout, "fail-closed edge rejects connects with 503", func() error {
		c, err := dial(t, cl.edges[2].wsURL(), 2)
		if err == nil {
			extra = append(extra, c)
			return errors.New("connect accepted")
		}
		var se ws.StatusError
		if !errors.As(err, &se) || int(se) != http.StatusServiceUnavailable {
			return fmt.Errorf("connect failed with %v, want HTTP 503", err)
		}
		return nil
	})
	// Fail open: edges 0 and 1 accept new connections during the outage.
	during := dialMany(t, cl, []int{0, 1}, 20)
	cl.learnIDs(extra)
	all := append(append(slices.Clone(clients), during...), extra...)
	// Every connection's owner still serves it through its own API, which
	// needs no registry for its local connections.
	if err := forEach(all, 16, func(c *wsClient) error {
		return cl.api(cl.edges[c.edge].apiURL()).PostText(ctx, c.id, []byte("during"))
	}); err != nil {
		t.Fatalf("posts through the owners during the outage: %v", err)
	}

	cl.redis.Restart()
	restarted := time.Now()
	// Every connection is recorded again (re-asserted or, for those made
	// during the outage, written from the queue)…
	recorded := eventually(t, waitTimeout, "every live connection recorded again", func() error {
		missing := 0
		for _, c := range all {
			if ok, err := cl.connKeyExists(c.id); err != nil {
				return err
			} else if !ok {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d not recorded", missing, len(all))
		}
		return nil
	})
	// …lookups through the router work again…
	lookups := eventually(t, waitTimeout, "router reaches every connection", func() error {
		return forEach(all, 16, func(c *wsClient) error {
			_, err := router.Get(ctx, c.id)
			return err
		})
	})
	// …every node holds its lease again…
	leases, err := cl.leases()
	if err != nil || len(leases) != len(cl.edges) {
		t.Fatalf("leases after the restart: %v (%v), want one per edge", leases, err)
	}
	// …and the fail-closed edge is ready and accepts again.
	cl.edges[2].p.waitReady(cl.edges[2].adminURL() + "/readyz")
	after := dialMany(t, cl, []int{2}, 5)
	all = append(all, after...)
	if err := forEach(all, 16, func(c *wsClient) error {
		return router.PostText(ctx, c.id, []byte("after"))
	}); err != nil {
		t.Fatalf("posts through the router after the outage: %v", err)
	}
	for _, c := range all {
		want := []string{"during", "after"}
		if slices.Contains(after, c) {
			want = want[1:]
		}
		expectMessages(t, c, want)
	}
	// Nobody was disconnected.
	for _, c := range all {
		if c.isClosed() || len(cl.rec.get(c.id).disconnects) > 0 {
			t.Fatalf("client %s was disconnected by the Redis outage", c.key)
		}
	}
	t.Logf("Redis down %s: 0 of %d connections dropped; %d accepted during the outage (fail open), fail-closed edge answered 503; after restart all records back in %s, router lookups in %s",
		restarted.Sub(killed).Round(time.Millisecond), len(clients), len(during), recorded.Round(time.Millisecond), lookups.Round(time.Millisecond))

	codes := map[string]int{}
	for _, c := range all {
		codes[c.id] = 1000
	}
	cl.finish(all, codes)
}
