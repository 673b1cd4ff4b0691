package session

import (
	"encoding/json"
	"testing"

	"github.com/switchboardgw/switchboard/internal/cluster"
	"github.com/switchboardgw/switchboard/pkg/backend"
)

// The record is written before $connect runs (a backend may post while it
// runs) and once more only when $connect changed the user or principal the
// first write recorded.

// principalID is the principalId of an authorizer object (JSON).
func principalID(t *testing.T, p json.RawMessage) string {
	t.Helper()
	var v struct {
		PrincipalID string `json:"principalId"`
	}
	if err := json.Unmarshal(p, &v); err != nil {
		t.Fatalf("principal %s: %v", p, err)
	}
	return v.PrincipalID
}

func wantWrites(t *testing.T, w []cluster.ConnRecord, users ...string) {
	t.Helper()
	if len(w) != len(users) {
		t.Fatalf("registry writes %+v, want %d with users %q", w, len(users), users)
	}
	for i, u := range users {
		if w[i].UserID != u {
			t.Fatalf("registry write %d has user %q, want %q (writes %+v)", i, w[i].UserID, u, w)
		}
	}
}

func TestConnectSettingUserWritesIdentityOnce(t *testing.T) {
	r := newRig(t, func(*backend.ConnectRequest) backend.ConnectResponse {
		return backend.ConnectResponse{UserID: "alice"}
	})
	_, id := r.open(t)
	wantWrites(t, r.reg.writesOf(id), "", "alice")
	rec, err := r.reg.Lookup(t.Context(), id)
	if err != nil || rec.UserID != "alice" {
		t.Fatalf("registry record %+v, %v; want user alice", rec, err)
	}
}

func TestConnectSettingAPrincipalWritesItOnceMore(t *testing.T) {
	r := newRig(t, func(*backend.ConnectRequest) backend.ConnectResponse {
		return backend.ConnectResponse{PrincipalID: "p-1", Context: map[string]any{"plan": "pro"}}
	})
	_, id := r.open(t)
	w := r.reg.writesOf(id)
	if len(w) != 2 || len(w[0].Principal) != 0 || principalID(t, w[1].Principal) != "p-1" {
		t.Fatalf("registry writes %+v, want the record and then one write with principal p-1", w)
	}
}

func TestConnectRepeatingTheTokensUserWritesOnce(t *testing.T) {
	mod, hdr := withJWT(t, "alice")
	r := newRig(t, func(*backend.ConnectRequest) backend.ConnectResponse {
		return backend.ConnectResponse{UserID: "alice"}
	}, mod)
	_, id := r.open(t, hdr)
	// The record written before $connect already holds the token's user.
	wantWrites(t, r.reg.writesOf(id), "alice")
}

func TestConnectSayingNothingOfIdentityKeepsTheTokensInTheOneWrite(t *testing.T) {
	mod, hdr := withJWT(t, "alice")
	r := newRig(t, allow, mod)
	c := r.dial(t, hdr)
	ev := r.expect(t, connectSubject, "")
	w := r.reg.writesOf(ev.connID)
	wantWrites(t, w, "alice")
	if principalID(t, w[0].Principal) != "alice" {
		t.Fatalf("record principal %s, want the token's (principalId alice)", w[0].Principal)
	}
	if ev.body.Switchboard.UserID != "alice" || authorizer(ev)["principalId"] != "alice" {
		t.Fatalf("CONNECT user %q, authorizer %v; want the token's alice", ev.body.Switchboard.UserID, ev.body.RequestContext.Authorizer)
	}
	c.Close()
	if ev := r.expect(t, disconnectSubject, ev.connID); ev.body.Switchboard.UserID != "alice" || authorizer(ev)["principalId"] != "alice" {
		t.Fatalf("DISCONNECT user %q, authorizer %v; want the token's alice", ev.body.Switchboard.UserID, ev.body.RequestContext.Authorizer)
	}
}

func TestConnectNamingAnotherUserThanTheTokenWritesThatUserOnceMore(t *testing.T) {
	mod, hdr := withJWT(t, "alice")
	r := newRig(t, func(*backend.ConnectRequest) backend.ConnectResponse {
		return backend.ConnectResponse{UserID: "bob"}
	}, mod)
	r.dial(t, hdr)
	ev := r.expect(t, connectSubject, "")
	wantWrites(t, r.reg.writesOf(ev.connID), "alice", "bob")
	if ev.body.Switchboard.UserID != "bob" {
		t.Fatalf("CONNECT user %q, want bob ($connect's answer refines the token's)", ev.body.Switchboard.UserID)
	}
}
