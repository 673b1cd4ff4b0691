package session

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/internal/testenv"
)

// A lease that lapsed with nobody cleaning up (the registry restarted, or
// the node was away but no janitor noticed) is lost, not revoked: the node
// keeps its connections and writes every live one again, with its identity
// and the state set since $connect.
func TestALostLeaseReassertsEveryLiveConnectionWithItsIdentity(t *testing.T) {
	r := newRig(t, asUser, withLease(2*time.Second))
	ctx := t.Context()
	a, aID := r.openAs(t, "alice")
	gone, goneID := r.openAs(t, "bob")
	gone.Close()
	r.expect(t, disconnectSubject, goneID)
	state := json.RawMessage(`{"principalId":"alice","step":3}`)
	if err := r.h.Local(r.ws).SetState(ctx, aID, state); err != nil {
		t.Fatal(err)
	}
	before, goneBefore := len(r.reg.writesOf(aID)), len(r.reg.writesOf(goneID))

	r.reg.later(time.Hour) // the lease lapsed; the node's next renewal finds it lost
	testenv.Eventually(t, "alice's connection written again", func() bool { return len(r.reg.writesOf(aID)) > before })
	w := r.reg.writesOf(aID)[before]
	if w.Node != nodeID || w.UserID != "alice" || principalID(t, w.Principal) != "alice" || w.SourceIP != "127.0.0.1" {
		t.Fatalf("re-asserted record %+v, want alice's on %s with the state set", w, nodeID)
	}
	var got map[string]any
	if err := json.Unmarshal(w.Principal, &got); err != nil || got["step"] != float64(3) {
		t.Fatalf("re-asserted principal %s, want the state set (step 3)", w.Principal)
	}
	testenv.Eventually(t, "the node healthy", r.node.Healthy)
	if n := len(r.reg.writesOf(goneID)); n != goneBefore {
		t.Fatalf("%d writes of a closed connection, want the %d before (not re-asserted)", n, goneBefore)
	}
	// Nothing announced, the connection served.
	r.reaches(t, a, aID, "still here")
	a.Close()
	r.expect(t, disconnectSubject, aID)
}
