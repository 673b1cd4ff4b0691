package groups

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboardgw/switchboard/internal/api"
	"github.com/switchboardgw/switchboard/internal/cluster"
	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/nodecmd"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// testHandler is the smallest node: $connect takes the user and groups from
// the query (?user=alice&groups=a,b) and records the connection in the
// registry, Open tracks the connection and tells the client its ID, Close
// untracks and unregisters it.
type testHandler struct {
	svc  *Service
	node string
	reg  cluster.Registry
}

func (h *testHandler) Connect(ctx context.Context, c *edge.Conn, r *edge.Request) (*edge.Accept, error) {
	q, _ := urlQuery(r.RawQuery)
	var groups []string
	if g := q.Get("groups"); g != "" {
		groups = strings.Split(g, ",")
	}
	if err := h.reg.Register(ctx, cluster.ConnRecord{ID: c.ID(), Node: h.node, ConnectedAt: time.Now()}); err != nil {
		return nil, err
	}
	return &edge.Accept{UserID: q.Get("user"), Value: groups}, nil
}

func (h *testHandler) Open(c *edge.Conn) {
	groups, _ := c.Value().([]string)
	_ = h.svc.Track(c, c.UserID(), groups)
	_ = c.Send([]byte("id:"+c.ID()), false)
}

func (h *testHandler) Message(*edge.Conn, []byte, bool) {}

func (h *testHandler) Close(c *edge.Conn, _ int, _ string, _ edge.CloseReason) {
	h.svc.Untrack(c.ID())
	_ = h.reg.Unregister(context.Background(), h.node, c.ID())
}

// node is one edge of the test cluster with its groups service and API.
type node struct {
	id    string
	ws    *edge.Server
	svc   *Service
	cmds  *nodecmd.Server // answers membership commands for its connections
	reg   *prometheus.Registry
	api   string // base URL of its @connections API
	nc    *nats.Conn
	proxy *testenv.Proxy // between it and NATS (clusterSetup.natsProxies)
}

// freeze makes the node slow: what it sends (its answers too) stays in the
// proxy, while it still receives, as a node in a long pause would.
func (nd *node) freeze(t *testing.T) {
	t.Helper()
	nd.proxy.Pause()
	// The proxy may read once more from the node: this PING takes that read,
	// or stays in the proxy itself.
	_ = nd.nc.FlushTimeout(200 * time.Millisecond)
}

type testCluster struct {
	nodes    []*node
	store    func() Store
	registry cluster.Registry // the ownership registry, in the same Redis
}

// clusterSetup adjusts startCluster for a test.
type clusterSetup struct {
	routerTimeout time.Duration // how long a node waits for another's answer; 0: default
	natsProxies   bool          // each node reaches NATS through a proxy of its own
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startCluster runs n edges in this process on one real NATS and one real
// Redis. One delivery worker per node keeps every subject of a node in one
// queue, so a broadcast sent last is a fence: once a client has it, it has
// everything sent before.
func startCluster(t *testing.T, n int, cfg Config) *testCluster {
	return startClusterWith(t, n, cfg, clusterSetup{})
}

func startClusterWith(t *testing.T, n int, cfg Config, setup clusterSetup) *testCluster {
	t.Helper()
	nt := testenv.StartNATS(t)
	rdb := newRedisClient(t, testenv.StartRedis(t).Addr())
	prefix := uniquePrefix(t)
	registry, err := cluster.NewRedisRegistry(cluster.RedisConfig{KeyPrefix: prefix}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	cl := &testCluster{registry: registry}
	cl.store = func() Store {
		s, err := NewRedisStore(RedisStoreConfig{KeyPrefix: prefix}, rdb)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for i := range n {
		nd := &node{id: "node" + string(rune('0'+i)), reg: prometheus.NewRegistry()}
		if _, err := registry.RenewLease(t.Context(), nd.id, cluster.Incarnation{}, time.Minute); err != nil {
			t.Fatal(err)
		}
		if setup.natsProxies {
			nd.proxy = testenv.StartProxy(t, strings.TrimPrefix(nt.URL(), "nats://"))
			if nd.nc, err = nats.Connect("nats://" + nd.proxy.Addr()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nd.nc.Close)
		} else {
			nd.nc = nt.Connect(t)
		}
		nc := nd.nc
		router, err := cluster.NewRouter(cluster.RouterConfig{Self: nd.id, Timeout: setup.routerTimeout},
			cluster.RouterDeps{NC: nc, Registry: registry})
		if err != nil {
			t.Fatal(err)
		}
		c := cfg
		c.NodeID, c.Workers = nd.id, 1
		svc, err := New(c, Deps{NC: nc, Store: cl.store(), Registerer: nd.reg, Logger: quietLogger(), Remote: router.Command})
		if err != nil {
			t.Fatal(err)
		}
		nd.svc = svc
		if nd.cmds, err = nodecmd.NewServer(nodecmd.ServerConfig{Node: nd.id}, nodecmd.ServerDeps{NC: nc}); err != nil {
			t.Fatal(err)
		}
		lane, err := svc.Commands()
		if err != nil {
			t.Fatal(err)
		}
		if err := nd.cmds.Handle(lane); err != nil {
			t.Fatal(err)
		}
		nd.ws, err = edge.New(edge.Config{Listen: "127.0.0.1:0", DrainWindow: 10 * time.Millisecond},
			edge.Options{NodeID: nd.id, Handler: &testHandler{svc: svc, node: nd.id, reg: registry}, Registerer: nd.reg, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		a, err := api.New(api.Config{Insecure: true}, nd.ws, nd.reg, quietLogger())
		if err != nil {
			t.Fatal(err)
		}
		a.EnableGroups(svc)
		hs := httptest.NewServer(a.Handler())
		nd.api = hs.URL + "/prod"
		runErr := make(chan error, 3)
		go func() { runErr <- svc.Run(context.Background()) }()
		go func() { runErr <- nd.cmds.Run(context.Background()) }()
		go func() { runErr <- nd.ws.Run(context.Background()) }()
		for what, ready := range map[string]<-chan struct{}{"broadcast subscription": svc.Ready(), "command server": nd.cmds.Ready()} {
			select {
			case <-ready:
			case err := <-runErr:
				t.Fatalf("%s: run returned early: %v", what, err)
			case <-time.After(waitFor):
				t.Fatalf("%s not ready", what)
			}
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			hs.Close()
			if err := nd.ws.Shutdown(ctx); err != nil {
				t.Errorf("edge shutdown: %v", err)
			}
			if err := svc.Shutdown(ctx); err != nil {
				t.Errorf("groups shutdown: %v", err)
			}
			if err := svc.Shutdown(ctx); err != nil {
				t.Errorf("second shutdown: %v", err)
			}
			if err := nd.cmds.Shutdown(ctx); err != nil {
				t.Errorf("command server shutdown: %v", err)
			}
			for range 3 {
				if err := <-runErr; err != nil && !errors.Is(err, edge.ErrClosed) {
					t.Errorf("run: %v", err)
				}
			}
		})
		cl.nodes = append(cl.nodes, nd)
	}
	return cl
}

// client is a real WebSocket client reading in the background.
type client struct {
	name string
	id   string
	nc   net.Conn
	mu   sync.Mutex
	msgs []string
	code ws.StatusCode // close code received, 0 while open
	why  string
}

func (cl *testCluster) dial(t *testing.T, name string, on int, query string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	nc, br, _, err := ws.Dial(ctx, "ws://"+cl.nodes[on].ws.Addr().String()+"/?"+query)
	if err != nil {
		t.Fatalf("dial %s: %v", name, err)
	}
	var rw io.ReadWriter = nc
	if br != nil { // frames that arrived with the 101 are in br
		rw = struct {
			io.Reader
			io.Writer
		}{br, nc}
	}
	c := &client{name: name, nc: nc}
	idc := make(chan string, 1)
	go func() {
		for {
			data, _, err := wsutil.ReadServerData(rw)
			if err != nil {
				var ce wsutil.ClosedError
				c.mu.Lock()
				if errors.As(err, &ce) {
					c.code, c.why = ce.Code, ce.Reason
				} else {
					c.code = ws.StatusAbnormalClosure
				}
				c.mu.Unlock()
				return
			}
			if s := string(data); strings.HasPrefix(s, "id:") && c.id == "" {
				idc <- s[3:]
				continue
			}
			c.mu.Lock()
			c.msgs = append(c.msgs, string(data))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { nc.Close() })
	select {
	case c.id = <-idc:
	case <-time.After(waitFor):
		t.Fatalf("%s: no connection ID", name)
	}
	return c
}

func (c *client) has(msg string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.msgs, msg)
}

// expectDelivery sends a fence broadcast after msg, waits until every
// client has it, then checks that exactly want got msg.
func expectDelivery(t *testing.T, cl *testCluster, all []*client, msg string, want ...*client) {
	t.Helper()
	for _, c := range want {
		eventually(t, c.name+" to receive "+msg, func() bool { return c.has(msg) })
	}
	fence := "fence after " + msg
	post(t, http.MethodPost, cl.nodes[0].api+"/@broadcast", fence, http.StatusOK)
	for _, c := range all {
		eventually(t, c.name+" to receive "+fence, func() bool { return c.has(fence) || c.closed() })
	}
	for _, c := range all {
		if c.has(msg) != slices.Contains(want, c) {
			t.Errorf("%s received %q: %v, want %v", c.name, msg, c.has(msg), slices.Contains(want, c))
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

func (c *client) closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code != 0
}

func post(t *testing.T, method, url, body string, want int) []byte {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, resp.StatusCode, b, want)
	}
	return b
}

func listing(t *testing.T, url string) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for {
		u := url + "?limit=2"
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		var page struct {
			Connections []string `json:"connections"`
			Cursor      string   `json:"cursor"`
		}
		if err := json.Unmarshal(post(t, http.MethodGet, u, "", http.StatusOK), &page); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, page.Connections...)
		if page.Cursor == "" {
			break
		}
		cursor = page.Cursor
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

func idsOf(cs ...*client) []string {
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.id)
	}
	slices.Sort(ids)
	return ids
}

func TestGroupsAcrossThreeEdges(t *testing.T) {
	cl := startCluster(t, 3, Config{MaxGroupsPerConn: 3})
	a := cl.dial(t, "a", 0, "user=alice&groups=room1")
	b := cl.dial(t, "b", 0, "user=bob&groups=room1,room2")
	c := cl.dial(t, "c", 1, "user=alice&groups=room1")
	d := cl.dial(t, "d", 1, "")
	e := cl.dial(t, "e", 2, "user=carol&groups=room2")
	f := cl.dial(t, "f", 2, "user=bob")
	all := []*client{a, b, c, d, e, f}
	n0, n1, n2 := cl.nodes[0].api, cl.nodes[1].api, cl.nodes[2].api

	t.Run("group sends reach exactly the members on every node", func(t *testing.T) {
		post(t, http.MethodPost, n2+"/@groups/room1", "to room1", http.StatusOK)
		expectDelivery(t, cl, all, "to room1", a, b, c)
		post(t, http.MethodPost, n0+"/@groups/room2", "to room2", http.StatusOK)
		expectDelivery(t, cl, all, "to room2", b, e)
	})
	t.Run("the sender can be excluded", func(t *testing.T) {
		post(t, http.MethodPost, n1+"/@groups/room1?excluded="+a.id, "not to a", http.StatusOK)
		expectDelivery(t, cl, all, "not to a", b, c)
	})
	t.Run("user sends reach all of the user's connections", func(t *testing.T) {
		post(t, http.MethodPost, n1+"/@users/alice", "to alice", http.StatusOK)
		expectDelivery(t, cl, all, "to alice", a, c)
		post(t, http.MethodPost, n0+"/@users/bob", "to bob", http.StatusOK)
		expectDelivery(t, cl, all, "to bob", b, f)
	})
	t.Run("broadcast reaches everyone", func(t *testing.T) {
		post(t, http.MethodPost, n2+"/@broadcast", "to all", http.StatusOK)
		expectDelivery(t, cl, all, "to all", all...)
	})
	t.Run("interest follows membership", func(t *testing.T) {
		// node2 has no room1 member: it never subscribed.
		if got := cl.nodes[2].svc.idx.members(cl.nodes[2].svc.subj.groupSubject("room1")); got != 0 {
			t.Fatalf("node2 room1 members = %d", got)
		}
		// Subscriptions: room1 + alice on node0 and node1 (+ room2/bob on node0).
		wantGauge(t, cl.nodes[0].reg, "switchboard_group_subscriptions", 4)
		wantGauge(t, cl.nodes[1].reg, "switchboard_group_subscriptions", 2)
		wantGauge(t, cl.nodes[2].reg, "switchboard_group_subscriptions", 3)
		wantGauge(t, cl.nodes[0].reg, "switchboard_group_members", 3)
	})
	t.Run("add and remove through any node's API", func(t *testing.T) {
		post(t, http.MethodPut, n0+"/@groups/room3/connections/"+e.id, "", http.StatusNoContent) // e lives on node2
		post(t, http.MethodPut, n1+"/@groups/room3/connections/"+d.id, "", http.StatusNoContent)
		post(t, http.MethodPut, n1+"/@groups/room3/connections/"+d.id, "", http.StatusNoContent) // idempotent
		post(t, http.MethodPost, n1+"/@groups/room3", "to room3", http.StatusOK)
		expectDelivery(t, cl, all, "to room3", d, e)
		post(t, http.MethodDelete, n2+"/@groups/room1/connections/"+b.id, "", http.StatusNoContent) // b lives on node0
		post(t, http.MethodPost, n2+"/@groups/room1", "room1 without b", http.StatusOK)
		expectDelivery(t, cl, all, "room1 without b", a, c)
	})
	t.Run("hostile but valid names are delivered and listed apart", func(t *testing.T) {
		for _, name := range []string{"r%7Bo%7D%3Am%241%2Fx", "r_o_m_1_x"} {
			post(t, http.MethodPut, n0+"/@groups/"+name+"/connections/"+d.id, "", http.StatusNoContent)
		}
		post(t, http.MethodDelete, n0+"/@groups/r_o_m_1_x/connections/"+d.id, "", http.StatusNoContent)
		post(t, http.MethodPut, n0+"/@groups/r_o_m_1_x/connections/"+f.id, "", http.StatusNoContent)
		post(t, http.MethodPost, n2+"/@groups/r%7Bo%7D%3Am%241%2Fx", "hostile", http.StatusOK)
		expectDelivery(t, cl, all, "hostile", d)
		if got := listing(t, n2+"/@groups/r%7Bo%7D%3Am%241%2Fx/connections"); !slices.Equal(got, idsOf(d)) {
			t.Fatalf("hostile group lists %v", got)
		}
	})
	t.Run("listing, counting and HEAD are cluster-wide", func(t *testing.T) {
		if got := listing(t, n2+"/@groups/room1/connections"); !slices.Equal(got, idsOf(a, c)) {
			t.Fatalf("room1 lists %v, want %v", got, idsOf(a, c))
		}
		if got := listing(t, n0+"/@users/bob/connections"); !slices.Equal(got, idsOf(b, f)) {
			t.Fatalf("bob lists %v", got)
		}
		if b := post(t, http.MethodGet, n1+"/@groups/room2", "", http.StatusOK); string(b) != `{"connections":2,"group":"room2"}` {
			t.Fatalf("room2 count: %s", b)
		}
		post(t, http.MethodHead, n1+"/@users/carol", "", http.StatusOK)
		post(t, http.MethodHead, n1+"/@groups/nobody-here", "", http.StatusNotFound)
	})
	t.Run("bad names, sizes, limits and gone connections", func(t *testing.T) {
		for _, p := range []string{"/@groups/a.b", "/@groups/a%20b", "/@groups/a*b", "/@users/caf%C3%A9", "/@groups/" + strings.Repeat("x", 129)} {
			post(t, http.MethodPost, n0+p, "x", http.StatusBadRequest)
		}
		post(t, http.MethodPut, n0+"/@groups/%3E/connections/"+a.id, "", http.StatusBadRequest)
		post(t, http.MethodPost, n0+"/@groups/room1", strings.Repeat("x", 128<<10+1), http.StatusRequestEntityTooLarge)
		// d is in room3 and the hostile group; a third fits, a fourth does not.
		post(t, http.MethodPut, n2+"/@groups/g3/connections/"+d.id, "", http.StatusNoContent)
		post(t, http.MethodPut, n2+"/@groups/g4/connections/"+d.id, "", http.StatusConflict)
		post(t, http.MethodPut, n2+"/@groups/g4/connections/"+conn.NewID(), "", http.StatusGone)
	})
	t.Run("closing a connection removes its memberships", func(t *testing.T) {
		c.nc.Close()
		eventually(t, "c to leave room1 and alice", func() bool {
			room1, _ := cl.nodes[0].svc.GroupCount(context.Background(), "room1")
			alice, _ := cl.nodes[0].svc.UserCount(context.Background(), "alice")
			return room1 == 1 && alice == 1
		})
		// node1 lost its last room1 and alice member: it unsubscribed.
		eventually(t, "node1 to unsubscribe", func() bool {
			return testutil.ToFloat64(cl.nodes[1].svc.m.subscriptions) == 3 // room3, the hostile group, g3 (d)
		})
		post(t, http.MethodPost, n0+"/@groups/room1", "after c left", http.StatusOK)
		expectDelivery(t, cl, []*client{a, b, d, e, f}, "after c left", a)
	})
	t.Run("closing a user closes all of its connections", func(t *testing.T) {
		post(t, http.MethodDelete, n1+"/@users/bob?code=4401&reason=kicked", "", http.StatusNoContent)
		for _, x := range []*client{b, f} {
			eventually(t, x.name+" to be closed", x.closed)
			x.mu.Lock()
			code, why := x.code, x.why
			x.mu.Unlock()
			if code != 4401 || why != "kicked" {
				t.Fatalf("%s closed with %d %q, want 4401 kicked", x.name, code, why)
			}
		}
		eventually(t, "bob to have no connections", func() bool {
			n, _ := cl.nodes[2].svc.UserCount(context.Background(), "bob")
			return n == 0
		})
		if a.closed() || e.closed() {
			t.Fatal("another user's connection was closed")
		}
	})
	t.Run("metrics count sends and deliveries", func(t *testing.T) {
		sends := 0.0
		delivered := 0.0
		for _, nd := range cl.nodes {
			sends += testutil.ToFloat64(nd.svc.m.sends[kindGroup])
			delivered += testutil.ToFloat64(nd.svc.m.delivered)
		}
		if sends != 7 || delivered < 30 { // 7 group sends succeeded above; refused ones are not counted
			t.Fatalf("group sends %v, frames delivered %v", sends, delivered)
		}
		if problems, err := testutil.GatherAndLint(cl.nodes[0].reg, "switchboard_group_sends_total",
			"switchboard_frames_delivered_total", "switchboard_group_members", "switchboard_group_subscriptions"); err != nil || len(problems) > 0 {
			t.Fatalf("lint: %v %v", problems, err)
		}
	})
}

// A node that dies cannot untrack its connections: the janitor's OnOrphan
// hook (Orphaned) removes them from the cluster-wide store.
func TestDeadNodesMembershipsAreRemovedByTheJanitorHook(t *testing.T) {
	cl := startCluster(t, 2, Config{})
	x := cl.dial(t, "x", 1, "user=dora&groups=lobby,vip")
	y := cl.dial(t, "y", 0, "user=dora&groups=lobby")
	svc := cl.nodes[0].svc
	eventually(t, "the store to have both", func() bool {
		n, _ := svc.GroupCount(context.Background(), "lobby")
		return n == 2
	})
	// node1 "dies": its groups service stops without untracking anything.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := cl.nodes[1].svc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// What the janitor does for each of node1's records (user from the record).
	if err := svc.Orphaned(ctx, x.id, "dora"); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		kind Kind
		name string
		want []string
	}{{KindGroup, "lobby", []string{y.id}}, {KindGroup, "vip", nil}, {KindUser, "dora", []string{y.id}}} {
		got, _, err := cl.store().Members(ctx, w.kind, w.name, "", 100)
		if err != nil || !slices.Equal(got, w.want) {
			t.Fatalf("%s %s = %v, %v; want %v", w.kind, w.name, got, err, w.want)
		}
	}
}

func wantGauge(t *testing.T, reg *prometheus.Registry, name string, want float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			if got := mf.GetMetric()[0].GetGauge().GetValue(); got != want {
				t.Fatalf("%s = %v, want %v", name, got, want)
			}
			return
		}
	}
	t.Fatalf("no metric %s", name)
}

// setLease gives node a current lease, or lets it expire (no janitor has
// removed the node yet).
func (cl *testCluster) setLease(t *testing.T, node string, held bool) {
	t.Helper()
	ttl := time.Minute
	if !held {
		ttl = 50 * time.Millisecond
	}
	if _, err := cl.registry.RenewLease(t.Context(), node, cluster.Incarnation{}, ttl); err != nil {
		t.Fatal(err)
	}
	eventually(t, node+"'s lease to be as set", func() bool {
		alive, err := cl.registry.NodeAlive(t.Context(), node)
		return err == nil && alive == held
	})
}

// A membership change for a connection whose node does not answer follows
// the node command protocol's one dead-owner rule, the same as a POST to the
// connection: 503 while the owner's lease lives (slow, restarting, cut off:
// it may still have the connection), 410 once the lease has expired.
func TestMembershipChangeForAnOwnerThatDoesNotAnswer(t *testing.T) {
	cl := startClusterWith(t, 2, Config{}, clusterSetup{routerTimeout: 300 * time.Millisecond, natsProxies: true})
	x := cl.dial(t, "x", 1, "")
	owner := cl.nodes[1]
	put := func(t *testing.T, group string, want int) {
		t.Helper()
		post(t, http.MethodPut, cl.nodes[0].api+"/@groups/"+group+"/connections/"+x.id, "", want)
	}

	t.Run("owner answers", func(t *testing.T) { put(t, "answered", http.StatusNoContent) })
	t.Run("owner slow, lease held: 503", func(t *testing.T) {
		owner.freeze(t) // its answer stays in the proxy: too late
		put(t, "slow-held", http.StatusServiceUnavailable)
	})
	t.Run("owner slow, lease expired: 410", func(t *testing.T) {
		cl.setLease(t, owner.id, false)
		put(t, "slow-expired", http.StatusGone)
	})
	owner.proxy.Resume()
	cl.setLease(t, owner.id, true)
	t.Run("owner process gone, lease held: 503", func(t *testing.T) {
		if err := owner.cmds.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
		put(t, "gone-held", http.StatusServiceUnavailable)
	})
	t.Run("owner process gone, lease expired: 410", func(t *testing.T) {
		cl.setLease(t, owner.id, false)
		put(t, "gone-expired", http.StatusGone)
	})
}
