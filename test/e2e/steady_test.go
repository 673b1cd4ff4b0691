package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Scenario 1: clients spread over three edges; @connections calls through
// either router and through every edge's own API reach every connection;
// each client receives exactly what was sent to it, in order.
func TestSteadyState(t *testing.T) {
	steadyState(t, clusterConfig{routers: 2})
}

func steadyState(t *testing.T, cfg clusterConfig) {
	cl := startCluster(t, cfg)
	clients := dialMany(t, cl, []int{0, 1, 2}, 60)
	apis := cl.apis()
	if len(apis) != 2+len(cl.edges) {
		t.Fatalf("%d API endpoints, want routers + edges", len(apis))
	}
	ctx := context.Background()

	// Each connection is owned by the edge it dialled, and every endpoint
	// finds it there.
	err := forEach(clients, 16, func(c *wsClient) error {
		if node := cl.rec.get(c.id).node; node != cl.edges[c.edge].nodeID {
			return fmt.Errorf("%s: CONNECT from node %q, want %q", c.id, node, cl.edges[c.edge].nodeID)
		}
		for _, a := range apis {
			info, err := a.Get(ctx, c.id)
			if err != nil {
				return fmt.Errorf("GET %s via %s: %w", c.id, a.name, err)
			}
			if info.NodeID != cl.edges[c.edge].nodeID || info.ConnectedAt.IsZero() {
				return fmt.Errorf("GET %s via %s: %+v", c.id, a.name, info)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Posts to one connection go one after another, rotating over every
	// endpoint; different connections are posted to in parallel.
	const perClient = 25
	start := time.Now()
	err = forEach(clients, 16, func(c *wsClient) error {
		for k := range perClient {
			a := apis[k%len(apis)]
			if err := a.PostText(ctx, c.id, []byte(fmt.Sprintf("%s#%d via %s", c.key, k, a.name))); err != nil {
				return fmt.Errorf("POST %s #%d via %s: %w", c.id, k, a.name, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	posted := time.Since(start)
	for _, c := range clients {
		want := make([]string, perClient)
		for k := range want {
			want[k] = fmt.Sprintf("%s#%d via %s", c.key, k, apis[k%len(apis)].name)
		}
		expectMessages(t, c, want)
	}
	t.Logf("steady state: %d posts over %d endpoints in %s, every client got its %d messages in order",
		len(clients)*perClient, len(apis), posted.Round(time.Millisecond), perClient)

	codes := map[string]int{}
	for _, c := range clients {
		codes[c.id] = 1000
	}
	cl.finish(clients, codes)
}

// expectMessages waits until c received len(want) messages and checks they
// are exactly want, in order.
func expectMessages(t testing.TB, c *wsClient, want []string) {
	t.Helper()
	eventually(t, waitTimeout, "client "+c.key+" receives its messages", func() error {
		if n := c.count(); n < len(want) {
			return fmt.Errorf("%d of %d messages", n, len(want))
		}
		return nil
	})
	got := c.messages()
	if len(got) != len(want) {
		t.Fatalf("client %s (%s): %d messages, want exactly %d", c.key, c.id, len(got), len(want))
	}
	for i := range want {
		if got[i].data != want[i] {
			t.Fatalf("client %s (%s): message %d is %q, want %q (lost, duplicated or reordered)", c.key, c.id, i, got[i].data, want[i])
		}
	}
}
