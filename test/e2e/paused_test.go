package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/pkg/connections"
)

// codeServiceRestart is what a revoked node closes its connections with.
const codeServiceRestart = 1012

// pausedConns is how many clients the paused edge holds.
const pausedConns = 20

// Scenario (issue 14, item 3): edge A is SIGSTOPped for longer than its lease
// until the janitor on edge B has announced every A connection (1006). While
// A's clients keep sending messages and the test posts through A's own API
// (requests that queue up during the pause and keep coming after it), A is
// resumed. A finds from its monotonic clock that its lease is in doubt before
// it does anything else, learns it was revoked, and closes its clients with
// 1012: no second DISCONNECT, no event after a DISCONNECT, no post accepted
// by A's API and none reaching a client.
func TestPausedEdgeFencesItself(t *testing.T) {
	cl := startCluster(t, clusterConfig{edges: 2, edgeArgs: func(int) []string {
		return []string{"-janitor-interval", "1s"}
	}})
	cl.rec.recordMessages()
	a := cl.edges[0]
	clients := dialMany(t, cl, []int{0}, pausedConns)
	connIDs := ids(clients)

	// Every client sends a message every 20 ms until it is closed.
	var sent atomic.Int64
	stopSending := sendEvery20ms(clients, &sent)
	defer stopSending()
	eventually(t, waitTimeout, "MESSAGE events from every client", func() error {
		for _, id := range connIDs {
			if cl.rec.get(id).messages == 0 {
				return fmt.Errorf("no MESSAGE from %s yet", id)
			}
		}
		return nil
	})

	paused := time.Now()
	a.p.pause()
	sentAtPause := map[string]int{}
	for _, c := range clients {
		sentAtPause[c.id] = int(c.numbered.Load()) + 1 // see TestPausedEdgeHeldWhileJanitorCleans
	}
	// B's janitor declares A dead: lease TTL + janitor interval + cleanup.
	cl.rec.waitDisconnects(connIDs, leaseTTL+30*time.Second)
	declared := time.Now()

	// Posts through A's own API, 20 at a time, from now until well after
	// the resume: the first ones wait in A's listen backlog during the pause.
	apiA := cl.api(a.apiURL())
	var (
		posters  sync.WaitGroup
		accepted atomic.Int64
		answered atomic.Int64
		mu       sync.Mutex
		answers  = map[string]int{}
	)
	postUntil := make(chan struct{})
	for _, id := range connIDs {
		posters.Go(func() {
			for i := 0; i < 1000; i++ {
				select {
				case <-postUntil:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := apiA.PostText(ctx, id, fmt.Appendf(nil, "post-%d", i))
				cancel()
				answered.Add(1)
				if err == nil {
					accepted.Add(1)
				}
				mu.Lock()
				answers[answerLabel(err)]++
				mu.Unlock()
				if errors.Is(err, connections.ErrGone) {
					time.Sleep(10 * time.Millisecond) // pacing: the test keeps asking, not a poll
				}
			}
		})
	}
	// Let the posts reach A's backlog before it wakes up.
	eventually(t, waitTimeout, "posts queued at the paused edge", func() error {
		if n, err := establishedTo(a.apiPort); err != nil || n < pausedConns/2 {
			return fmt.Errorf("%d API connections to the paused edge (%v)", n, err)
		}
		return nil
	})
	resumed := time.Now()
	a.p.resume()

	// A closes every client with 1012.
	eventually(t, waitTimeout, "the resumed edge closes its revoked clients", func() error {
		open := 0
		for _, c := range clients {
			if !c.isClosed() {
				open++
			}
		}
		if open > 0 {
			return fmt.Errorf("%d of %d still open", open, len(clients))
		}
		return nil
	})
	closedIn := time.Since(resumed)
	for _, c := range clients {
		if code, reason := c.closed(); code != codeServiceRestart {
			t.Errorf("client %s: close code %d (%s), want %d", c.key, code, reason, codeServiceRestart)
		}
	}
	// Keep posting a moment after the revocation too, then stop.
	eventually(t, waitTimeout, "posts answered after the resume", func() error {
		if n := answered.Load(); n < 3*pausedConns {
			return fmt.Errorf("%d posts answered", n)
		}
		return nil
	})
	close(postUntil)
	posters.Wait()

	// A marker through A: once its CONNECT and MESSAGE are recorded, every
	// event A queued before them has been published (or dropped).
	a.p.waitReady(a.adminURL() + "/readyz")
	marker, err := dial(t, a.wsURL(), 0)
	if err != nil {
		t.Fatalf("dial the resumed edge: %v", err)
	}
	cl.learnIDs([]*wsClient{marker})
	if err := marker.send([]byte("marker")); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, "the marker's MESSAGE", func() error {
		if cl.rec.get(marker.id).messages == 0 {
			return errors.New("not recorded yet")
		}
		return nil
	})

	// Events of messages A read after the resume are the fence's: none may
	// follow the janitor's DISCONNECT. Those A had handed to its NATS
	// connection before it stopped go out when it resumes, and can (no
	// lease can stop a write the process made before it was paused:
	// docs/cluster.md, "The fence").
	after, early, extra := cl.rec.eventsAfterDisconnectBut(sentAtPause)
	reached := 0
	for _, c := range clients {
		for _, m := range c.messages() {
			if strings.HasPrefix(m.data, "post-") {
				reached++
			}
		}
	}
	for _, id := range connIDs {
		d := cl.rec.get(id).disconnects
		if len(d) == 0 || d[0].code != codeAbnormal || d[0].node != a.nodeID {
			t.Errorf("%s: DISCONNECTs %+v, want one 1006 for %s (from the janitor)", id, d, a.nodeID)
		}
	}
	mu.Lock()
	summary := fmt.Sprint(answers)
	mu.Unlock()
	revocations, _ := cl.metric(a.adminURL(), "switchboard_lease_revocations_total", "")
	fenced, _ := cl.metric(a.adminURL(), "switchboard_events_dropped_total", `reason="fenced"`)
	t.Logf("paused %s (lease TTL %s); janitor announced all %d after %s; resumed: clients closed 1012 within %s; %d messages sent by clients; posts through the paused edge's API: %d answered %s, %d accepted, %d reached a client; events after a DISCONNECT %d (and %d published before the pause), duplicate DISCONNECTs %d; revocations %v, events dropped as fenced %v",
		resumed.Sub(paused).Round(time.Millisecond), leaseTTL, len(connIDs), declared.Sub(paused).Round(time.Millisecond),
		closedIn.Round(time.Millisecond), sent.Load(), answered.Load(), summary, accepted.Load(), reached, after, early, extra, revocations, fenced)
	if extra != 0 {
		t.Errorf("%d duplicate DISCONNECTs, want 0", extra)
	}
	if after != 0 {
		t.Errorf("%d events after a DISCONNECT, want 0", after)
	}
	if accepted.Load() != 0 || reached != 0 {
		t.Errorf("the paused edge's API accepted %d posts after the janitor declared its connections gone (%d reached a client), want 0", accepted.Load(), reached)
	}
	if revocations != 1 {
		t.Errorf("switchboard_lease_revocations_total = %v on the resumed edge, want 1", revocations)
	}

	codes := map[string]int{marker.id: 1000}
	for _, id := range connIDs {
		codes[id] = codeAbnormal
	}
	cl.finish(append(clients, marker), codes)
}

// pausedSetup starts a cluster of two edges, 20 clients on edge A sending a
// message every 20 ms, and waits for a MESSAGE event from each.
func pausedSetup(t *testing.T, janitorInterval string) (*cluster, *edgeNode, []*wsClient, func()) {
	cl := startCluster(t, clusterConfig{edges: 2, edgeArgs: func(int) []string {
		return []string{"-janitor-interval", janitorInterval}
	}})
	cl.rec.recordMessages()
	clients := dialMany(t, cl, []int{0}, pausedConns)
	stopSending := sendEvery20ms(clients, nil)
	eventually(t, waitTimeout, "MESSAGE events from every client", func() error {
		for _, c := range clients {
			if cl.rec.get(c.id).messages == 0 {
				return fmt.Errorf("no MESSAGE from %s yet", c.id)
			}
		}
		return nil
	})
	return cl, cl.edges[0], clients, stopSending
}

// sendEvery20ms makes every client send a message every 20 ms (counted in
// sent, if given) until it is closed or the returned stop is called; stop
// waits for the senders and may be called more than once.
func sendEvery20ms(clients []*wsClient, sent *atomic.Int64) (stop func()) {
	var senders sync.WaitGroup
	done := make(chan struct{})
	for _, c := range clients {
		senders.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for i := 0; i < 10000; i++ {
				select {
				case <-done:
					return
				case <-tick.C:
				}
				if c.isClosed() || c.send(fmt.Appendf(nil, "m%d", i)) != nil {
					return
				}
				c.numbered.Store(int64(i + 1))
				if sent != nil {
					sent.Add(1)
				}
			}
		})
	}
	var once sync.Once
	return func() { once.Do(func() { close(done); senders.Wait() }) }
}

// leaseExpired reports whether node's lease is past its expiry by Redis time.
func (cl *cluster) leaseExpired(node string) (bool, error) {
	ctx := context.Background()
	score, err := cl.rdb.ZScore(ctx, prefix+":{nodes}:leases", node).Result()
	if err != nil {
		return false, err
	}
	now, err := cl.rdb.Time(ctx).Result()
	if err != nil {
		return false, err
	}
	return int64(score) < now.UnixMilli(), nil
}

func (cl *cluster) messagesOf(connIDs []string) int {
	n := 0
	for _, id := range connIDs {
		n += cl.rec.get(id).messages
	}
	return n
}

// Resumed while a janitor is in the middle of its cleanup (the lease expired,
// the cleanup lock taken: here by the test, as a slow janitor would hold it):
// the resumed edge's lease is in doubt, so it accepts no post through its API
// and publishes none of its clients' messages until it learns the outcome.
// Paused again, the cleanup completes (B's janitor); resumed, it is revoked
// and closes with 1012, each connection announced once.
func TestPausedEdgeHeldWhileJanitorCleans(t *testing.T) {
	cl, a, clients, stopSending := pausedSetup(t, "1s")
	defer stopSending()
	connIDs := ids(clients)
	lock := prefix + ":{nodes}:cleanup:" + a.nodeID
	a.p.pause()
	// What each client had sent when A stopped: A can have read (and
	// handed to its NATS connection) at most these and the one send in
	// flight; anything later reaches it only after the resume, fenced.
	sentAtPause := map[string]int{}
	for _, c := range clients {
		sentAtPause[c.id] = int(c.numbered.Load()) + 1
	}
	// A slow janitor's lock, before B's janitor can take it.
	if err := cl.rdb.Set(context.Background(), lock, "e2e-slow-janitor", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, "the paused edge's lease expires", func() error {
		if ok, err := cl.leaseExpired(a.nodeID); err != nil || !ok {
			return fmt.Errorf("not expired yet (%v)", err)
		}
		return nil
	})
	a.p.resume()
	resumed := time.Now()
	apiA := cl.api(a.apiURL())
	var (
		posters  sync.WaitGroup
		accepted atomic.Int64
		answered atomic.Int64
	)
	for _, id := range connIDs {
		posters.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := apiA.PostText(ctx, id, []byte("post-during-cleanup"))
			answered.Add(1)
			if err == nil {
				accepted.Add(1)
			}
		})
	}
	// The edge is fenced: not ready, posts wait, messages are held. The
	// window is bounded by what the test watches, not by a sleep: the
	// readiness check turning 503 and every post in flight.
	eventually(t, waitTimeout, "the resumed edge reports not ready", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := httpGet(ctx, a.adminURL()+"/readyz"); err == nil {
			return errors.New("ready")
		}
		return nil
	})
	eventually(t, waitTimeout, "posts in flight at the fenced edge", func() error {
		if n, err := establishedTo(a.apiPort); err != nil || n < pausedConns/2 {
			return fmt.Errorf("%d API connections (%v)", n, err)
		}
		return nil
	})
	window := time.Since(resumed)
	heldAccepted, heldAnswered := accepted.Load(), answered.Load()
	// MESSAGE events of messages A read after the resume: held while the
	// lease is in doubt, none may have been published. (Messages A had
	// published before the pause may arrive late: they were still in its
	// NATS connection's buffer when it stopped.)
	published := 0
	for _, c := range clients {
		if n := cl.rec.get(c.id).lastNumbered; n >= sentAtPause[c.id] {
			published += n - sentAtPause[c.id] + 1
		}
	}
	reached := 0
	for _, c := range clients {
		for _, m := range c.messages() {
			if m.data == "post-during-cleanup" {
				reached++
			}
		}
	}
	// The cleanup finishes while A is paused again (so that A cannot take
	// the lease back the moment the lock is free): B's janitor announces
	// every connection; on its resume A learns it was revoked.
	a.p.pause()
	if err := cl.rdb.Del(context.Background(), lock).Err(); err != nil {
		t.Fatal(err)
	}
	cl.rec.waitDisconnects(connIDs, waitTimeout)
	a.p.resume()
	eventually(t, waitTimeout, "the revoked edge closes its clients", func() error {
		for _, c := range clients {
			if !c.isClosed() {
				return fmt.Errorf("client %s open", c.key)
			}
		}
		return nil
	})
	stopSending()
	posters.Wait()
	reached = 0
	for _, c := range clients {
		if code, reason := c.closed(); code != codeServiceRestart {
			t.Errorf("client %s: close code %d (%s), want %d", c.key, code, reason, codeServiceRestart)
		}
		for _, m := range c.messages() {
			if m.data == "post-during-cleanup" {
				reached++
			}
		}
	}
	after, extra := cl.rec.eventsAfterDisconnect(connIDs)
	t.Logf("resumed during the cleanup: in the first %s fenced, %d of %d posts answered (%d accepted), %d MESSAGE events published, %d posts reached a client; after the revocation %d accepted in all, events after a DISCONNECT %d, duplicate DISCONNECTs %d",
		window.Round(time.Millisecond), heldAnswered, pausedConns, heldAccepted, published, reached, accepted.Load(), after, extra)
	if heldAccepted != 0 || accepted.Load() != 0 || reached != 0 {
		t.Errorf("posts accepted by the fenced edge: %d (%d in all), %d reached a client; want 0", heldAccepted, accepted.Load(), reached)
	}
	if published > 0 {
		t.Errorf("%d MESSAGE events published while the lease was in doubt, want 0", published)
	}
	if extra != 0 || after != 0 {
		t.Errorf("%d duplicate DISCONNECTs, %d events after a DISCONNECT; want 0", extra, after)
	}
	codes := map[string]int{}
	for _, id := range connIDs {
		codes[id] = codeAbnormal
	}
	cl.finish(clients, codes)
}

// Paused past its lease but resumed before any janitor looked (janitors run
// every hour here): nobody declared it dead, so once it has renewed
// everything resumes. The messages its clients sent meanwhile are published,
// posts are delivered, no connection is closed or announced.
func TestPausedEdgeResumesWhenNotDeclaredDead(t *testing.T) {
	cl, a, clients, stopSending := pausedSetup(t, "1h")
	defer stopSending()
	connIDs := ids(clients)
	a.p.pause()
	eventually(t, waitTimeout, "the paused edge's lease expires", func() error {
		if ok, err := cl.leaseExpired(a.nodeID); err != nil || !ok {
			return fmt.Errorf("not expired yet (%v)", err)
		}
		return nil
	})
	base := cl.messagesOf(connIDs)
	a.p.resume()
	resumed := time.Now()
	apiA := cl.api(a.apiURL())
	if err := forEach(connIDs, 20, func(id string) error {
		return apiA.PostText(context.Background(), id, []byte("after-resume"))
	}); err != nil {
		t.Fatalf("posts after the resume: %v", err)
	}
	for _, c := range clients {
		eventually(t, waitTimeout, "post delivered", func() error {
			for _, m := range c.messages() {
				if m.data == "after-resume" {
					return nil
				}
			}
			return errors.New("not yet")
		})
	}
	eventually(t, waitTimeout, "messages sent during the pause published", func() error {
		if n := cl.messagesOf(connIDs) - base; n < pausedConns {
			return fmt.Errorf("%d new MESSAGE events", n)
		}
		return nil
	})
	stopSending()
	for _, c := range clients {
		if c.isClosed() || cl.rec.disconnected([]string{c.id}) > 0 {
			t.Fatalf("client %s was closed or announced although its node was never declared dead", c.key)
		}
	}
	revocations, _ := cl.metric(a.adminURL(), "switchboard_lease_revocations_total", "")
	lost, _ := cl.metric(a.adminURL(), "switchboard_lease_renewals_total", `outcome="lost"`)
	t.Logf("paused past the lease, resumed before any janitor: %d posts delivered and %d held MESSAGE events published within %s of the resume; revocations %v, renewals that found the lease lost %v",
		len(connIDs), cl.messagesOf(connIDs)-base, time.Since(resumed).Round(time.Millisecond), revocations, lost)
	if revocations != 0 || lost < 2 {
		t.Errorf("revocations %v, lost renewals %v; want 0 and ≥ 2 (start-up and after the pause)", revocations, lost)
	}
	codes := map[string]int{}
	for _, id := range connIDs {
		codes[id] = 1000
	}
	cl.finish(clients, codes)
}

// establishedTo counts the established TCP connections to a loopback port
// of this machine, accepted or still in the listen backlog (/proc/net/tcp).
func establishedTo(port int) (int, error) {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0, err
	}
	local := fmt.Sprintf(":%04X", port)
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], local) && f[3] == "01" {
			n++
		}
	}
	return n, nil
}

// answerLabel names an API answer for the summary.
func answerLabel(err error) string {
	switch {
	case err == nil:
		return "accepted"
	case errors.Is(err, connections.ErrGone):
		return "410"
	}
	var ae *connections.Error
	if errors.As(err, &ae) {
		return fmt.Sprint(ae.StatusCode)
	}
	return "error"
}
