package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/pkg/connections"
)

// incarnationConns is how many clients the restarted edge holds.
const incarnationConns = 200

// incarnationLease is the restarted edge's lease: long, so that the restart
// is well within it and no janitor could have cleaned up in time.
const incarnationLease = 30 * time.Second

// Scenario (issue 14, item 6): an edge with a fixed -node-id (a StatefulSet
// pod) holding 200 connections is SIGKILLed and restarted at once with the
// same ID, well within its lease. The new process is its own incarnation:
// before it takes the lease it runs the janitor's cleanup for what the
// previous process left, so every lost connection gets exactly one
// DISCONNECT (1006), long before the old lease would have expired, and no
// record of the old process is left in Redis or answered by the router.
func TestIncarnationRestartedWithFixedNodeID(t *testing.T) {
	cl := startCluster(t, clusterConfig{edges: 2,
		keepID: func(i int) bool { return i == 0 },
		edgeArgs: func(i int) []string {
			if i == 0 {
				return []string{"-lease-ttl", incarnationLease.String()}
			}
			return nil
		}})
	e := cl.edges[0]
	id := e.nodeID
	lost := dialMany(t, cl, []int{0}, incarnationConns)
	lostIDs := ids(lost)
	kept := dialMany(t, cl, []int{1}, 10)

	killed := time.Now()
	e.p.kill()
	e.start()
	if e.nodeID != id {
		t.Fatalf("restarted with node ID %s, want the fixed %s", e.nodeID, id)
	}
	e.p.waitReady(e.adminURL() + "/readyz")
	ready := time.Since(killed)

	cl.rec.waitDisconnects(lostIDs, waitTimeout)
	announced := time.Since(killed)
	for _, cid := range lostIDs {
		d := cl.rec.get(cid).disconnects
		if len(d) != 1 {
			t.Fatalf("%s: %d DISCONNECT events, want exactly 1: %+v", cid, len(d), d)
		}
		if d[0].code != codeAbnormal || d[0].node != id {
			t.Fatalf("%s: DISCONNECT %+v, want code %d for node %s", cid, d[0], codeAbnormal, id)
		}
	}
	if announced >= incarnationLease {
		t.Fatalf("DISCONNECTs took %s: not the new process's cleanup (the old lease lasts %s)", announced, incarnationLease)
	}

	// Nothing of the old incarnation is left: no record, no set member, and
	// the router answers 410 for every one.
	left := 0
	if err := forEach(lostIDs, 16, func(cid string) error {
		if ok, err := cl.connKeyExists(cid); err != nil {
			return err
		} else if ok {
			left++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	members, err := cl.rdb.SCard(context.Background(), prefix+":node:{"+id+"}:conns").Result()
	if err != nil {
		t.Fatal(err)
	}
	records, err := cl.scanKeys(prefix + ":conn:*")
	if err != nil {
		t.Fatal(err)
	}
	router := cl.api(cl.routers[0].apiURL())
	cl.waitGone(router, lostIDs)
	if err := router.PostText(context.Background(), lostIDs[0], []byte("x")); !errors.Is(err, connections.ErrGone) {
		t.Fatalf("POST to a connection of the old incarnation: %v, want 410", err)
	}
	t.Logf("fixed node ID %s killed with %d connections and restarted at once: ready after %s, all %d DISCONNECTs (1006, exactly one each) %s after the kill (old lease %s); old records left %d, set members %d, records in Redis %d (the %d on the other edge)",
		id, len(lost), ready.Round(time.Millisecond), len(lostIDs), announced.Round(time.Millisecond), incarnationLease, left, members, records, len(kept))
	if left != 0 || members != 0 || records != len(kept) {
		t.Fatalf("%d records and %d set members of the old incarnation left (%d records in all, want %d)", left, members, records, len(kept))
	}

	// The new incarnation serves: new clients, posts through the router.
	again := dialMany(t, cl, []int{0}, 20)
	if err := forEach(again, 16, func(c *wsClient) error {
		return router.PostText(context.Background(), c.id, []byte("after"))
	}); err != nil {
		t.Fatalf("posts to the new incarnation: %v", err)
	}
	for _, c := range again {
		expectMessages(t, c, []string{"after"})
	}
	if leases, err := cl.leases(); err != nil || len(leases) != 2 {
		t.Fatalf("leases %v (%v), want one per edge", leases, err)
	}
	eventually(t, waitTimeout, "the killed edge's clients notice", func() error {
		for _, c := range lost {
			if !c.isClosed() {
				return fmt.Errorf("client %s open", c.key)
			}
		}
		return nil
	})
	all := append(append(lost, kept...), again...)
	codes := map[string]int{}
	for _, c := range all {
		codes[c.id] = 1000
	}
	for _, cid := range lostIDs {
		codes[cid] = codeAbnormal
	}
	cl.finish(all, codes)
}
