package session

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/backend"
)

func withPrincipal(id string) func(*backend.ConnectRequest) backend.ConnectResponse {
	return func(*backend.ConnectRequest) backend.ConnectResponse { return backend.ConnectResponse{PrincipalID: id} }
}

// authorizer is an event's authorizer object.
func authorizer(ev event) map[string]any {
	m, _ := ev.body.RequestContext.Authorizer.(map[string]any)
	return m
}

func TestSetStateRidesOnEveryLaterEventAndInTheRecord(t *testing.T) {
	r := newRig(t, withPrincipal("p-1"))
	c, id := r.open(t)
	state := json.RawMessage(`{"principalId":"p-2","step":2}`)
	if err := r.h.Local(r.ws).SetState(t.Context(), id, state); err != nil {
		t.Fatalf("SetState: %v", err)
	}
	if a := authorizer(r.says(t, c, id, "after")); a["principalId"] != "p-2" || a["step"] != float64(2) {
		t.Fatalf("MESSAGE authorizer %v, want the state set", a)
	}
	// The record has it, for a DISCONNECT another node may have to send.
	rec, err := r.reg.Lookup(t.Context(), id)
	if err != nil || principalID(t, rec.Principal) != "p-2" {
		t.Fatalf("registry record %+v, %v; want the state set", rec, err)
	}
	c.Close()
	if a := authorizer(r.expect(t, disconnectSubject, id)); a["principalId"] != "p-2" || a["step"] != float64(2) {
		t.Fatalf("DISCONNECT authorizer %v, want the state set", a)
	}
}

func TestSetStateRefusesAnythingButAJSONObjectAndKeepsTheStateBefore(t *testing.T) {
	r := newRig(t, withPrincipal("p-1"))
	c, id := r.open(t)
	for _, bad := range []string{``, `[1]`, `"s"`, `{"open":`, `nope`} {
		if err := r.h.Local(r.ws).SetState(t.Context(), id, json.RawMessage(bad)); !errors.Is(err, conn.ErrInvalidState) {
			t.Errorf("SetState(%q) = %v, want ErrInvalidState", bad, err)
		}
	}
	if a := authorizer(r.says(t, c, id, "after")); a["principalId"] != "p-1" {
		t.Fatalf("MESSAGE authorizer %v, want $connect's p-1 still", a)
	}
	if w := r.reg.writesOf(id); len(w) != 2 {
		t.Fatalf("%d registry writes, want the 2 of the connect (no refused state written)", len(w))
	}
}

func TestSetStateOnAClosedConnectionIsGone(t *testing.T) {
	r := newRig(t, allow)
	c, id := r.open(t)
	c.Close()
	r.expect(t, disconnectSubject, id)
	if err := r.h.Local(r.ws).SetState(t.Context(), id, json.RawMessage(`{"a":1}`)); !errors.Is(err, conn.ErrGone) {
		t.Fatalf("SetState on a closed connection = %v, want ErrGone", err)
	}
}

func TestInfoReportsPrincipalAndGroups(t *testing.T) {
	r := newRig(t, func(*backend.ConnectRequest) backend.ConnectResponse {
		return backend.ConnectResponse{UserID: "alice", PrincipalID: "alice@example", Context: map[string]any{"role": "admin"},
			Groups: []string{"lobby"}}
	})
	r.dial(t)
	id := r.onlyID(t)
	r.expect(t, connectSubject, id)
	local := r.h.Local(r.ws)
	info, err := local.Info(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(info.Principal, &p); err != nil || p["principalId"] != "alice@example" || p["role"] != "admin" {
		t.Fatalf("principal %s (%v), want the authorizer object of $connect", info.Principal, err)
	}
	if info.UserID != "alice" || len(info.Groups) != 1 || info.Groups[0] != "lobby" {
		t.Fatalf("info %+v, want user alice in group lobby", info)
	}
	// Later changes show: a group joined through the API, a replaced state.
	if err := r.groups.AddToGroup(context.Background(), "room-1", id); err != nil {
		t.Fatal(err)
	}
	if err := local.SetState(context.Background(), id, json.RawMessage(`{"step":2}`)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the new group and state", func() bool {
		info, err = local.Info(context.Background(), id)
		return err == nil && len(info.Groups) == 2 && string(info.Principal) == `{"step":2}`
	})
}
