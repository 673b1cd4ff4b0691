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
