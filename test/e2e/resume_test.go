package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/pkg/connections"
)

// resumeClient is a wsClient that asked for resume: its first message is
// the session frame, every later one counts as received.
type resumeClient struct {
	*wsClient
	session map[string]any
}

func dialResume(t *testing.T, cl *cluster, edge int, query string) *resumeClient {
	t.Helper()
	c, err := dial(t, cl.edges[edge].wsURL()+"/?"+query, edge)
	if err != nil {
		t.Fatal(err)
	}
	return asResume(t, c)
}

// asResume waits for c's session frame.
func asResume(t *testing.T, c *wsClient) *resumeClient {
	t.Helper()
	rc := &resumeClient{wsClient: c}
	eventually(t, waitTimeout, "session frame", func() error {
		msgs := c.messages()
		if len(msgs) == 0 {
			return errors.New("nothing received")
		}
		if err := json.Unmarshal([]byte(msgs[0].data), &rc.session); err != nil || rc.session["type"] != "session" {
			t.Fatalf("first message %q: want the session frame", msgs[0].data)
		}
		return nil
	})
	rc.id, _ = rc.session["connectionId"].(string)
	return rc
}

// data is what the client received after its session frame.
func (c *resumeClient) data() []string {
	var out []string
	for _, m := range c.messages()[1:] {
		out = append(out, m.data)
	}
	return out
}

func (c *resumeClient) resumeQuery() string {
	return fmt.Sprintf("resume=%s&received=%d", c.session["token"], len(c.data()))
}

// waitDetached waits until GET through api reports id detached.
func waitDetached(t *testing.T, api *connections.Client, id string) {
	t.Helper()
	eventually(t, waitTimeout, id+" detached", func() error {
		info, err := api.Get(context.Background(), id)
		if err != nil || !info.Detached {
			return fmt.Errorf("GET: %+v %v", info, err)
		}
		return nil
	})
}

// cut resets the client's TCP connection without a close frame.
func (c *resumeClient) cut(t *testing.T) {
	t.Helper()
	_ = c.conn.(*net.TCPConn).SetLinger(0)
	_ = c.conn.Close()
	<-c.done
}

// Scenario: session resume with real edge and router processes. A client
// whose TCP connection is cut resumes on its edge within the window: same
// ID, the posts made through the router while it was away, once and in
// order; the backend saw one CONNECT, one RESUME and no DISCONNECT, and
// GET through the router said "detached" meanwhile. Then its socket is cut
// again and the owner is SIGKILLed while it is detached: a resume on
// another edge is refused (503) while the owner's lease runs, then told
// recovered:false with a fresh connection, and the dead owner's connection
// gets the usual single DISCONNECT.
func TestResumeOnItsEdgeThenOwnerKilled(t *testing.T) {
	cl := startCluster(t, clusterConfig{edges: 2, edgeArgs: func(int) []string { return []string{"-resume-window", "60s"} }})
	cl.rec.recordResumes()
	router := cl.api(cl.routers[0].apiURL())
	ctx := context.Background()
	post := func(id string, msgs ...string) {
		t.Helper()
		for _, m := range msgs {
			if err := router.PostText(ctx, id, []byte(m)); err != nil {
				t.Fatalf("post %s to %s: %v", m, id, err)
			}
		}
	}
	waitData := func(c *resumeClient, want []string) {
		t.Helper()
		eventually(t, waitTimeout, "messages", func() error {
			if got := c.data(); !slices.Equal(got, want) {
				return fmt.Errorf("got %v, want %v", got, want)
			}
			return nil
		})
	}

	c := dialResume(t, cl, 0, "resume=1")
	id := c.id
	post(id, "a1", "a2", "a3")
	waitData(c, []string{"a1", "a2", "a3"})
	c.cut(t)
	waitDetached(t, router, id)
	post(id, "b1", "b2") // answered 200 while the client is away

	r := dialResume(t, cl, 0, c.resumeQuery())
	if r.id != id || r.session["resumed"] != true || r.session["recovered"] != true {
		t.Fatalf("resume on the owner: %v", r.session)
	}
	post(id, "c1")
	waitData(r, []string{"b1", "b2", "c1"})
	eventually(t, waitTimeout, "RESUME", func() error {
		if rec := cl.rec.get(id); rec.resumes != 1 {
			return fmt.Errorf("%d RESUME events", rec.resumes)
		}
		return nil
	})
	if rec := cl.rec.get(id); rec.connects != 1 || len(rec.disconnects) != 0 {
		t.Fatalf("backend saw %d CONNECT and %v DISCONNECT for a resumed connection, want 1 and none", rec.connects, rec.disconnects)
	}

	// Detached again, and its owner dies.
	r.cut(t)
	waitDetached(t, router, id)
	cl.edges[0].p.kill()
	// The other edge cannot reach the owner: while its lease runs it may be
	// only slow, so the resume is refused with 503 (the client retries, as
	// after any failed upgrade); once the lease has expired, recovered:false.
	q := r.resumeQuery()
	refused := 0
	var f *resumeClient
	eventually(t, leaseTTL+30*time.Second, "an answer other than 503", func() error {
		c, err := dial(t, cl.edges[1].wsURL()+"/?"+q, 1)
		if err != nil {
			if !strings.Contains(err.Error(), "503") {
				t.Fatalf("resume after the owner died: %v, want 503 or recovered:false", err)
			}
			refused++
			return err
		}
		f = asResume(t, c)
		return nil
	})
	t.Logf("resume after the owner died: %d refusals (503) before recovered:false", refused)
	if f.id == id || f.session["resumed"] != false || f.session["recovered"] != false {
		t.Fatalf("resume after the owner died: %v, want recovered:false and a fresh connection", f.session)
	}
	cl.rec.waitDisconnects([]string{id}, leaseTTL+5*time.Second+30*time.Second)
	rec := cl.rec.get(id)
	if len(rec.disconnects) != 1 || rec.disconnects[0].code != codeAbnormal || rec.disconnects[0].node != cl.edges[0].nodeID {
		t.Fatalf("DISCONNECTs %+v, want one 1006 for the dead owner's connection", rec.disconnects)
	}
	post(f.id, "fresh")
	waitData(f, []string{"fresh"})
	if err := router.PostText(ctx, id, []byte("late")); !errors.Is(err, connections.ErrGone) {
		t.Fatalf("post to the dead owner's connection: %v, want 410", err)
	}
}

// Scenario (docs/resume.md, "Resume through another edge"): a client's TCP
// connection is cut while posts and group sends keep coming through the
// router, and it resumes through the other edge. It gets every message,
// in order, exactly once, across its two sockets; the connection keeps its
// ID, its owner and its groups; the backend saw one CONNECT, one RESUME and
// no DISCONNECT, and hears the client's messages from the owner as before.
// Cut again, it resumes on its owner directly; then through the other
// edge while the owner still holds that socket, and its close through the
// relay is one DISCONNECT with the client's code. A forged and a spent token reaching
// the other edge are told recovered:false and get fresh connections.
func TestResumeThroughAnotherEdge(t *testing.T) {
	cl := startCluster(t, clusterConfig{edges: 2, edgeArgs: func(int) []string { return []string{"-resume-window", "60s"} }})
	cl.rec.recordResumes()
	cl.rec.recordMessages()
	router := cl.api(cl.routers[0].apiURL())
	ctx := context.Background()
	owner := cl.edges[0]

	c := dialResume(t, cl, 0, "resume=1")
	id := c.id
	if err := router.AddToGroup(ctx, "room", id); err != nil {
		t.Fatal(err)
	}
	// Two senders through the router, each one message at a time: posts
	// p0…, group sends g0…. The first third before the cut, the second from
	// the cut on (while the resume through the other edge runs), the last
	// once it has resumed.
	const n = 60
	var senders, firstThird sync.WaitGroup
	var sendErr atomic.Value
	cut, resumed := make(chan struct{}), make(chan struct{})
	openCut, openResumed := sync.OnceFunc(func() { close(cut) }), sync.OnceFunc(func() { close(resumed) })
	defer openCut() // a failed test lets the senders finish
	defer openResumed()
	firstThird.Add(2)
	for _, kind := range []string{"p", "g"} {
		senders.Go(func() {
			sentFirst := sync.OnceFunc(firstThird.Done)
			defer sentFirst()
			for i := range n {
				switch i {
				case n / 3:
					sentFirst()
					<-cut
				case 2 * n / 3:
					<-resumed
				}
				m := []byte(fmt.Sprintf("%s%d", kind, i))
				var err error
				if kind == "p" {
					err = router.PostText(ctx, id, m)
				} else {
					err = router.SendToGroup(ctx, "room", m, "")
				}
				if err != nil {
					sendErr.Store(fmt.Errorf("send %s: %w", m, err))
					return
				}
			}
		})
	}
	firstThird.Wait()
	c.cut(t)
	openCut()
	r := dialResume(t, cl, 1, c.resumeQuery())
	if r.id != id || r.session["resumed"] != true || r.session["recovered"] != true {
		t.Fatalf("resume through the other edge: %v", r.session)
	}
	openResumed()
	senders.Wait()
	if err, _ := sendErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, "every message", func() error {
		got := append(c.data(), r.data()...)
		if len(got) < 2*n {
			return fmt.Errorf("%d of %d messages", len(got), 2*n)
		}
		return nil
	})
	got := append(c.data(), r.data()...)
	for _, kind := range []string{"p", "g"} {
		var seq []string
		for _, m := range got {
			if strings.HasPrefix(m, kind) {
				seq = append(seq, m)
			}
		}
		want := make([]string, n)
		for i := range want {
			want[i] = fmt.Sprintf("%s%d", kind, i)
		}
		if !slices.Equal(seq, want) {
			t.Fatalf("%s messages across the two sockets: %v, want %v in order, once each", kind, seq, want)
		}
	}
	if len(got) != 2*n {
		t.Fatalf("%d messages, want %d: %v", len(got), 2*n, got)
	}

	// The owner still holds it, attached, and hears its client.
	info, err := router.Get(ctx, id)
	if err != nil || info.Detached {
		t.Fatalf("GET after the resume: %+v %v, want attached", info, err)
	}
	if err := r.send([]byte("hello from the relayed socket")); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitTimeout, "the client's MESSAGE", func() error {
		if rec := cl.rec.get(id); rec.messages != 1 || rec.node != owner.nodeID {
			return fmt.Errorf("%d MESSAGE events, node %s", rec.messages, rec.node)
		}
		return nil
	})
	eventually(t, waitTimeout, "RESUME", func() error {
		if rec := cl.rec.get(id); rec.resumes != 1 {
			return fmt.Errorf("%d RESUME events", rec.resumes)
		}
		return nil
	})

	// Cut again; resumed on the owner itself, with the count of both
	// sockets so far.
	r.cut(t)
	waitDetached(t, router, id)
	if err := router.PostText(ctx, id, []byte("last")); err != nil {
		t.Fatal(err)
	}
	q := fmt.Sprintf("resume=%s&received=%d", r.session["token"], len(got))
	back := dialResume(t, cl, 0, q)
	if back.id != id || back.session["recovered"] != true {
		t.Fatalf("resume on the owner after a relayed socket: %v", back.session)
	}
	eventually(t, waitTimeout, "the last post", func() error {
		if d := back.data(); !slices.Equal(d, []string{"last"}) {
			return fmt.Errorf("got %v", d)
		}
		return nil
	})

	// Tokens that must not work, through the other edge: a forged one,
	// and the one spent by the resume above.
	for name, token := range map[string]string{
		"forged": id + "." + strings.Repeat("A", 22),
		"spent":  fmt.Sprint(r.session["token"]),
	} {
		f := dialResume(t, cl, 1, "resume="+token+"&received=0")
		if f.id == id || f.session["recovered"] != false || f.session["reason"] != "unknown" {
			t.Fatalf("%s token: %v, want recovered:false (unknown) and a fresh connection", name, f.session)
		}
		if err := f.closeWith(1000, waitTimeout); err != nil {
			t.Fatal(err)
		}
	}
	// Resumed through the other edge once more while the owner still
	// believes the socket alive (the client moved network): the owner
	// detaches it first. Then the client closes through the relay: the
	// close handshake crosses it both ways.
	q = fmt.Sprintf("resume=%s&received=%d", back.session["token"], len(got)+len(back.data())) // all its sockets together
	again := dialResume(t, cl, 1, q)
	if again.id != id || again.session["recovered"] != true {
		t.Fatalf("resume through the other edge of a live socket: %v", again.session)
	}
	eventually(t, waitTimeout, "the old socket closed", func() error {
		if !back.isClosed() {
			return errors.New("still open")
		}
		return nil
	})
	if err := again.closeWith(1000, waitTimeout); err != nil {
		t.Fatal(err)
	}
	if code, _ := again.closed(); code != 1000 {
		t.Fatalf("close answered through the relay with %d, want 1000", code)
	}
	cl.rec.waitDisconnects([]string{id}, waitTimeout)
	rec := cl.rec.get(id)
	if rec.connects != 1 || rec.resumes != 3 || len(rec.disconnects) != 1 || rec.disconnects[0].code != 1000 {
		t.Fatalf("backend saw %d CONNECT, %d RESUME, DISCONNECTs %+v; want 1, 3 and one 1000", rec.connects, rec.resumes, rec.disconnects)
	}
}

// Scenario: the edge relaying a resumed connection dies, SIGKILLed or
// paused, while posts keep coming to the connection through the router.
// The client's socket ends with that edge (or is given up on by the
// client), and it resumes on the owner: every post once and in order,
// same ID, no DISCONNECT. A pipe whose far end stopped is noticed by its
// silence: the owner detaches the connection as for any lost socket.
func TestRelayingEdgeDies(t *testing.T) {
	for _, how := range []string{"killed", "paused"} {
		t.Run(how, func(t *testing.T) {
			cl := startCluster(t, clusterConfig{edges: 2, edgeArgs: func(int) []string { return []string{"-resume-window", "60s"} }})
			cl.rec.recordResumes()
			router := cl.api(cl.routers[0].apiURL())
			ctx := context.Background()

			c := dialResume(t, cl, 0, "resume=1")
			id := c.id
			c.cut(t)
			r := dialResume(t, cl, 1, c.resumeQuery()) // relayed by edge 1
			if r.id != id || r.session["recovered"] != true {
				t.Fatalf("resume through edge 1: %v", r.session)
			}
			const n = 40
			var want []string
			for i := range n / 2 {
				m := fmt.Sprintf("m%d", i)
				want = append(want, m)
				if err := router.PostText(ctx, id, []byte(m)); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, waitTimeout, "the first half through the relay", func() error {
				if got := len(r.data()); got != n/2 {
					return fmt.Errorf("%d of %d", got, n/2)
				}
				return nil
			})
			relayed := len(r.data())
			if how == "killed" {
				cl.edges[1].p.kill() // its sockets die with it: the client sees the end
				<-r.done
			} else {
				cl.edges[1].p.pause() // nothing ends: the client gives up on the socket itself
				defer cl.edges[1].p.resume()
				r.cut(t)
			}
			// Posts while the client has no socket: the owner still holds the
			// relayed one until its pipe falls silent, or detaches at the resume.
			for i := n / 2; i < n; i++ {
				m := fmt.Sprintf("m%d", i)
				want = append(want, m)
				if err := router.PostText(ctx, id, []byte(m)); err != nil {
					t.Fatalf("post %s while the relaying edge is %s: %v", m, how, err)
				}
			}
			if how == "paused" {
				// The owner hears nothing from the paused edge: its pings go
				// unanswered, and the pipe falls silent (three keepalives, 6 s):
				// it detaches the connection.
				waitDetached(t, router, id)
			}
			q := fmt.Sprintf("resume=%s&received=%d", r.session["token"], relayed)
			back := dialResume(t, cl, 0, q)
			if back.id != id || back.session["recovered"] != true {
				t.Fatalf("resume on the owner after the relaying edge was %s: %v", how, back.session)
			}
			eventually(t, waitTimeout, "every post", func() error {
				if got := append(r.data()[:relayed:relayed], back.data()...); !slices.Equal(got, want) {
					return fmt.Errorf("got %v, want %v", got, want)
				}
				return nil
			})
			if rec := cl.rec.get(id); rec.connects != 1 || len(rec.disconnects) != 0 {
				t.Fatalf("backend saw %d CONNECT, DISCONNECTs %v; want 1 and none", rec.connects, rec.disconnects)
			}
			if err := back.closeWith(1000, waitTimeout); err != nil {
				t.Fatal(err)
			}
			cl.rec.waitDisconnects([]string{id}, waitTimeout)
			if rec := cl.rec.get(id); len(rec.disconnects) != 1 || rec.disconnects[0].code != 1000 {
				t.Fatalf("DISCONNECTs %+v, want one 1000", rec.disconnects)
			}
		})
	}
}
