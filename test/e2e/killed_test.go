package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/pkg/connections"
)

// killedConns is how many connections the SIGKILLed edge holds.
const killedConns = 2000

// Scenario 2: an edge holding ~2,000 connections is SIGKILLed. Within the
// lease TTL plus the janitor's interval and a few seconds, a survivor sends
// exactly one DISCONNECT (1006) per lost connection, the records are gone,
// the API answers 410 for them, and the clients reconnect to the survivors
// with new IDs. The survivors' own connections are untouched.
func TestEdgeKilled(t *testing.T) {
	edgeKilled(t, clusterConfig{})
}

func edgeKilled(t *testing.T, cfg clusterConfig) {
	cl := startCluster(t, cfg)
	victim := cl.edges[0]
	lost := dialMany(t, cl, []int{0}, killedConns)
	kept := dialMany(t, cl, []int{1, 2}, 100)
	router := cl.api(cl.routers[0].apiURL())
	ctx := context.Background()
	// The router routes to every connection before the crash.
	if err := forEach(append(slices.Clone(lost[:100]), kept...), 16, func(c *wsClient) error {
		return router.PostText(ctx, c.id, []byte("before"))
	}); err != nil {
		t.Fatalf("posts before the crash: %v", err)
	}
	for _, c := range append(slices.Clone(lost[:100]), kept...) {
		expectMessages(t, c, []string{"before"})
	}

	killed := time.Now()
	victim.p.kill()

	// Clients see the TCP connection end without a close frame.
	eventually(t, waitTimeout, "lost clients notice", func() error {
		open := 0
		for _, c := range lost {
			if !c.isClosed() {
				open++
			}
		}
		if open > 0 {
			return fmt.Errorf("%d of %d still open", open, len(lost))
		}
		return nil
	})
	for _, c := range lost {
		if code, reason := c.closed(); code != codeAbnormal {
			t.Fatalf("client %s: close code %d (%s), want %d", c.key, code, reason, codeAbnormal)
		}
	}

	// A survivor announces every lost connection: lease TTL + janitor
	// interval (5 s) + cleanup. The bound is generous for slow CI; the
	// figure measured is logged.
	lostIDs := ids(lost)
	cl.rec.waitDisconnects(lostIDs, leaseTTL+5*time.Second+30*time.Second)
	detect := time.Since(killed)
	for _, id := range lostIDs {
		r := cl.rec.get(id)
		if len(r.disconnects) != 1 {
			t.Fatalf("%s: %d DISCONNECT events, want exactly 1: %+v", id, len(r.disconnects), r.disconnects)
		}
		if d := r.disconnects[0]; d.code != codeAbnormal || d.node != victim.nodeID {
			t.Fatalf("%s: DISCONNECT %+v, want code %d for node %s", id, d, codeAbnormal, victim.nodeID)
		}
	}
	var first, last time.Time
	for _, id := range lostIDs {
		at := cl.rec.get(id).disconnects[0].at
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}

	// Records gone, 410 through the router and every surviving edge.
	gone := cl.waitGone(router, lostIDs)
	for _, e := range cl.edges[1:] {
		cl.waitGone(cl.api(e.apiURL()), lostIDs[:200])
	}
	if err := forEach(lostIDs, 16, func(id string) error {
		if ok, err := cl.connKeyExists(id); err != nil || ok {
			return fmt.Errorf("%s: record still in Redis (%v)", id, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if leases, err := cl.leases(); err != nil || slices.Contains(leases, victim.nodeID) {
		t.Fatalf("leases %v (%v): the dead node %s must be gone", leases, err, victim.nodeID)
	}
	if err := router.PostText(ctx, lostIDs[0], []byte("x")); !errors.Is(err, connections.ErrGone) {
		t.Fatalf("POST to a lost connection: %v, want 410", err)
	}

	// The survivors' connections were not touched.
	for _, c := range kept {
		if c.isClosed() || len(cl.rec.get(c.id).disconnects) > 0 {
			t.Fatalf("client %s on a survivor was disconnected", c.key)
		}
	}

	// The lost clients reconnect to the survivors and get new IDs.
	reconnectStart := time.Now()
	again := dialMany(t, cl, []int{1, 2}, len(lost))
	reconnect := time.Since(reconnectStart)
	old := make(map[string]bool, len(lostIDs))
	for _, id := range lostIDs {
		old[id] = true
	}
	for _, c := range again {
		if old[c.id] {
			t.Fatalf("reconnected client got an old ID %s", c.id)
		}
	}
	if err := forEach(append(slices.Clone(again), kept...), 16, func(c *wsClient) error {
		return router.PostText(ctx, c.id, []byte("after"))
	}); err != nil {
		t.Fatalf("posts after the crash: %v", err)
	}
	for _, c := range again {
		expectMessages(t, c, []string{"after"})
	}
	for _, c := range kept {
		expectMessages(t, c, []string{"before", "after"})
	}
	t.Logf("edge killed with %d connections (lease TTL %s): all DISCONNECTs (1006) %s after the kill (first %s, last %s); 410 through the router %s later; %d clients reconnected to survivors in %s",
		len(lost), leaseTTL, detect.Round(time.Millisecond), first.Sub(killed).Round(time.Millisecond), last.Sub(killed).Round(time.Millisecond),
		gone.Round(time.Millisecond), len(again), reconnect.Round(time.Millisecond))

	all := append(append(slices.Clone(lost), kept...), again...)
	codes := map[string]int{}
	for _, c := range all {
		codes[c.id] = 1000
	}
	for _, id := range lostIDs {
		codes[id] = codeAbnormal
	}
	cl.finish(all, codes)
}
