package session

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/switchboardgw/switchboard/internal/cluster"
	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/groups"
	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/backend"
)

// A node cut off from the registry past its lease is declared dead by
// another node, whose janitor announces its connections. When the node
// learns it was revoked it closes every connection with 1012 and publishes
// nothing of theirs, not even what was queued before: exactly one
// DISCONNECT per connection, the janitor's.
func TestARevokedNodeClosesEveryConnectionWith1012AndPublishesNothingOfThem(t *testing.T) {
	// A short lease, so that the node fences itself soon after it loses
	// the registry.
	r := newRig(t, asUser, withLease(2*time.Second))
	ctx := t.Context()
	a, aID := r.openAs(t, "alice")
	b, bID := r.openAs(t, "bob")
	state := json.RawMessage(`{"principalId":"bob","step":2}`)
	if err := r.h.Local(r.ws).SetState(ctx, bID, state); err != nil {
		t.Fatal(err)
	}
	writes := len(r.reg.writesOf(aID)) + len(r.reg.writesOf(bID))
	testenv.Eventually(t, "alice and bob in their users", func() bool {
		na, _ := r.store.Count(ctx, groups.KindUser, "alice")
		nb, _ := r.store.Count(ctx, groups.KindUser, "bob")
		return na == 1 && nb == 1
	})

	routed := map[string]string{"outcome": "routed"}
	orphans := r.loseLease(t, func() {
		// A message sent now is held by the fence.
		before := r.metric(t, "switchboard_route_messages_total", routed)
		if err := wsutil.WriteClientText(a, []byte("sent while in doubt")); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, "the message queued", func() bool {
			return r.metric(t, "switchboard_route_messages_total", routed) == before+1
		})
	})
	if len(orphans) != 2 {
		t.Fatalf("the other node's janitor announced %d connections, want 2", len(orphans))
	}
	for _, rec := range orphans {
		if rec.ID == bID && principalID(t, rec.Principal) != "bob" {
			t.Fatalf("the janitor read bob's record with principal %s, want the state set", rec.Principal)
		}
	}
	// Back in touch with the registry, the node learned it was revoked.
	if code, ok := closeCode(t, a); ok && code != edge.CodeServiceRestart {
		t.Fatalf("alice closed with %d, want 1012", code)
	}
	if code, ok := closeCode(t, b); ok && code != edge.CodeServiceRestart {
		t.Fatalf("bob closed with %d, want 1012", code)
	}
	testenv.Eventually(t, "both connections closed as fenced", func() bool {
		return r.metric(t, "switchboard_connections_closed_total", map[string]string{"reason": "fenced"}) == 2
	})
	testenv.Eventually(t, "the node healthy with a fresh lease", r.node.Healthy)
	testenv.Eventually(t, "the message held by the fence dropped", func() bool {
		return r.metric(t, "switchboard_events_dropped_total", map[string]string{"reason": "fenced", "type": "message"}) == 1
	})
	// Their DISCONNECTs were not even queued: the fence would drop them,
	// but the node knows they were announced.
	if n := r.metric(t, "switchboard_events_dropped_total", map[string]string{"type": "disconnect"}); n != 0 {
		t.Fatalf("%v DISCONNECTs of revoked connections queued (and dropped), want none", n)
	}

	// Nothing of theirs published: the next event is a new connection's
	// CONNECT, the next message the new connection's.
	c, cID := r.openAs(t, "carol")
	r.says(t, c, cID, "after the revocation")
	// Not re-asserted, gone for the API, out of their users.
	if n := len(r.reg.writesOf(aID)) + len(r.reg.writesOf(bID)); n != writes {
		t.Fatalf("%d registry writes of the revoked connections, want the %d before (none re-asserted)", n, writes)
	}
	for _, id := range []string{aID, bID} {
		if _, err := r.reg.Lookup(ctx, id); !errors.Is(err, conn.ErrGone) {
			t.Fatalf("record of revoked %s: %v, want gone", id, err)
		}
		if err := r.h.Local(r.ws).Post(ctx, id, []byte("late"), false); !errors.Is(err, conn.ErrGone) {
			t.Fatalf("post to revoked %s: %v, want ErrGone", id, err)
		}
	}
	testenv.Eventually(t, "the revoked connections out of their users", func() bool {
		na, _ := r.store.Count(ctx, groups.KindUser, "alice")
		nb, _ := r.store.Count(ctx, groups.KindUser, "bob")
		return na == 0 && nb == 0
	})
}

// loseLease cuts the node off from the registry until its lease is in doubt
// (the node fenced), runs inDoubt, lets another node's janitor announce the
// node's connections (the janitor's DISCONNECTs are not this node's: it
// publishes nothing here), and reconnects the node, which then learns it was
// revoked. It returns what the janitor announced.
func (r *rig) loseLease(t *testing.T, inDoubt func()) []cluster.ConnRecord {
	t.Helper()
	var once sync.Once
	release := r.reg.holdRenewals()
	defer once.Do(release)
	testenv.Eventually(t, "the node fenced, its lease in doubt", func() bool { return !r.node.Healthy() })
	inDoubt()
	// Another node sees the lease expire.
	r.reg.later(time.Hour)
	var orphans []cluster.ConnRecord
	other, err := cluster.NewJanitor(cluster.JanitorConfig{}, cluster.JanitorDeps{Registry: r.reg, Self: "node-b",
		OnOrphan: func(_ context.Context, rec cluster.ConnRecord) { orphans = append(orphans, rec) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.CleanNode(t.Context(), nodeID); err != nil {
		t.Fatalf("the other node's janitor: %v", err)
	}
	once.Do(release)
	return orphans
}

// A connection still in $connect when the cluster announced the node's
// connections was announced with them (its record was written before
// $connect ran): it never opens, and nothing of it is published.
func TestAConnectionStillInConnectWhenTheNodeIsRevokedNeverOpens(t *testing.T) {
	asked, answer := make(chan struct{}), make(chan struct{})
	r := newRig(t, func(req *backend.ConnectRequest) backend.ConnectResponse {
		if req.QueryStringParameters["slow"] != "" {
			close(asked)
			<-answer
		}
		return backend.ConnectResponse{}
	}, withLease(2*time.Second), withConnectTimeout(testenv.WaitFor))
	var answered sync.Once
	allowNow := func() { answered.Do(func() { close(answer) }) }
	t.Cleanup(allowNow) // before the rig's: the backend must not hold its shutdown
	type dialed struct {
		c   net.Conn
		err error
	}
	done := make(chan dialed, 1)
	go func() {
		c, _, _, err := ws.Dialer{}.Dial(context.Background(), r.url+"?slow=1")
		done <- dialed{c, err}
	}()
	select {
	case <-asked:
	case d := <-done:
		t.Fatalf("dial ended before $connect was asked: %v", d.err)
	case <-time.After(testenv.WaitFor):
		t.Fatal("$connect not asked")
	}
	orphans := r.loseLease(t, func() {})
	if len(orphans) != 1 {
		t.Fatalf("the other node's janitor announced %d connections, want the one in $connect", len(orphans))
	}
	testenv.Eventually(t, "the node healthy with a fresh lease", r.node.Healthy)
	allowNow() // $connect allows, too late
	if d := <-done; d.err == nil {
		d.c.Close()
		t.Fatal("the revoked connection was upgraded, want its handshake ended")
	}
	if n := r.metric(t, "switchboard_events_dropped_total", nil); n != 0 {
		t.Fatalf("%v events of the revoked connection queued (and dropped), want none", n)
	}
	// Nothing of it: the next event is a new connection's CONNECT.
	r.open(t)
	if _, err := r.reg.Lookup(t.Context(), orphans[0].ID); !errors.Is(err, conn.ErrGone) {
		t.Fatalf("record of the revoked connection: %v, want gone", err)
	}
}
