package session

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/internal/cluster"
	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/groups"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// A dead node's connections (its lease expired, nobody announced them) are
// announced by a surviving node's janitor: one DISCONNECT each, 1006 "node
// lost", with what the record kept of them, and they leave their user and
// groups.
func TestADeadNodesConnectionsAreAnnouncedOnceWithTheirIdentityAndLeaveTheirGroups(t *testing.T) {
	r := newRig(t, allow)
	ctx := t.Context()
	const dead = "node-dead"
	rec := cluster.ConnRecord{ID: "DeadNodeConn0001", Node: dead, ConnectedAt: time.Now().Add(-time.Minute).Truncate(time.Millisecond),
		SourceIP: "203.0.113.9", UserAgent: "old-client/1", UserID: "bob", Principal: json.RawMessage(`{"principalId":"bob","plan":"pro"}`)}
	if !conn.ValidID(rec.ID) {
		t.Fatalf("test record ID %q is not a connection ID", rec.ID)
	}
	if err := r.store.Add(ctx, rec.ID, rec.UserID, "room"); err != nil {
		t.Fatal(err)
	}
	if err := r.reg.Register(ctx, rec); err != nil {
		t.Fatal(err)
	}
	// The dead node held a lease that expired.
	if _, err := r.reg.RenewLease(ctx, dead, cluster.Incarnation{Token: "dead-1", New: true}, time.Millisecond); err != nil {
		t.Fatal(err)
	}

	ev := r.expect(t, disconnectSubject, rec.ID)
	rc := ev.body.RequestContext
	if rc.DisconnectStatusCode != 1006 || rc.DisconnectReason == nil || *rc.DisconnectReason != "node lost" {
		t.Fatalf("DISCONNECT status %d, reason %v; want 1006, node lost", rc.DisconnectStatusCode, rc.DisconnectReason)
	}
	if ev.body.Switchboard.NodeID != dead || ev.body.Switchboard.UserID != "bob" || rc.Identity.SourceIP != rec.SourceIP ||
		rc.Identity.UserAgent != rec.UserAgent || rc.ConnectedAt != rec.ConnectedAt.UnixMilli() {
		t.Fatalf("DISCONNECT node %q, user %q, identity %+v, connected at %d; want the record's %+v",
			ev.body.Switchboard.NodeID, ev.body.Switchboard.UserID, rc.Identity, rc.ConnectedAt, rec)
	}
	if a := authorizer(ev); a["principalId"] != "bob" || a["plan"] != "pro" {
		t.Fatalf("DISCONNECT authorizer %v, want the record's principal", a)
	}
	// It left its user and group, and its record is gone.
	testenv.Eventually(t, "the dead connection's memberships removed", func() bool {
		u, err1 := r.store.Count(ctx, groups.KindUser, "bob")
		g, err2 := r.store.Count(ctx, groups.KindGroup, "room")
		return err1 == nil && err2 == nil && u == 0 && g == 0
	})
	testenv.Eventually(t, "the dead connection's record removed", func() bool { // after its announcement
		_, err := r.reg.Lookup(ctx, rec.ID)
		return errors.Is(err, conn.ErrGone)
	})
	// Once: the next event is a new connection's CONNECT.
	r.open(t)
}
