package session

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/switchboardgw/switchboard/internal/authn"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// resumeSession is a resumable client connection and its session frame.
type resumeSession struct {
	nc      net.Conn
	id      string
	token   string
	resumed bool
}

// dialResume opens a connection with query (and header h) and reads its
// session frame; err is the handshake's error.
func (r *rig) dialResume(t *testing.T, query string, h http.Header) (*resumeSession, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(h)}
	nc, br, _, err := d.Dial(ctx, r.url+"?"+query)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { nc.Close() })
	if br == nil {
		br = bufio.NewReader(nc)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := ws.ReadFrame(br)
	var sf struct {
		Type, ConnectionID, Token string
		Resumed                   bool
	}
	if err != nil || json.Unmarshal(f.Payload, &sf) != nil || sf.Type != "session" {
		t.Fatalf("session frame %q, %v", f.Payload, err)
	}
	return &resumeSession{nc: nc, id: sf.ConnectionID, token: sf.Token, resumed: sf.Resumed}, nil
}

// cut resets the client's TCP connection: no close frame.
func (s *resumeSession) cut(t *testing.T, r *rig) {
	t.Helper()
	_ = s.nc.(*net.TCPConn).SetLinger(0)
	_ = s.nc.Close()
	testenv.Eventually(t, s.id+" detached", func() bool {
		info, err := r.ws.Info(context.Background(), s.id)
		return err == nil && info.Detached
	})
}

func (s *resumeSession) query(received int) string {
	return fmt.Sprintf("resume=%s&received=%d", s.token, received)
}

const resumeSubject = "switchboard.event.resume"

// A resumed connection's backend hears RESUME after its CONNECT, and no
// DISCONNECT and no second CONNECT; its end later is one DISCONNECT.
func TestResumeIsAnnouncedAsResumeOnly(t *testing.T) {
	r := newRig(t, allow)
	s, err := r.dialResume(t, "resume=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.expect(t, connectSubject, s.id)
	s.cut(t, r)
	s2, err := r.dialResume(t, s.query(0), nil)
	if err != nil || !s2.resumed || s2.id != s.id {
		t.Fatalf("resume: %+v %v", s2, err)
	}
	// The next event is RESUME: no DISCONNECT, no CONNECT.
	if ev := r.expect(t, resumeSubject, s.id); ev.body.Switchboard.DetachedMs <= 0 {
		t.Fatalf("RESUME %+v: want how long it was away", ev.body.Switchboard)
	}
	// A close handshake ends it (a lost socket would detach it again).
	if err := ws.WriteFrame(s2.nc, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))); err != nil {
		t.Fatal(err)
	}
	r.expect(t, disconnectSubject, s.id)
}

// With the JWT authorizer on, a resume needs a valid token of the same
// user: a missing or expired one is 401, another user's 403, and the
// connection stays detached until a good one comes.
func TestResumeChecksTheJWTAgain(t *testing.T) {
	i := newJWTIssuer(t)
	r := newRig(t, allow, i.authorizer(t, authn.Config{}))
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	alice := bearer(i.token("alice"))
	s, err := r.dialResume(t, "resume=1", alice)
	if err != nil {
		t.Fatal(err)
	}
	r.expect(t, connectSubject, s.id)
	s.cut(t, r)
	for _, tc := range []struct {
		name   string
		h      http.Header
		status int
	}{
		{"no token", nil, http.StatusUnauthorized},
		{"expired", bearer(i.tokenUntil("alice", time.Now().Add(-time.Minute))), http.StatusUnauthorized},
		{"another user", bearer(i.token("bob")), http.StatusForbidden},
	} {
		_, err := r.dialResume(t, s.query(0), tc.h)
		if !errors.Is(err, ws.StatusError(tc.status)) {
			t.Fatalf("%s: %v, want HTTP %d", tc.name, err, tc.status)
		}
	}
	info, err := r.ws.Info(context.Background(), s.id)
	if err != nil || !info.Detached {
		t.Fatalf("after refused resumes: %+v %v, want still detached", info, err)
	}
	s2, err := r.dialResume(t, s.query(0), alice)
	if err != nil || !s2.resumed || s2.id != s.id {
		t.Fatalf("resume with alice's valid token: %+v %v", s2, err)
	}
	r.expect(t, resumeSubject, s.id)
}
