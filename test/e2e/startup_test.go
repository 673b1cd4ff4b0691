package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// Scenario (issue 14, start-up note): edges start while Redis is
// unreachable. Start-up follows -registry-fail-mode like any outage: the
// fail-open edge is ready and accepts connections (it never held a lease, so
// nobody can have declared it dead) and serves them through its own API;
// their records are written once Redis is back. The fail-closed edge answers
// 503 until then.
func TestRedisUnreachableAtStart(t *testing.T) {
	cl := startCluster(t, clusterConfig{edges: 2, edgeArgs: func(i int) []string {
		if i == 1 {
			return []string{"-registry-fail-mode", "closed"}
		}
		return nil
	}})
	cl.redis.Kill()
	for _, e := range cl.edges {
		e.p.kill()
		e.start()
	}
	open, closed := cl.edges[0], cl.edges[1]
	open.p.waitReady(open.adminURL() + "/readyz")
	started := time.Now()
	clients := dialMany(t, cl, []int{0}, 10)
	connected := time.Since(started)
	api := cl.api(open.apiURL())
	if err := forEach(clients, 10, func(c *wsClient) error {
		return api.PostText(context.Background(), c.id, []byte("during"))
	}); err != nil {
		t.Fatalf("posts through the fail-open edge during the outage: %v", err)
	}
	if _, err := dial(t, closed.wsURL(), 1); err == nil {
		t.Fatal("the fail-closed edge accepted a connection without Redis")
	} else if se := ws.StatusError(0); !errors.As(err, &se) || int(se) != http.StatusServiceUnavailable {
		t.Fatalf("fail-closed edge: %v, want HTTP 503", err)
	}

	cl.redis.Restart()
	back := eventually(t, waitTimeout, "records written once Redis is back", func() error {
		for _, c := range clients {
			if ok, err := cl.connKeyExists(c.id); err != nil || !ok {
				return fmt.Errorf("%s not recorded (%v)", c.id, err)
			}
		}
		return nil
	})
	closed.p.waitReady(closed.adminURL() + "/readyz")
	router := cl.api(cl.routers[0].apiURL())
	if err := forEach(clients, 10, func(c *wsClient) error {
		return router.PostText(context.Background(), c.id, []byte("after"))
	}); err != nil {
		t.Fatalf("posts through the router after the outage: %v", err)
	}
	for _, c := range clients {
		expectMessages(t, c, []string{"during", "after"})
	}
	t.Logf("edges started without Redis: fail-open edge ready, %d clients connected in %s and served by its API; fail-closed edge 503; records written %s after Redis returned",
		len(clients), connected.Round(time.Millisecond), back.Round(time.Millisecond))
	codes := map[string]int{}
	for _, c := range clients {
		codes[c.id] = 1000
	}
	cl.finish(clients, codes)
}

// A Redis outage longer than lease TTL − fence margin puts every edge's lease
// in doubt (if only this edge had lost Redis, the others could have declared
// it dead): the owners hold their clients' events, answer posts for their
// connections with 503 and refuse new connections, and no client is closed.
// Redis comes back empty: nobody declared anything, so the held events are
// published, posts work again, nothing was lost.
func TestRedisOutageLongerThanLease(t *testing.T) {
	cl := startCluster(t, clusterConfig{edges: 2})
	cl.rec.recordMessages()
	clients := dialMany(t, cl, []int{0, 1}, 10)
	connIDs := ids(clients)
	cl.redis.Kill()
	killed := time.Now()
	for _, e := range cl.edges {
		eventually(t, waitTimeout, "lease in doubt on "+e.nodeID, func() error {
			if v, err := cl.metric(e.adminURL(), "switchboard_lease_in_doubt", ""); err != nil || v != 1 {
				return fmt.Errorf("switchboard_lease_in_doubt = %v (%v)", v, err)
			}
			return nil
		})
	}
	doubt := time.Since(killed)
	base := cl.messagesOf(connIDs)
	for i, c := range clients {
		if err := c.send(fmt.Appendf(nil, "held-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c0 := clients[0]
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	err := cl.api(cl.edges[c0.edge].apiURL()).PostText(ctx, c0.id, []byte("x"))
	cancel()
	if err == nil {
		t.Fatal("a post through the owner was accepted while its lease was in doubt")
	}
	if _, err := dial(t, cl.edges[0].wsURL(), 0); err == nil {
		t.Fatal("a new connection was accepted while the lease was in doubt")
	} else if se := ws.StatusError(0); !errors.As(err, &se) || int(se) != http.StatusServiceUnavailable {
		t.Fatalf("connect while in doubt: %v, want HTTP 503", err)
	}
	held := cl.messagesOf(connIDs) - base

	cl.redis.Restart()
	restarted := time.Now()
	eventually(t, waitTimeout, "held MESSAGE events published", func() error {
		if n := cl.messagesOf(connIDs) - base; n < len(clients) {
			return fmt.Errorf("%d of %d", n, len(clients))
		}
		return nil
	})
	released := time.Since(restarted)
	router := cl.api(cl.routers[0].apiURL())
	eventually(t, waitTimeout, "posts through the router", func() error {
		return forEach(clients, 10, func(c *wsClient) error {
			return router.PostText(context.Background(), c.id, []byte("after"))
		})
	})
	for _, c := range clients {
		if c.isClosed() || cl.rec.disconnected([]string{c.id}) > 0 {
			t.Fatalf("client %s closed or announced by an outage nobody acted on", c.key)
		}
	}
	t.Logf("Redis down %s (lease TTL %s): leases in doubt after %s; while in doubt %d of %d client messages published, posts and connects refused; Redis back empty: held events published in %s, no client dropped",
		restarted.Sub(killed).Round(time.Millisecond), leaseTTL, doubt.Round(time.Millisecond), held, len(clients), released.Round(time.Millisecond))
	if held != 0 {
		t.Fatalf("%d MESSAGE events published while the lease was in doubt, want 0", held)
	}
	codes := map[string]int{}
	for _, c := range clients {
		codes[c.id] = 1000
	}
	cl.finish(clients, codes)
}
