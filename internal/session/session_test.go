package session

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/authz"
	"github.com/switchboardgw/switchboard/internal/cluster"
	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/groups"
	"github.com/switchboardgw/switchboard/internal/lifecycle"
	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/backend"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

const nodeID = "node-a"

// countingRegistry is the cluster's memory registry, counting the records
// written for each connection.
type countingRegistry struct {
	*cluster.MemoryRegistry
	mu     sync.Mutex
	writes map[string][]cluster.ConnRecord
}

func (r *countingRegistry) Register(ctx context.Context, recs ...cluster.ConnRecord) error {
	r.mu.Lock()
	for _, rec := range recs {
		r.writes[rec.ID] = append(r.writes[rec.ID], rec)
	}
	r.mu.Unlock()
	return r.MemoryRegistry.Register(ctx, recs...)
}

func (r *countingRegistry) writesOf(id string) []cluster.ConnRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cluster.ConnRecord(nil), r.writes[id]...)
}

// event is a lifecycle event as published on NATS.
type event struct{ subject, connID string }

// rig is one edge node's connection lifecycle made of real parts: the
// cluster node over a memory registry, the lifecycle and the groups on an
// embedded NATS server, the edge server, and a backend answering $connect.
type rig struct {
	h      *Handler
	ws     *edge.Server
	reg    *countingRegistry
	url    string
	events chan event
}

func newRig(t *testing.T, onConnect func(r *backend.ConnectRequest) backend.ConnectResponse, mods ...func(*Deps)) *rig {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := testenv.StartNATS(t)
	nc := srv.Connect(t)
	preg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, edge.ErrClosed) {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}

	r := &rig{reg: &countingRegistry{MemoryRegistry: cluster.NewMemoryRegistry(nil), writes: map[string][]cluster.ConnRecord{}},
		events: make(chan event, 100)}
	node, err := cluster.NewNode(cluster.NodeConfig{ID: nodeID}, cluster.NodeDeps{Registry: r.reg, Logger: log,
		Reassert: func(context.Context) []cluster.ConnRecord { return r.h.ReassertAll(r.ws) }})
	if err != nil {
		t.Fatal(err)
	}
	lc, err := lifecycle.New(lifecycle.Config{Fence: node, ConnectMode: lifecycle.ModeRequired, NodeID: nodeID}, nc, preg, log)
	if err != nil {
		t.Fatal(err)
	}
	g, err := groups.New(groups.Config{Prefix: "switchboard", NodeID: nodeID},
		groups.Deps{NC: nc, Store: groups.NewMemoryStore(), Registerer: preg, Logger: log, Fence: node})
	if err != nil {
		t.Fatal(err)
	}
	deps := Deps{Events: lc, Owner: node, Groups: g, Logger: log}
	for _, m := range mods {
		m(&deps)
	}
	if r.h, err = New(Config{NodeID: nodeID}, deps); err != nil {
		t.Fatal(err)
	}
	if r.ws, err = edge.New(edge.Config{Listen: "127.0.0.1:0", TickInterval: 20 * time.Millisecond, DrainWindow: 50 * time.Millisecond, ResumeWindow: time.Minute},
		edge.Options{NodeID: nodeID, Handler: r.h, Registerer: preg, Logger: log}); err != nil {
		t.Fatal(err)
	}
	r.url = "ws://" + r.ws.Addr().String() + "/"

	// The events, in the order they were published (one subscription).
	sub, err := nc.Subscribe("switchboard.event.>", func(m *nats.Msg) {
		r.events <- event{m.Subject, m.Header.Get(protocol.HeaderConnID)}
	})
	if err != nil {
		t.Fatal(err)
	}
	be, err := backend.New(srv.Connect(t), backend.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	be.OnConnect(func(_ context.Context, req *backend.ConnectRequest) backend.ConnectResponse { return onConnect(req) })
	if err := be.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	run("cluster node", node.Run)
	run("groups", g.Run)
	run("websocket", r.ws.Run)
	testenv.Eventually(t, "the cluster lease", node.Healthy)
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		for _, err := range []error{r.ws.Shutdown(sctx), func() error { r.h.Stop(); return nil }(), g.Shutdown(sctx),
			lc.Shutdown(sctx), node.Shutdown(sctx)} {
			if err != nil {
				t.Errorf("shutdown: %v", err)
			}
		}
		_ = sub.Unsubscribe()
		cancel()
		wg.Wait()
	})
	return r
}

// dial opens a WebSocket connection (with header h, if any); the test
// closes it.
func (r *rig) dial(t *testing.T, h ...http.Header) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d ws.Dialer
	if len(h) > 0 {
		d.Header = ws.HandshakeHeaderHTTP(h[0])
	}
	c, _, _, err := d.Dial(ctx, r.url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// next is the next event published.
func (r *rig) next(t *testing.T) event {
	t.Helper()
	select {
	case ev := <-r.events:
		return ev
	case <-time.After(testenv.WaitFor):
		t.Fatal("no event published")
		return event{}
	}
}

// onlyID is the one connection of the edge.
func (r *rig) onlyID(t *testing.T) string {
	t.Helper()
	var ids []string
	r.ws.Each(func(c *edge.Conn) { ids = append(ids, c.ID()) })
	if len(ids) != 1 {
		t.Fatalf("%d connections on the edge, want 1", len(ids))
	}
	return ids[0]
}

func allow(*backend.ConnectRequest) backend.ConnectResponse { return backend.ConnectResponse{} }

func TestAdmittedConnectIsRegisteredAndAnnouncedOnce(t *testing.T) {
	r := newRig(t, allow)
	c := r.dial(t)
	id := r.onlyID(t)
	rec, err := r.reg.Lookup(context.Background(), id)
	if err != nil || rec.Node != nodeID {
		t.Fatalf("registry record of %s: %+v, %v; want owned by %s", id, rec, err, nodeID)
	}
	if ev := r.next(t); ev != (event{"switchboard.event.connect", id}) {
		t.Fatalf("first event %+v, want CONNECT of %s", ev, id)
	}
	// The DISCONNECT that follows the close comes next: no second CONNECT between.
	c.Close()
	if ev := r.next(t); ev != (event{"switchboard.event.disconnect", id}) {
		t.Fatalf("event after the CONNECT %+v, want the DISCONNECT of %s", ev, id)
	}
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
	if ev := r.next(t); ev != (event{"switchboard.event.connect", id}) {
		t.Fatalf("first event %+v, want the CONNECT of the allowed %s", ev, id)
	}
	r.reg.mu.Lock()
	denied := 0
	for wid := range r.reg.writes {
		if wid != id {
			denied++
		}
	}
	r.reg.mu.Unlock()
	if denied != 1 {
		t.Fatalf("records written for %d other connections, want the denied one only", denied)
	}
}

func TestCloseAnnouncesOneDisconnectAndUnregisters(t *testing.T) {
	r := newRig(t, allow)
	c := r.dial(t)
	id := r.onlyID(t)
	if ev := r.next(t); ev.subject != "switchboard.event.connect" {
		t.Fatalf("first event %+v, want CONNECT", ev)
	}
	c.Close()
	if ev := r.next(t); ev != (event{"switchboard.event.disconnect", id}) {
		t.Fatalf("event after close %+v, want the DISCONNECT of %s", ev, id)
	}
	testenv.Eventually(t, "the record removed", func() bool {
		_, err := r.reg.Lookup(context.Background(), id)
		return errors.Is(err, conn.ErrGone)
	})
	// A second connection's CONNECT is the next event: no second DISCONNECT.
	r.dial(t)
	if ev := r.next(t); ev.subject != "switchboard.event.connect" || ev.connID == id {
		t.Fatalf("event after the DISCONNECT %+v, want the next connection's CONNECT", ev)
	}
}

func TestConnectSettingUserWritesIdentityOnce(t *testing.T) {
	r := newRig(t, func(*backend.ConnectRequest) backend.ConnectResponse {
		return backend.ConnectResponse{UserID: "alice"}
	})
	r.dial(t)
	id := r.onlyID(t)
	if ev := r.next(t); ev != (event{"switchboard.event.connect", id}) {
		t.Fatalf("first event %+v, want CONNECT of %s", ev, id)
	}
	// One write before $connect (a backend may post while it runs), one
	// with the user $connect set.
	w := r.reg.writesOf(id)
	if len(w) != 2 || w[0].UserID != "" || w[1].UserID != "alice" {
		t.Fatalf("registry writes %+v, want the record and then one write with user alice", w)
	}
	rec, err := r.reg.Lookup(context.Background(), id)
	if err != nil || rec.UserID != "alice" {
		t.Fatalf("registry record %+v, %v; want user alice", rec, err)
	}
}

// withJWT turns the built-in JWT authorizer on (HS256, secret in a file)
// and returns a token for user sub.
func withJWT(t *testing.T, sub string) (func(*Deps), http.Header) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(testJWTSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	j, err := authz.New(authz.Config{KeysFile: file}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return func(d *Deps) { d.JWT = j }, bearer(sub, time.Now().Add(time.Hour))
}

const testJWTSecret = "a secret of at least thirty-two bytes, for tests"

// bearer is an Authorization header with an HS256 token for user sub,
// valid until exp, signed with testJWTSecret.
func bearer(sub string, exp time.Time) http.Header {
	enc := base64.RawURLEncoding.EncodeToString
	claims, _ := json.Marshal(map[string]any{"sub": sub, "exp": exp.Unix()})
	signed := enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc(claims)
	mac := hmac.New(sha256.New, []byte(testJWTSecret))
	mac.Write([]byte(signed))
	return http.Header{"Authorization": {"Bearer " + signed + "." + enc(mac.Sum(nil))}}
}

func TestConnectRepeatingTheTokensUserWritesOnce(t *testing.T) {
	mod, hdr := withJWT(t, "alice")
	r := newRig(t, func(*backend.ConnectRequest) backend.ConnectResponse {
		return backend.ConnectResponse{UserID: "alice"}
	}, mod)
	r.dial(t, hdr)
	id := r.onlyID(t)
	if ev := r.next(t); ev != (event{"switchboard.event.connect", id}) {
		t.Fatalf("first event %+v, want CONNECT of %s", ev, id)
	}
	// The record written before $connect already holds the token's user.
	if w := r.reg.writesOf(id); len(w) != 1 || w[0].UserID != "alice" {
		t.Fatalf("registry writes %+v, want one, with user alice", w)
	}
}
