package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// routeCounter is a backend for client messages: it counts the MESSAGE
// events it receives on every route, by connection ID.
type routeCounter struct {
	mu     sync.Mutex
	byConn map[string]int
}

func startRouteCounter(t testing.TB, natsURL string) *routeCounter {
	t.Helper()
	rc := &routeCounter{byConn: map[string]int{}}
	nc, err := nats.Connect(natsURL, nats.Name("e2e-route-counter"), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond))
	if err != nil {
		t.Fatalf("route counter: %v", err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.Subscribe(prefix+".route.>", func(m *nats.Msg) {
		id := m.Header.Get("Switchboard-Connection-Id")
		rc.mu.Lock()
		rc.byConn[id]++
		rc.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("route counter: subscribe: %v", err)
	}
	_ = sub.SetPendingLimits(-1, -1) // a flood must not make it a slow consumer
	if err := nc.Flush(); err != nil {
		t.Fatalf("route counter: flush: %v", err)
	}
	return rc
}

func (rc *routeCounter) of(id string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.byConn[id]
}

// Issue 14, item 2: six clients flood messages with default flags as fast
// as they can while 40 other clients connect, send a few messages and
// disconnect on the same edge. Every CONNECT and DISCONNECT reaches the
// backend (none dropped: they have a lane of their own), every message of
// the 40 reaches it, and what is shed is the flooders' own messages (their
// per-connection bound), every one counted.
func TestLanesMessageFlood(t *testing.T) {
	const (
		flooders  = 6
		waves     = 4
		perWave   = 10
		perClient = 3
		minFlood  = 3 * time.Second
	)
	cl := startCluster(t, clusterConfig{edges: 1})
	e := cl.edges[0]
	counter := startRouteCounter(t, cl.natsURL())
	fl := dialMany(t, cl, []int{0}, flooders)

	var (
		wg    sync.WaitGroup
		stop  = make(chan struct{})
		sent  = make([]int64, flooders)
		total atomic.Int64
	)
	pad := strings.Repeat("f", 200)
	for i, c := range fl {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.send([]byte(fmt.Sprintf(`{"action":"flood","n":%d,"pad":"%s"}`, n, pad))); err != nil {
					t.Errorf("flooder %d: %v", i, err)
					return
				}
				sent[i]++
				total.Add(1)
			}
		})
	}
	stopFlood := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopFlood()
	floodStart := time.Now()

	// The churn: waves of clients that connect, send, and leave, while the
	// flood goes on.
	var churn []*wsClient
	for w := range waves {
		wave := dialMany(t, cl, []int{0}, perWave)
		churn = append(churn, wave...)
		for _, c := range wave {
			for k := range perClient {
				if err := c.send([]byte(fmt.Sprintf(`{"action":"hello","n":%d}`, k))); err != nil {
					t.Fatalf("wave %d: %v", w, err)
				}
			}
		}
		if err := forEach(wave, perWave, func(c *wsClient) error { return c.closeWith(1000, 20*time.Second) }); err != nil {
			t.Fatalf("wave %d close: %v", w, err)
		}
	}
	cl.rec.waitDisconnects(ids(churn), waitTimeout)
	if d := time.Since(floodStart); d < minFlood {
		eventually(t, minFlood, "the flood to last its minimum", func() error {
			if time.Since(floodStart) < minFlood {
				return fmt.Errorf("flooding for %s", time.Since(floodStart).Round(time.Millisecond))
			}
			return nil
		})
	}
	stopFlood()
	floodFor := time.Since(floodStart)

	// Every message of the 40 reached the backend.
	eventually(t, waitTimeout, "every message of the churning clients delivered", func() error {
		for _, c := range churn {
			if n := counter.of(c.id); n != perClient {
				return fmt.Errorf("client %s: %d of %d messages delivered", c.key, n, perClient)
			}
		}
		return nil
	})
	// The flooders' messages: each delivered or counted as dropped.
	var sentAll int64
	for _, s := range sent {
		sentAll += s
	}
	var delivered int
	var droppedMsgs, ownBound float64
	eventually(t, waitTimeout, "every flood message delivered or counted", func() error {
		delivered = 0
		for _, c := range fl {
			delivered += counter.of(c.id)
		}
		var err error
		if droppedMsgs, err = cl.metric(e.adminURL(), "switchboard_events_dropped_total", `type="message"`); err != nil {
			return err
		}
		if int64(delivered)+int64(droppedMsgs) != sentAll {
			return fmt.Errorf("%d sent, %d delivered + %v dropped", sentAll, delivered, droppedMsgs)
		}
		return nil
	})
	ownBound, err := cl.metric(e.adminURL(), "switchboard_events_dropped_total", `reason="conn_queue_full"`)
	if err != nil {
		t.Fatal(err)
	}
	if ownBound == 0 {
		t.Fatalf("the flood (%d messages in %s) was never shed at the flooders' own bound", sentAll, floodFor.Round(time.Millisecond))
	}
	if err := cl.noLifecycleDrops(); err != nil {
		t.Fatal(err)
	}
	t.Logf("flood: %d messages from %d clients in %s (%.0f/s): %d delivered, %v dropped (%v at the flooder's own bound); %d churning clients: %d CONNECT/DISCONNECT and %d messages, none lost",
		sentAll, flooders, floodFor.Round(time.Millisecond), float64(sentAll)/floodFor.Seconds(), delivered, droppedMsgs, ownBound, len(churn), 2*len(churn), perClient*len(churn))

	codes := map[string]int{}
	for _, c := range churn {
		codes[c.id] = 1000
	}
	for _, c := range fl {
		codes[c.id] = 1000
	}
	cl.finish(append(slices.Clone(fl), churn...), codes)
	if err := cl.noLifecycleDrops(); err != nil {
		t.Fatal(err)
	}
}

// noLifecycleDrops checks that no running edge dropped a CONNECT or
// DISCONNECT for any reason.
func (cl *cluster) noLifecycleDrops() error {
	for _, e := range cl.edges {
		if !e.p.running() {
			continue
		}
		for _, typ := range []string{"connect", "disconnect"} {
			v, err := cl.metric(e.adminURL(), "switchboard_events_dropped_total", `type="`+typ+`"`)
			if err != nil {
				return err
			}
			if v != 0 {
				return fmt.Errorf("%s dropped %v %s events", e.nodeID, v, strings.ToUpper(typ))
			}
		}
	}
	return nil
}
