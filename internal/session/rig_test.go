package session

import (
	"bufio"
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
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/admission"
	"github.com/switchboardgw/switchboard/internal/authn"
	"github.com/switchboardgw/switchboard/internal/cluster"
	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/groups"
	"github.com/switchboardgw/switchboard/internal/lifecycle"
	"github.com/switchboardgw/switchboard/internal/proxyproto"
	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/backend"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

const (
	nodeID = "node-a"

	connectSubject    = "switchboard.event.connect"
	disconnectSubject = "switchboard.event.disconnect"
)

// testRegistry is the cluster's memory registry, counting the records
// written for each connection. Its clock can be moved forward (another
// node sees this node's lease expire) and this node's renewals held (the
// node cannot reach the registry meanwhile).
type testRegistry struct {
	*cluster.MemoryRegistry
	skew    atomic.Int64 // added to the registry's clock, in ns
	renewMu sync.Mutex   // held: this node's renewals wait

	mu     sync.Mutex
	writes map[string][]cluster.ConnRecord
}

func newTestRegistry() *testRegistry {
	r := &testRegistry{writes: map[string][]cluster.ConnRecord{}}
	r.MemoryRegistry = cluster.NewMemoryRegistry(func() time.Time { return time.Now().Add(time.Duration(r.skew.Load())) })
	return r
}

func (r *testRegistry) Register(ctx context.Context, recs ...cluster.ConnRecord) error {
	r.mu.Lock()
	for _, rec := range recs {
		r.writes[rec.ID] = append(r.writes[rec.ID], rec)
	}
	r.mu.Unlock()
	return r.MemoryRegistry.Register(ctx, recs...)
}

func (r *testRegistry) RenewLease(ctx context.Context, node string, inc cluster.Incarnation, ttl time.Duration) (cluster.LeaseState, error) {
	r.renewMu.Lock()
	defer r.renewMu.Unlock()
	return r.MemoryRegistry.RenewLease(ctx, node, inc, ttl)
}

// holdRenewals makes this node's renewals wait until the returned func is
// called.
func (r *testRegistry) holdRenewals() (release func()) {
	r.renewMu.Lock()
	return r.renewMu.Unlock
}

// later moves the registry's clock forward by d.
func (r *testRegistry) later(d time.Duration) { r.skew.Add(int64(d)) }

func (r *testRegistry) writesOf(id string) []cluster.ConnRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cluster.ConnRecord(nil), r.writes[id]...)
}

// written lists the connections a record was written for.
func (r *testRegistry) written() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.writes))
	for id := range r.writes {
		ids = append(ids, id)
	}
	return ids
}

// event is a lifecycle event (or route message) as published on NATS.
type event struct {
	subject, connID string
	body            protocol.Event
}

// options are what a test changes in the rig; the zero value is a node
// with neither JWT nor admission, its lease the cluster's default.
type options struct {
	jwt      *authn.JWT
	adm      *admission.Controller
	leaseTTL time.Duration
	// connectTimeout bounds $connect (lifecycle.Config.ConnectTimeout); 0: the default.
	connectTimeout time.Duration
	proxy          *proxyproto.Config // the edge listens behind a PROXY protocol reader
}

type option func(*options)

// rig is one edge node's connection lifecycle made of real parts: the
// cluster node over a memory registry with its janitor, the lifecycle and
// the groups on an embedded NATS server, the edge server, and a backend
// answering $connect.
type rig struct {
	h      *Handler
	ws     *edge.Server
	node   *cluster.Node
	reg    *testRegistry
	store  *groups.MemoryStore
	groups *groups.Service
	preg   *prometheus.Registry
	nc     *nats.Conn
	url    string
	events chan event // CONNECT and DISCONNECT, in the order published
	routed chan event // client messages, as the backend receives them
}

func newRig(t *testing.T, onConnect func(r *backend.ConnectRequest) backend.ConnectResponse, opts ...option) *rig {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := testenv.StartNATS(t)
	nc := srv.Connect(t)
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

	r := &rig{reg: newTestRegistry(), store: groups.NewMemoryStore(), preg: prometheus.NewRegistry(), nc: nc,
		events: make(chan event, 1000), routed: make(chan event, 1000)}
	node, err := cluster.NewNode(cluster.NodeConfig{ID: nodeID, LeaseTTL: o.leaseTTL}, cluster.NodeDeps{Registry: r.reg, Logger: log,
		Reassert: func(context.Context) []cluster.ConnRecord { return r.h.ReassertAll(r.ws) },
		Revoked:  func(context.Context) { r.h.RevokeAll(r.ws) }})
	if err != nil {
		t.Fatal(err)
	}
	r.node = node
	lc, err := lifecycle.New(lifecycle.Config{Fence: node, ConnectMode: lifecycle.ModeRequired, NodeID: nodeID, ConnectTimeout: o.connectTimeout}, nc, r.preg, log)
	if err != nil {
		t.Fatal(err)
	}
	g, err := groups.New(groups.Config{Prefix: "switchboard", NodeID: nodeID},
		groups.Deps{NC: nc, Store: r.store, Registerer: r.preg, Logger: log, Fence: node})
	if err != nil {
		t.Fatal(err)
	}
	r.groups = g
	if r.h, err = New(Config{NodeID: nodeID}, Deps{Events: lc, Owner: node, Groups: g, JWT: o.jwt, Admission: o.adm, Logger: log}); err != nil {
		t.Fatal(err)
	}
	janitor, err := cluster.NewJanitor(cluster.JanitorConfig{Interval: 20 * time.Millisecond}, cluster.JanitorDeps{Registry: r.reg,
		Self: nodeID, OnOrphan: r.h.Orphaned, Healthy: node.Healthy, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	eopts := edge.Options{NodeID: nodeID, Handler: r.h, Registerer: r.preg, Logger: log}
	if o.proxy != nil { // as internal/app listens: the PROXY header first
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if eopts.Listener, err = proxyproto.Listen(inner, *o.proxy); err != nil {
			inner.Close()
			t.Fatal(err)
		}
	}
	if r.ws, err = edge.New(edge.Config{Listen: "127.0.0.1:0", TickInterval: 20 * time.Millisecond, DrainWindow: 50 * time.Millisecond, ResumeWindow: time.Minute},
		eopts); err != nil {
		t.Fatal(err)
	}
	r.url = "ws://" + r.ws.Addr().String() + "/"

	// What the backend sees, each kind in the order published (one
	// subscription each).
	collect := func(subject string, into chan event) *nats.Subscription {
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
			body, err := protocol.DecodeEvent(m.Data)
			if err != nil {
				t.Errorf("%s: %v", m.Subject, err)
			}
			into <- event{subject: m.Subject, connID: m.Header.Get(protocol.HeaderConnID), body: body}
		})
		if err != nil {
			t.Fatal(err)
		}
		return sub
	}
	subs := []*nats.Subscription{collect("switchboard.event.>", r.events), collect("switchboard.route.>", r.routed)}
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
	run("lifecycle", lc.Run)
	run("session", r.h.Run)
	run("groups", g.Run)
	run("websocket", r.ws.Run)
	run("janitor", janitor.Run)
	testenv.Eventually(t, "the cluster lease", node.Healthy)
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		for _, err := range []error{janitor.Shutdown(sctx), r.ws.Shutdown(sctx), r.h.Shutdown(sctx), g.Shutdown(sctx),
			lc.Shutdown(sctx), node.Shutdown(sctx)} {
			if err != nil {
				t.Errorf("shutdown: %v", err)
			}
		}
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
		cancel()
		wg.Wait()
	})
	return r
}

// dialWith dials url with d; the test closes the connection.
func (r *rig) dialWith(t *testing.T, d ws.Dialer, url string) (net.Conn, ws.Handshake) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if br != nil {
		ws.PutReader(br) // nothing is sent before the client speaks
	}
	t.Cleanup(func() { c.Close() })
	return c, hs
}

// dial opens a WebSocket connection (with header h, if any); the test
// closes it.
func (r *rig) dial(t *testing.T, h ...http.Header) net.Conn {
	t.Helper()
	var d ws.Dialer
	if len(h) > 0 {
		d.Header = ws.HandshakeHeaderHTTP(h[0])
	}
	c, _ := r.dialWith(t, d, r.url)
	return c
}

// open dials and returns the connection with its ID, read from its CONNECT
// (which must be the next event).
func (r *rig) open(t *testing.T, h ...http.Header) (net.Conn, string) {
	t.Helper()
	c := r.dial(t, h...)
	return c, r.expect(t, connectSubject, "").connID
}

// refusal is a handshake the node refused: its status and header.
type refusal struct {
	status int
	header http.Header
}

// refused dials with d, expecting an HTTP refusal.
func (r *rig) refused(t *testing.T, d ws.Dialer, url string) refusal {
	t.Helper()
	var got refusal
	d.OnStatusError = func(status int, _ []byte, resp io.Reader) {
		got.status = status
		if res, err := http.ReadResponse(bufio.NewReader(resp), nil); err == nil {
			got.header = res.Header
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, _, err := d.Dial(ctx, url)
	if err == nil {
		c.Close()
		t.Fatal("dial: upgraded, want a refusal")
	}
	var se ws.StatusError
	if !errors.As(err, &se) || int(se) != got.status {
		t.Fatalf("dial: %v, want an HTTP refusal", err)
	}
	return got
}

// refusedWith dials with header h (if any), expecting HTTP status.
func (r *rig) refusedWith(t *testing.T, status int, h ...http.Header) refusal {
	t.Helper()
	var d ws.Dialer
	if len(h) > 0 {
		d.Header = ws.HandshakeHeaderHTTP(h[0])
	}
	got := r.refused(t, d, r.url)
	if got.status != status {
		t.Fatalf("refused with %d, want %d", got.status, status)
	}
	return got
}

// next is the next CONNECT or DISCONNECT published.
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

// expect fails unless the next event is on subject, for connection id (any
// when "").
func (r *rig) expect(t *testing.T, subject, id string) event {
	t.Helper()
	ev := r.next(t)
	if ev.subject != subject || (id != "" && ev.connID != id) {
		t.Fatalf("event %s of %s, want %s of %q", ev.subject, ev.connID, subject, id)
	}
	return ev
}

// nextRouted is the next client message the backend received.
func (r *rig) nextRouted(t *testing.T) event {
	t.Helper()
	select {
	case ev := <-r.routed:
		return ev
	case <-time.After(testenv.WaitFor):
		t.Fatal("no message routed")
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

// reaches posts to connection id through the node's API path and reads the
// message at client c: the connection is open and served.
func (r *rig) reaches(t *testing.T, c net.Conn, id, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.h.Local(r.ws).Post(ctx, id, []byte(msg), false); err != nil {
		t.Fatalf("post to %s: %v", id, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testenv.WaitFor))
	got, err := wsutil.ReadServerText(c)
	if err != nil || string(got) != msg {
		t.Fatalf("client of %s read %q, %v; want %q", id, got, err, msg)
	}
}

// says sends msg from client c and waits for the backend to receive it from
// connection id.
func (r *rig) says(t *testing.T, c net.Conn, id, msg string) event {
	t.Helper()
	if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	ev := r.nextRouted(t)
	if ev.connID != id || ev.body.Body != msg {
		t.Fatalf("backend received %q from %s, want %q from %s", ev.body.Body, ev.connID, msg, id)
	}
	return ev
}

// closeCode reads frames at client c until the close frame, and returns its
// code; ok false if the connection ended without one (the node does not
// linger: a reset may overtake it).
func closeCode(t *testing.T, c net.Conn) (code ws.StatusCode, ok bool) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testenv.WaitFor))
	for {
		f, err := ws.ReadFrame(c)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the node did not close the connection")
			}
			return 0, false
		}
		if f.Header.OpCode == ws.OpClose {
			if f.Header.Masked {
				ws.Cipher(f.Payload, f.Header.Mask, 0)
			}
			code, _ := ws.ParseCloseFrameData(f.Payload)
			return code, true
		}
	}
}

func allow(*backend.ConnectRequest) backend.ConnectResponse { return backend.ConnectResponse{} }

// asUser is a $connect backend naming the user of the query's "user".
func asUser(req *backend.ConnectRequest) backend.ConnectResponse {
	return backend.ConnectResponse{UserID: req.QueryStringParameters["user"]}
}

// user is the query naming the user to asUser.
func user(name string) string { return "?user=" + name }

// openAs connects as user (named by $connect, asUser), returning the
// connection and its ID.
func (r *rig) openAs(t *testing.T, name string) (net.Conn, string) {
	t.Helper()
	c, _ := r.dialWith(t, ws.Dialer{}, r.url+user(name))
	ev := r.expect(t, connectSubject, "")
	if ev.body.Switchboard.UserID != name {
		t.Fatalf("CONNECT user %q, want %q", ev.body.Switchboard.UserID, name)
	}
	return c, ev.connID
}

func (r *rig) refusedAs(t *testing.T, name string, status int) {
	t.Helper()
	if got := r.refused(t, ws.Dialer{}, r.url+user(name)); got.status != status {
		t.Fatalf("%s refused with %d, want %d", name, got.status, status)
	}
}

// connectLog is a $connect backend that allows and keeps what it was asked.
type connectLog struct {
	mu   sync.Mutex
	reqs []*backend.ConnectRequest
}

func (l *connectLog) allow(req *backend.ConnectRequest) backend.ConnectResponse {
	l.mu.Lock()
	l.reqs = append(l.reqs, req)
	l.mu.Unlock()
	return backend.ConnectResponse{}
}

func (l *connectLog) asked() []*backend.ConnectRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reqs)
}

// jwtIssuer signs HS256 tokens with a secret that the node's JWT
// authorizer reads from a file.
type jwtIssuer struct {
	secret []byte
	file   string
}

func newJWTIssuer(t *testing.T) *jwtIssuer {
	t.Helper()
	i := &jwtIssuer{secret: []byte("a secret of at least thirty-two bytes, for tests"), file: filepath.Join(t.TempDir(), "secret")}
	if err := os.WriteFile(i.file, i.secret, 0o600); err != nil {
		t.Fatal(err)
	}
	return i
}

// authorizer turns the node's JWT authorizer on, configured as cfg with
// the issuer's key.
func (i *jwtIssuer) authorizer(t *testing.T, cfg authn.Config) option {
	t.Helper()
	cfg.KeysFile = i.file
	j, err := authn.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return func(o *options) { o.jwt = j }
}

// token is a valid token for user sub.
func (i *jwtIssuer) token(sub string) string { return i.tokenUntil(sub, time.Now().Add(time.Hour)) }

// tokenUntil is a token for user sub that expires at exp.
func (i *jwtIssuer) tokenUntil(sub string, exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims, _ := json.Marshal(map[string]any{"sub": sub, "exp": exp.Unix()})
	signed := enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc(claims)
	mac := hmac.New(sha256.New, i.secret)
	mac.Write([]byte(signed))
	return signed + "." + enc(mac.Sum(nil))
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// withJWT turns the built-in JWT authorizer on (header only) and returns a
// token for user sub.
func withJWT(t *testing.T, sub string) (option, http.Header) {
	t.Helper()
	i := newJWTIssuer(t)
	return i.authorizer(t, authn.Config{}), bearer(i.token(sub))
}

// withAdmission turns admission control on with cfg.
func withAdmission(t *testing.T, cfg admission.Config) (option, *admission.Controller) {
	t.Helper()
	adm, err := admission.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return func(o *options) { o.adm = adm }, adm
}

// withLease sets the node's lease TTL.
func withLease(ttl time.Duration) option { return func(o *options) { o.leaseTTL = ttl } }

// behindProxy puts the edge behind a PROXY protocol listener.
func behindProxy(cfg proxyproto.Config) option { return func(o *options) { o.proxy = &cfg } }

// metric sums the series of the named metric on the node's registry whose
// labels include want.
func (r *rig) metric(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := r.preg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// withConnectTimeout sets how long $connect may take.
func withConnectTimeout(d time.Duration) option { return func(o *options) { o.connectTimeout = d } }
