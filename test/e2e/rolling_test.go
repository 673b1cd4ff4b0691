package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// Scenario 3: rolling restart. Each edge in turn gets SIGTERM while the
// router keeps posting to the connections on the other edges: the drained
// edge closes every connection with 1001 and sends exactly one DISCONNECT
// for each, gives its lease up and leaves no record; no post to a live
// connection fails or is lost; the clients reconnect to the new process.
// Once with commands through NATS, once with direct commands (the Helm
// chart's default): each restarted edge has a new direct port and secret,
// which the router learns again.
func TestRollingRestart(t *testing.T) {
	t.Run("nats", func(t *testing.T) { rollingRestart(t, clusterConfig{}) })
	t.Run("direct", func(t *testing.T) {
		rollingRestart(t, clusterConfig{routerArgs: []string{"-direct-commands"},
			edgeArgs: func(int) []string { return []string{"-direct-listen", "127.0.0.1:0"} }})
	})
}

func rollingRestart(t *testing.T, cfg clusterConfig) {
	cl := startCluster(t, cfg)
	live := dialMany(t, cl, []int{0, 1, 2}, 300)
	all := slices.Clone(live)
	codes := map[string]int{}
	router := cl.api(cl.routers[0].apiURL())

	var emu sync.Mutex
	expected := map[*wsClient][]string{}

	for i, e := range cl.edges {
		var onEdge, others []*wsClient
		for _, c := range live {
			if c.edge == i {
				onEdge = append(onEdge, c)
			} else {
				others = append(others, c)
			}
		}

		// Post continuously to the other edges' connections until the
		// restart is over. Every post must succeed.
		stop := make(chan struct{})
		var (
			wg       sync.WaitGroup
			postErrs []error
			posts    int
		)
		wg.Go(func() {
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				err := forEach(others, 16, func(c *wsClient) error {
					msg := fmt.Sprintf("round%d-%d", i, seq)
					if err := router.PostText(context.Background(), c.id, []byte(msg)); err != nil {
						return fmt.Errorf("POST to live %s on %s: %w", c.id, cl.edges[c.edge].nodeID, err)
					}
					emu.Lock()
					expected[c] = append(expected[c], msg)
					emu.Unlock()
					return nil
				})
				posts += len(others)
				if err != nil {
					postErrs = append(postErrs, err)
					return
				}
			}
		})

		oldID := e.nodeID
		drain := e.p.terminate(60 * time.Second)
		eventually(t, waitTimeout, "clients of the drained edge see the close", func() error {
			for _, c := range onEdge {
				if !c.isClosed() {
					return fmt.Errorf("client %s still open", c.key)
				}
			}
			return nil
		})
		for _, c := range onEdge {
			if code, reason := c.closed(); code != 1001 {
				t.Fatalf("client %s of the drained edge: close %d %q, want 1001", c.key, code, reason)
			}
			codes[c.id] = 1001
		}
		cl.rec.waitDisconnects(ids(onEdge), waitTimeout)
		for _, c := range onEdge {
			if r := cl.rec.get(c.id); len(r.disconnects) != 1 || r.disconnects[0].code != 1001 {
				t.Fatalf("%s: DISCONNECT events %+v, want exactly one with 1001", c.id, r.disconnects)
			}
		}
		// It left nothing for a janitor: no lease, no connection set.
		if leases, err := cl.leases(); err != nil || slices.Contains(leases, oldID) {
			t.Fatalf("leases %v (%v): %s should have given its lease up", leases, err, oldID)
		}
		if n, err := cl.scanKeys(prefix + ":node:{" + oldID + "}:*"); err != nil || n != 0 {
			t.Fatalf("%d keys left for drained node %s (%v)", n, oldID, err)
		}

		e.start()
		e.p.waitReady(e.adminURL() + "/readyz")
		close(stop)
		wg.Wait()
		if len(postErrs) > 0 {
			t.Fatalf("a post to a live connection failed during the restart of %s: %v", oldID, postErrs[0])
		}
		if posts == 0 {
			t.Fatal("no posts made during the restart")
		}
		for _, c := range others {
			expectMessages(t, c, expected[c])
		}
		back := dialMany(t, cl, []int{i}, len(onEdge))
		for _, c := range back {
			if cl.rec.get(c.id).node != e.nodeID {
				t.Fatalf("reconnected client on node %q, want the new process %s", cl.rec.get(c.id).node, e.nodeID)
			}
		}
		live = append(others, back...)
		all = append(all, back...)
		t.Logf("edge %s drained %d connections in %s (SIGTERM to exit) while %d posts to %d live connections on other edges all succeeded",
			oldID, len(onEdge), drain.Round(time.Millisecond), posts, len(others))
	}
	for _, c := range live {
		codes[c.id] = 1000
	}
	cl.finish(all, codes)
	// No DISCONNECT with 1006 came from a janitor: every drained node
	// released its lease, so none was declared dead.
	for _, c := range all {
		for _, d := range cl.rec.get(c.id).disconnects {
			if d.code == codeAbnormal {
				t.Fatalf("%s: a DISCONNECT 1006 after a graceful drain", c.id)
			}
		}
	}
}
