package session

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/switchboardgw/switchboard/internal/authn"
)

// jwtRig is a node whose JWT authorizer takes the token from the
// Authorization header, the query's "token" and the subprotocol "jwt.<token>".
func jwtRig(t *testing.T) (*rig, *jwtIssuer, *connectLog) {
	t.Helper()
	i := newJWTIssuer(t)
	var l connectLog
	return newRig(t, l.allow, i.authorizer(t, authn.Config{Query: "token", SubprotocolPrefix: "jwt."})), i, &l
}

func TestATokenOfferedAsASubprotocolIsNeverTheOneThe101Chooses(t *testing.T) {
	r, i, l := jwtRig(t)
	tok := i.token("alice")
	// A browser-style client: the token rides in the offered protocols.
	_, hs := r.dialWith(t, ws.Dialer{Protocols: []string{"chat.v1", "jwt." + tok}}, r.url)
	if hs.Protocol != "chat.v1" {
		t.Fatalf("101 chose subprotocol %q, want chat.v1", hs.Protocol)
	}
	ev := r.expect(t, connectSubject, "")
	if ev.body.Switchboard.UserID != "alice" {
		t.Fatalf("CONNECT user %q, want the token's alice", ev.body.Switchboard.UserID)
	}
	// $connect and the CONNECT event are offered the real protocols only.
	if got := l.asked()[0].Subprotocols(); !slices.Equal(got, []string{"chat.v1"}) {
		t.Fatalf("$connect was offered subprotocols %q, want [chat.v1] (the token stripped)", got)
	}
	if got := ev.body.Switchboard.Subprotocols; !slices.Equal(got, []string{"chat.v1"}) {
		t.Fatalf("CONNECT subprotocols %q, want [chat.v1] (the token stripped)", got)
	}
	// Nor does the header: a $connect echoing it back answers a real
	// protocol, and no backend logs the token.
	req := l.asked()[0]
	if got := headerFold(req.Headers, "Sec-WebSocket-Protocol"); got != "chat.v1" {
		t.Fatalf("$connect header Sec-WebSocket-Protocol = %q, want chat.v1", got)
	}
	for name, vs := range req.MultiValueHeaders {
		if strings.EqualFold(name, "Sec-WebSocket-Protocol") && !slices.Equal(vs, []string{"chat.v1"}) {
			t.Fatalf("$connect multi-value %s = %q, want [chat.v1]", name, vs)
		}
	}
	if got := headerFold(ev.body.Headers, "Sec-WebSocket-Protocol"); got != "chat.v1" {
		t.Fatalf("CONNECT header Sec-WebSocket-Protocol = %q, want chat.v1", got)
	}
}

// headerFold is the value of header name in an event's headers, whatever
// the case the client spelled it in.
func headerFold(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

func TestATokenInTheQueryOrTheHeaderAdmitsItsUser(t *testing.T) {
	r, i, _ := jwtRig(t)
	r.dialWith(t, ws.Dialer{}, r.url+"?token="+i.token("alice"))
	if ev := r.expect(t, connectSubject, ""); ev.body.Switchboard.UserID != "alice" {
		t.Fatalf("CONNECT user %q, want the query token's alice", ev.body.Switchboard.UserID)
	}
	r.dial(t, bearer(i.token("bob")))
	if ev := r.expect(t, connectSubject, ""); ev.body.Switchboard.UserID != "bob" {
		t.Fatalf("CONNECT user %q, want the header token's bob", ev.body.Switchboard.UserID)
	}
}

func TestAMissingOrForgedTokenIsRefused401WithWWWAuthenticateBeforeAnythingElseRuns(t *testing.T) {
	r, i, l := jwtRig(t)
	tok := i.token("alice")
	for name, d := range map[string]ws.Dialer{
		"no token":              {},
		"forged token":          {Header: ws.HandshakeHeaderHTTP(bearer(tok + "x"))},
		"forged query token":    {},
		"protocols, none a JWT": {Protocols: []string{"chat.v1"}},
		"another issuer's key":  {Header: ws.HandshakeHeaderHTTP(bearer((&jwtIssuer{secret: []byte("another secret of at least thirty-two bytes")}).token("alice")))},
	} {
		url := r.url
		if name == "forged query token" {
			url += "?token=" + tok[:len(tok)-2]
		}
		got := r.refused(t, d, url)
		if got.status != http.StatusUnauthorized || got.header.Get("Www-Authenticate") != "Bearer" {
			t.Errorf("%s: refused with %d, WWW-Authenticate %q; want 401, Bearer", name, got.status, got.header.Get("Www-Authenticate"))
		}
	}
	// Nothing ran for them: no record, no $connect, no event. The first
	// event is the CONNECT of the next, valid, client.
	if w := r.reg.written(); len(w) != 0 {
		t.Fatalf("records written for refused tokens: %q", w)
	}
	if n := len(l.asked()); n != 0 {
		t.Fatalf("$connect asked %d times for refused tokens, want 0", n)
	}
	r.dial(t, bearer(tok))
	r.expect(t, connectSubject, "")
	if n := len(l.asked()); n != 1 {
		t.Fatalf("$connect asked %d times, want once (the valid token)", n)
	}
}
