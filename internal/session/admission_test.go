package session

import (
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/switchboardgw/switchboard/internal/admission"
	"github.com/switchboardgw/switchboard/internal/authn"
	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/backend"
)

func wantConns(t *testing.T, adm *admission.Controller, n int) {
	t.Helper()
	testenv.Eventually(t, "the admission count", func() bool { return adm.Conns() == n })
}

func TestCapsRefuseAUsersThirdWith429AndAFullNodeWith503AndTouchNoOpenConnection(t *testing.T) {
	mod, adm := withAdmission(t, admission.Config{MaxConns: 3, MaxConnsPerUser: 2})
	r := newRig(t, asUser, mod)
	a1, a1id := r.openAs(t, "alice")
	a2, _ := r.openAs(t, "alice")
	r.refusedAs(t, "alice", http.StatusTooManyRequests) // alice's third
	b1, b1id := r.openAs(t, "bob")
	r.refusedAs(t, "carol", http.StatusServiceUnavailable) // the node is full
	// The refused hold no slot, and the open connections are served.
	if n := adm.Conns(); n != 3 {
		t.Fatalf("admission counts %d connections, want the 3 open", n)
	}
	r.reaches(t, a1, a1id, "still here")
	r.reaches(t, b1, b1id, "me too")
	// A closed connection gives its slot back (once the node has seen it go).
	a2.Close()
	r.expect(t, disconnectSubject, "")
	wantConns(t, adm, 2)
	r.openAs(t, "alice")
}

func TestATokensUserOverItsCapIsRefused429BeforeConnectRuns(t *testing.T) {
	admMod, adm := withAdmission(t, admission.Config{MaxConnsPerUser: 1})
	i := newJWTIssuer(t)
	var l connectLog
	r := newRig(t, l.allow, admMod, i.authorizer(t, authn.Config{}))
	r.dial(t, bearer(i.token("alice")))
	r.expect(t, connectSubject, "")
	r.refusedWith(t, http.StatusTooManyRequests, bearer(i.token("alice")))
	if n := len(l.asked()); n != 1 {
		t.Fatalf("$connect asked %d times, want once (the refused never reaches it)", n)
	}
	if n := adm.Conns(); n != 1 {
		t.Fatalf("admission counts %d connections, want 1", n)
	}
}

func TestAClosedConnectionFreesItsUsersSlot(t *testing.T) {
	for _, tc := range []struct {
		name string
		via  func(t *testing.T) (*rig, *admission.Controller, func(t *testing.T) (net.Conn, string), func(t *testing.T))
	}{
		{"user named by $connect", func(t *testing.T) (*rig, *admission.Controller, func(t *testing.T) (net.Conn, string), func(t *testing.T)) {
			mod, adm := withAdmission(t, admission.Config{MaxConnsPerUser: 1})
			r := newRig(t, asUser, mod)
			return r, adm, func(t *testing.T) (net.Conn, string) { return r.openAs(t, "alice") },
				func(t *testing.T) { r.refusedAs(t, "alice", http.StatusTooManyRequests) }
		}},
		{"user of the token", func(t *testing.T) (*rig, *admission.Controller, func(t *testing.T) (net.Conn, string), func(t *testing.T)) {
			admMod, adm := withAdmission(t, admission.Config{MaxConnsPerUser: 1})
			i := newJWTIssuer(t)
			r := newRig(t, allow, admMod, i.authorizer(t, authn.Config{}))
			hdr := bearer(i.token("alice"))
			return r, adm, func(t *testing.T) (net.Conn, string) { return r.open(t, hdr) },
				func(t *testing.T) { r.refusedWith(t, http.StatusTooManyRequests, hdr) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, adm, open, refused := tc.via(t)
			c, id := open(t)
			refused(t)
			c.Close()
			r.expect(t, disconnectSubject, id)
			wantConns(t, adm, 0)
			c2, id2 := open(t)
			r.reaches(t, c2, id2, "the freed slot")
		})
	}
}

func TestAConnectionThatConnectDeniesHoldsNoSlot(t *testing.T) {
	mod, adm := withAdmission(t, admission.Config{MaxConns: 1})
	r := newRig(t, func(req *backend.ConnectRequest) backend.ConnectResponse {
		if req.QueryStringParameters["deny"] != "" {
			return backend.Deny(http.StatusForbidden, "no")
		}
		return backend.ConnectResponse{}
	}, mod)
	if got := r.refused(t, ws.Dialer{}, r.url+"?deny=1"); got.status != http.StatusForbidden {
		t.Fatalf("denied with %d, want 403", got.status)
	}
	if n := adm.Conns(); n != 0 {
		t.Fatalf("admission counts %d connections after a deny, want 0", n)
	}
	r.open(t) // the node's only slot is free
}

func TestTheRatesRefuseWith429(t *testing.T) {
	for name, cfg := range map[string]admission.Config{
		"per source IP": {ConnRatePerIP: 0.001, ConnBurstPerIP: 2},
		"per node":      {ConnRate: 0.001, ConnBurst: 2},
	} {
		t.Run(name, func(t *testing.T) {
			mod, _ := withAdmission(t, cfg)
			r := newRig(t, allow, mod)
			for range 2 { // the burst
				c, id := r.open(t)
				c.Close()
				r.expect(t, disconnectSubject, id)
			}
			r.refusedWith(t, http.StatusTooManyRequests)
		})
	}
}

// A client flooding messages is closed with 1008; a well-behaved neighbour
// keeps working.
func TestAMessageFloodClosesOnlyTheAbuserWith1008(t *testing.T) {
	mod, adm := withAdmission(t, admission.Config{MsgRate: 1, MsgBurst: 5})
	r := newRig(t, allow, mod)
	good, goodID := r.open(t)
	bad, badID := r.open(t)
	r.says(t, good, goodID, "hello")

	var wg sync.WaitGroup
	wg.Go(func() {
		for range 50 {
			if wsutil.WriteClientText(bad, []byte("spam")) != nil {
				return // closed under us: expected
			}
		}
	})
	// The client reads the close frame, or, as the node does not linger, a
	// reset that may overtake it.
	if code, ok := closeCode(t, bad); ok && code != ws.StatusPolicyViolation {
		t.Fatalf("abuser closed with %d, want 1008", code)
	}
	wg.Wait()
	// The abuser's DISCONNECT, with 1008, is the one event: the neighbour
	// was not closed.
	if ev := r.expect(t, disconnectSubject, badID); ev.body.RequestContext.DisconnectStatusCode != int64(ws.StatusPolicyViolation) {
		t.Fatalf("abuser's DISCONNECT has status %d, want 1008", ev.body.RequestContext.DisconnectStatusCode)
	}
	if n := r.metric(t, "switchboard_connections_closed_total", map[string]string{"reason": "policy"}); n != 1 {
		t.Fatalf("%v connections closed by a policy, want 1 (the abuser)", n)
	}
	wantConns(t, adm, 1) // the good client
	r.reaches(t, good, goodID, "still fine")
	if err := wsutil.WriteClientText(good, []byte("still routed")); err != nil {
		t.Fatal(err)
	}
	for { // past what the abuser got through before it was closed
		ev := r.nextRouted(t)
		if ev.connID == goodID && ev.body.Body == "still routed" {
			break
		}
		if ev.connID != badID {
			t.Fatalf("routed %q from %s, want the good client's message", ev.body.Body, ev.connID)
		}
	}
	good.Close()
	r.expect(t, disconnectSubject, goodID)
}
