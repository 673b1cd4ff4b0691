package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
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
// another edge is told recovered:false and gets a fresh connection, and
// the dead owner's connection gets the usual single DISCONNECT.
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
	waitDetached := func(id string) {
		t.Helper()
		eventually(t, waitTimeout, id+" detached", func() error {
			info, err := router.Get(ctx, id)
			if err != nil || !info.Detached {
				return fmt.Errorf("GET: %+v %v", info, err)
			}
			return nil
		})
	}

	c := dialResume(t, cl, 0, "resume=1")
	id := c.id
	post(id, "a1", "a2", "a3")
	waitData(c, []string{"a1", "a2", "a3"})
	c.cut(t)
	waitDetached(id)
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
	waitDetached(id)
	cl.edges[0].p.kill()
	f := dialResume(t, cl, 1, r.resumeQuery())
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
