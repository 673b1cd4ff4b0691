package session

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/backend"
)

func TestAdmittedConnectIsRegisteredAndAnnouncedOnce(t *testing.T) {
	r := newRig(t, allow)
	c := r.dial(t)
	id := r.onlyID(t)
	rec, err := r.reg.Lookup(context.Background(), id)
	if err != nil || rec.Node != nodeID {
		t.Fatalf("registry record of %s: %+v, %v; want owned by %s", id, rec, err, nodeID)
	}
	r.expect(t, connectSubject, id)
	// The DISCONNECT that follows the close comes next: no second CONNECT between.
	c.Close()
	r.expect(t, disconnectSubject, id)
	if n := len(r.reg.writesOf(id)); n != 1 {
		t.Fatalf("%d registry writes for a connect without identity, want 1", n)
	}
}

func TestConnectDenyRegistersNothing(t *testing.T) {
	r := newRig(t, func(req *backend.ConnectRequest) backend.ConnectResponse {
		if req.QueryStringParameters["deny"] != "" {
			return backend.Deny(http.StatusForbidden, "no")
		}
		return backend.ConnectResponse{}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, _, err := ws.Dialer{}.Dial(ctx, r.url+"?deny=1")
	if !errors.Is(err, ws.StatusError(http.StatusForbidden)) {
		t.Fatalf("dial: %v, want 403", err)
	}
	// The record written before $connect ran is removed again.
	testenv.Eventually(t, "an empty registry", func() bool {
		n, err := r.reg.CountNode(context.Background(), nodeID)
		return err == nil && n == 0
	})
	if n := r.ws.Count(); n != 0 {
		t.Fatalf("%d connections on the edge after a deny, want 0", n)
	}
	// Nothing announced: the first event is the next connection's CONNECT.
	r.dial(t)
	id := r.onlyID(t)
	r.expect(t, connectSubject, id)
	denied := 0
	for _, wid := range r.reg.written() {
		if wid != id {
			denied++
		}
	}
	if denied != 1 {
		t.Fatalf("records written for %d other connections, want the denied one only", denied)
	}
}

func TestCloseAnnouncesOneDisconnectAndUnregisters(t *testing.T) {
	r := newRig(t, allow)
	c, id := r.open(t)
	c.Close()
	r.expect(t, disconnectSubject, id)
	testenv.Eventually(t, "the record removed", func() bool {
		_, err := r.reg.Lookup(context.Background(), id)
		return errors.Is(err, conn.ErrGone)
	})
	// A second connection's CONNECT is the next event: no second DISCONNECT.
	r.dial(t)
	if ev := r.expect(t, connectSubject, ""); ev.connID == id {
		t.Fatalf("a second CONNECT of %s", id)
	}
}
