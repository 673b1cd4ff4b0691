package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// gapClients is how many clients close, and how many connect, while NATS
// is down.
const gapClients = 15

// Scenario 5: the NATS server is restarted. Edges and routers reconnect,
// no WebSocket connection drops, and the lifecycle events produced while
// NATS was away (clients that closed, clients that connected) reach the
// backend after it returns: from the stream in JetStream mode; in core
// mode each is either delivered or counted in
// switchboard_events_dropped_total — never silently lost.
func TestNATSRestarted(t *testing.T) {
	t.Run("JetStream", func(t *testing.T) { natsRestarted(t, true) })
	t.Run("Core", func(t *testing.T) { natsRestarted(t, false) })
}

func natsRestarted(t *testing.T, jetstream bool) {
	cl := startCluster(t, clusterConfig{jetstream: jetstream})
	clients := dialMany(t, cl, []int{0, 1, 2}, 90)
	router := cl.api(cl.routers[0].apiURL())
	ctx := context.Background()
	droppedBefore := cl.droppedEvents()

	cl.nats.Shutdown()
	down := time.Now()
	if !jetstream {
		// Core mode counts an event as dropped once the edge knows NATS is
		// away; an event handed to a connection that has not noticed yet is
		// written to a dead socket. Produce the gap's events after that.
		eventually(t, waitTimeout, "every edge sees NATS down", func() error {
			for _, e := range cl.edges {
				v, err := cl.metric(e.adminURL(), "switchboard_nats_connected", "")
				if err != nil {
					return err
				}
				if v != 0 {
					return fmt.Errorf("%s still connected", e.nodeID)
				}
			}
			return nil
		})
	}
	// While NATS is away: some clients leave, and (JetStream mode) new ones
	// arrive ($connect is optional, so they are accepted once it times out).
	// In core mode the new ones' CONNECT would be dropped, leaving clients
	// the recorder could never name, so only departures make the gap.
	leaving, staying := clients[:gapClients], clients[gapClients:]
	if err := forEach(leaving, 16, func(c *wsClient) error { return c.closeWith(1000, 20*time.Second) }); err != nil {
		t.Fatalf("close during the outage: %v", err)
	}
	var arriving []*wsClient
	if jetstream {
		arriving = make([]*wsClient, gapClients)
		idx := make([]int, gapClients)
		for i := range idx {
			idx[i] = i
		}
		if err := forEach(idx, gapClients, func(i int) error {
			c, err := dial(t, cl.edges[i%3].wsURL(), i%3)
			arriving[i] = c
			return err
		}); err != nil {
			t.Fatalf("connect during the outage: %v", err)
		}
	}
	gapEvents := len(leaving) + len(arriving)
	cl.nats.Restart()
	restarted := time.Now()

	// Edges and router reconnect: the router reaches a connection on every
	// edge again.
	reconnect := eventually(t, waitTimeout, "router reaches every edge again", func() error {
		for i := range cl.edges {
			for _, c := range staying {
				if c.edge == i {
					if err := router.PostText(ctx, c.id, []byte("probe")); err != nil {
						return fmt.Errorf("edge %d: %w", i, err)
					}
					break
				}
			}
		}
		return nil
	})

	// The events of the gap: delivered, or (core mode) counted as dropped.
	delivered := eventually(t, waitTimeout, "events of the outage delivered or counted", func() error {
		got := 0
		for _, c := range leaving {
			if len(cl.rec.get(c.id).disconnects) > 0 {
				got++
			}
		}
		for _, c := range arriving {
			if _, ok := cl.rec.idOf(c.key); ok {
				got++
			}
		}
		dropped := cl.droppedEvents() - droppedBefore
		if jetstream && dropped > 0 {
			t.Fatalf("JetStream mode dropped %v events", dropped)
		}
		if got+int(dropped) < gapEvents {
			return fmt.Errorf("%d of %d events delivered, %v counted as dropped", got, gapEvents, dropped)
		}
		if !jetstream && dropped > 0 {
			t.Logf("core mode: %v events counted as dropped", dropped)
		}
		return nil
	})
	cl.learnIDs(arriving)
	if !jetstream {
		// The departures whose DISCONNECT was counted as dropped are
		// accounted for; the invariant covers every other connection.
		for _, c := range leaving {
			if len(cl.rec.get(c.id).disconnects) == 0 {
				cl.rec.forget(c.id)
			}
		}
	}

	// Nobody who stayed was disconnected.
	for _, c := range staying {
		if c.isClosed() || len(cl.rec.get(c.id).disconnects) > 0 {
			t.Fatalf("client %s was disconnected by the NATS restart", c.key)
		}
	}
	if err := forEach(append(slices.Clone(staying), arriving...), 16, func(c *wsClient) error {
		return router.PostText(ctx, c.id, []byte("after"))
	}); err != nil {
		t.Fatalf("posts after the restart: %v", err)
	}
	eventually(t, waitTimeout, "posts after the restart arrive", func() error {
		for _, c := range append(slices.Clone(staying), arriving...) {
			m := c.messages()
			if len(m) == 0 || m[len(m)-1].data != "after" {
				return fmt.Errorf("client %s: last message %v", c.key, m)
			}
		}
		return nil
	})
	t.Logf("NATS down %s (jetstream=%v): 0 of %d connections dropped; router reaches every edge %s after the restart; the %d events of the outage delivered %s after it",
		restarted.Sub(down).Round(time.Millisecond), jetstream, len(staying), reconnect.Round(time.Millisecond), gapEvents, (reconnect + delivered).Round(time.Millisecond))

	all := append(slices.Clone(staying), arriving...)
	for _, c := range leaving {
		if cl.rec.known(c.id) {
			all = append(all, c)
		}
	}
	codes := map[string]int{}
	for _, c := range all {
		codes[c.id] = 1000
	}
	cl.finish(all, codes)
}

// droppedEvents sums switchboard_events_dropped_total over the running edges.
func (cl *cluster) droppedEvents() float64 {
	cl.t.Helper()
	var sum float64
	for _, e := range cl.edges {
		if !e.p.running() {
			continue
		}
		v, err := cl.metric(e.adminURL(), "switchboard_events_dropped_total", "")
		if err != nil {
			cl.t.Fatalf("metrics of %s: %v", e.nodeID, err)
		}
		sum += v
	}
	return sum
}
