package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// Scenario 8: NATS is a cluster of three members and the member most
// edges are connected to is killed. The edges (and the router, if it was
// there) reconnect to the surviving members; no WebSocket connection
// drops; the router reaches every connection again; lifecycle events made
// after the failover reach the backend, which is subscribed through a
// surviving member; nothing is counted as dropped.
func TestNATSMemberKilled(t *testing.T) {
	nc := startNATSCluster(t, 3)
	cl := startClusterOnNATS(t, nc, 3, 1)

	// Where is everyone? Each client picks a member at random from the list.
	names := []string{routerNATSName}
	for _, e := range cl.edges {
		names = append(names, e.natsName())
	}
	var where map[string][]int
	eventually(t, waitTimeout, "every edge and the router connected to one member", func() error {
		var err error
		if where, err = nc.memberOf(names); err != nil {
			return err
		}
		for _, n := range names {
			if len(where[n]) != 1 {
				return fmt.Errorf("%s connected to members %v", n, where[n])
			}
		}
		return nil
	})
	// The victim: the member with the most edges (the router's, on a tie).
	edgesOn := make([]int, len(nc.servers))
	for _, e := range cl.edges {
		edgesOn[where[e.natsName()][0]]++
	}
	victim, routerOn := 0, where[routerNATSName][0]
	for i, n := range edgesOn {
		if n > edgesOn[victim] || (n == edgesOn[victim] && i == routerOn) {
			victim = i
		}
	}
	var moving []*proc // the processes connected to the victim
	for _, e := range cl.edges {
		if where[e.natsName()][0] == victim {
			moving = append(moving, e.p)
		}
	}
	if len(moving) == 0 {
		t.Fatalf("no edge on the victim member %d: %v", victim, where)
	}
	if routerOn == victim {
		moving = append(moving, cl.routers[0].p)
	}
	// The backend subscribes through a member that survives.
	survivor := (victim + 1) % len(nc.servers)
	cl.rec = startRecorder(t, nc.urls[survivor], prefix, "")

	clients := dialMany(t, cl, []int{0, 1, 2}, 90)
	router := cl.api(cl.routers[0].apiURL())
	ctx := context.Background()
	if err := forEach(clients, 16, func(c *wsClient) error {
		return router.PostText(ctx, c.id, []byte("before"))
	}); err != nil {
		t.Fatalf("posts before the failover: %v", err)
	}
	for _, c := range clients {
		expectMessages(t, c, []string{"before"})
	}
	droppedBefore := cl.droppedEvents()

	killed := time.Now()
	nc.kill(victim)

	// Every edge and the router are connected to a surviving member again.
	eventually(t, waitTimeout, "edges and router reconnect to surviving members", func() error {
		now, err := nc.memberOf(names)
		if err != nil {
			return err
		}
		for _, n := range names {
			if len(now[n]) != 1 {
				return fmt.Errorf("%s connected to surviving members %v", n, now[n])
			}
		}
		return nil
	})
	// How long each process that moved was away, by its own log's clock.
	var moved []string
	var slowest time.Duration
	for _, p := range moving {
		var at time.Time
		eventually(t, waitTimeout, p.name+" logs its reconnect", func() error {
			var err error
			if at, err = p.loggedAt("nats reconnected"); err != nil {
				return err
			}
			if at.Before(killed) {
				return fmt.Errorf("%s last reconnected before the kill", p.name)
			}
			return nil
		})
		d := at.Sub(killed)
		slowest = max(slowest, d)
		moved = append(moved, fmt.Sprintf("%s %s", p.name, d.Round(time.Millisecond)))
	}
	// The router reaches every connection again (GET: a retry is harmless).
	eventually(t, waitTimeout, "router reaches every connection", func() error {
		return forEach(clients, 16, func(c *wsClient) error {
			_, err := router.Get(ctx, c.id)
			return err
		})
	})
	reach := time.Since(killed)

	// Lifecycle after the failover: new clients' CONNECTs (dialMany waits
	// for them) and closing clients' DISCONNECTs reach the backend.
	arriving := dialMany(t, cl, []int{0, 1, 2}, gapClients)
	leaving, staying := clients[:gapClients], clients[gapClients:]
	closeAll(t, leaving)
	cl.rec.waitDisconnects(ids(leaving), waitTimeout)

	// Nobody who stayed was disconnected: no close frame, no DISCONNECT.
	for _, c := range staying {
		if c.isClosed() {
			code, reason := c.closed()
			t.Fatalf("client %s was closed by the failover: %d %q", c.key, code, reason)
		}
		if d := cl.rec.get(c.id).disconnects; len(d) > 0 {
			t.Fatalf("client %s got a DISCONNECT from the failover: %+v", c.key, d)
		}
	}
	// Posts through the router reach every open connection, exactly once.
	open := append(slices.Clone(staying), arriving...)
	if err := forEach(open, 16, func(c *wsClient) error {
		return router.PostText(ctx, c.id, []byte("after"))
	}); err != nil {
		t.Fatalf("posts through the router after the failover: %v", err)
	}
	for _, c := range staying {
		expectMessages(t, c, []string{"before", "after"})
	}
	for _, c := range arriving {
		expectMessages(t, c, []string{"after"})
	}
	if dropped := cl.droppedEvents() - droppedBefore; dropped != 0 {
		t.Fatalf("%v lifecycle events counted as dropped across the failover", dropped)
	}
	if leases, err := cl.leases(); err != nil || len(leases) != len(cl.edges) {
		t.Fatalf("leases after the failover: %v (%v), want one per edge", leases, err)
	}

	t.Logf("NATS member %d of 3 killed (edges per member %v, router on %d): reconnected to survivors [%s], the last %s after the kill; router reaches all %d connections %s after the kill; 0 of %d connections dropped; %d CONNECT and %d DISCONNECT after the failover delivered",
		victim, edgesOn, routerOn, strings.Join(moved, ", "), slowest.Round(time.Millisecond),
		len(clients), reach.Round(time.Millisecond), len(staying), len(arriving), len(leaving))

	all := append(slices.Clone(clients), arriving...)
	codes := map[string]int{}
	for _, c := range all {
		codes[c.id] = 1000
	}
	cl.finish(all, codes)
}
