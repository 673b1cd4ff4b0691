package e2e

import (
	"context"
	"fmt"
	"testing"
)

// Scenario (docs/cluster.md, "Direct commands"): edges with -direct-listen
// and a router with -direct-commands. Once the router and the edges have
// learnt each other's direct addresses (over NATS, at the first post),
// @connections posts need no nats-server: with it stopped, posts through
// the router and through the other edge's API still reach every client.
func TestDirectCommandsSkipNATS(t *testing.T) {
	cl := startCluster(t, clusterConfig{edges: 2, routerArgs: []string{"-direct-commands"},
		edgeArgs: func(int) []string { return []string{"-direct-listen", "127.0.0.1:0"} }})
	clients := dialMany(t, cl, []int{0, 1}, 6)
	cl.learnIDs(clients)
	router := cl.api(cl.routers[0].apiURL())
	viaEdge := cl.api(cl.edges[0].apiURL())
	ctx := context.Background()
	post := func(round string) {
		t.Helper()
		for _, c := range clients {
			if err := router.PostText(ctx, c.id, []byte(round+"-router")); err != nil {
				t.Fatalf("%s: post through the router to %s (edge %d): %v", round, c.id, c.edge, err)
			}
			if c.edge == 1 {
				if err := viaEdge.PostText(ctx, c.id, []byte(round+"-edge0")); err != nil {
					t.Fatalf("%s: post through edge 0 to %s: %v", round, c.id, err)
				}
			}
		}
	}
	post("warm")
	cl.nats.Shutdown()
	defer cl.nats.Restart()
	post("nonats")
	eventually(t, waitTimeout, "every post", func() error {
		for _, c := range clients {
			want := map[string]bool{"warm-router": true, "nonats-router": true}
			if c.edge == 1 {
				want["warm-edge0"], want["nonats-edge0"] = true, true
			}
			got := map[string]bool{}
			for _, m := range c.messages() {
				got[m.data] = true
			}
			for w := range want {
				if !got[w] {
					return fmt.Errorf("%s (edge %d) has not received %q", c.id, c.edge, w)
				}
			}
		}
		return nil
	})
}
