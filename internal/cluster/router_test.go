package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// fakeHub is a node's hub: a Local with a few connections that records what
// it was asked to do.
type fakeHub struct {
	node string

	mu     sync.Mutex
	conns  map[string]ConnRecord
	posts  []string      // "id:binary:data"
	closes []string      // "id:code:reason"
	err    error         // returned by Post when set
	slow   chan struct{} // when set, Post waits for it to close (or its deadline)
}

func newFakeHub(node string) *fakeHub { return &fakeHub{node: node, conns: map[string]ConnRecord{}} }

func (h *fakeHub) add(t testing.TB, reg Registry) ConnRecord {
	t.Helper()
	r := record(h.node)
	h.mu.Lock()
	h.conns[r.ID] = r
	h.mu.Unlock()
	if err := reg.Register(testCtx(t), r); err != nil {
		t.Fatal(err)
	}
	return r
}

func (h *fakeHub) Owns(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.conns[id]
	return ok
}

func (h *fakeHub) Post(ctx context.Context, id string, data []byte, binary bool) error {
	h.mu.Lock()
	slow := h.slow
	h.mu.Unlock()
	if slow != nil {
		select {
		case <-slow:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.conns[id]; !ok {
		return conn.ErrGone
	}
	if h.err != nil {
		return h.err
	}
	h.posts = append(h.posts, fmt.Sprintf("%s:%v:%s", id, binary, data))
	return nil
}

// PostNow is Post unless Post would wait (slow set, as a closed fence
// would): then the command server must hand the post to a worker.
func (h *fakeHub) PostNow(id string, data []byte, binary bool) (bool, error) {
	h.mu.Lock()
	slow := h.slow
	h.mu.Unlock()
	if slow != nil {
		return false, nil
	}
	return true, h.Post(context.Background(), id, data, binary)
}

func (h *fakeHub) Info(ctx context.Context, id string) (conn.Info, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.conns[id]
	if !ok {
		return conn.Info{}, conn.ErrGone
	}
	return conn.Info{ID: id, Node: h.node, ConnectedAt: r.ConnectedAt, LastActiveAt: r.ConnectedAt,
		SourceIP: r.SourceIP, UserAgent: r.UserAgent, UserID: r.UserID, Principal: r.Principal, Groups: []string{"lobby", "room-1"}}, nil
}

func (h *fakeHub) Close(ctx context.Context, id string, code int, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.conns[id]; !ok {
		return conn.ErrGone
	}
	delete(h.conns, id)
	h.closes = append(h.closes, fmt.Sprintf("%s:%d:%s", id, code, reason))
	return nil
}

func (h *fakeHub) drop(id string) {
	h.mu.Lock()
	delete(h.conns, id)
	h.mu.Unlock()
}

func (h *fakeHub) setErr(err error) {
	h.mu.Lock()
	h.err = err
	h.mu.Unlock()
}

func (h *fakeHub) record() ([]string, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.posts...), append([]string(nil), h.closes...)
}

// twoNodes is a cluster of two nodes in one process: one NATS server, two
// NATS connections, one registry; node B serves commands.
type twoNodes struct {
	reg        Registry
	hubA, hubB *fakeHub
	routerA    *Router
	serverB    *CommandServer
	metrics    *Metrics
	stopB      func()
}

func startTwoNodes(t testing.TB, reg Registry) *twoNodes {
	t.Helper()
	ns := startNATS(t)
	ncA, ncB := connectNATS(t, ns), connectNATS(t, ns)
	idA, idB := NewNodeID("a"), NewNodeID("b")
	ctx := testCtx(t)
	for _, id := range []string{idA, idB} {
		if _, err := reg.RenewLease(ctx, id, Incarnation{}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := NewMetrics(nil)
	tn := &twoNodes{reg: reg, hubA: newFakeHub(idA), hubB: newFakeHub(idB), metrics: m}
	var err error
	tn.routerA, err = NewRouter(RouterConfig{Self: idA, Timeout: 2 * time.Second},
		RouterDeps{NC: ncA, Registry: reg, Local: tn.hubA, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	tn.serverB, err = NewCommandServer(CommandServerConfig{Node: idB},
		CommandServerDeps{NC: ncB, Controller: tn.hubB, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	var runErr error
	ran := make(chan struct{})
	go func() { runErr = tn.serverB.Run(context.Background()); close(ran) }()
	var once sync.Once
	tn.stopB = func() {
		once.Do(func() {
			if err := tn.serverB.Shutdown(context.Background()); err != nil {
				t.Errorf("CommandServer.Shutdown: %v", err)
			}
			<-ran
			if runErr != nil {
				t.Errorf("CommandServer.Run: %v", runErr)
			}
		})
	}
	t.Cleanup(tn.stopB)
	select {
	case <-tn.serverB.Ready():
	case <-ran:
		t.Fatalf("CommandServer.Run returned early: %v", runErr)
	case <-time.After(waitFor):
		t.Fatal("command server not ready")
	}
	return tn
}

func TestRouterReachesConnectionsOnAnotherNode(t *testing.T) {
	tn := startTwoNodes(t, NewMemoryRegistry(nil))
	ctx := testCtx(t)
	onB := tn.hubB.add(t, tn.reg)

	if err := tn.routerA.Post(ctx, onB.ID, []byte("hello\r\nworld"), false); err != nil {
		t.Fatalf("Post to a connection on node B: %v", err)
	}
	if err := tn.routerA.Post(ctx, onB.ID, []byte{0, 1, 2}, true); err != nil {
		t.Fatalf("binary Post: %v", err)
	}
	posts, _ := tn.hubB.record()
	want := []string{onB.ID + ":false:hello\r\nworld", onB.ID + ":true:\x00\x01\x02"}
	if fmt.Sprint(posts) != fmt.Sprint(want) {
		t.Fatalf("node B received %q, want %q", posts, want)
	}

	info, err := tn.routerA.Info(ctx, onB.ID)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.ID != onB.ID || info.Node != tn.hubB.node || info.SourceIP != onB.SourceIP ||
		info.UserAgent != onB.UserAgent || !info.ConnectedAt.Equal(onB.ConnectedAt) {
		t.Fatalf("Info = %+v, want the facts of %+v", info, onB)
	}
	if info.UserID != onB.UserID || string(info.Principal) != string(onB.Principal) || fmt.Sprint(info.Groups) != "[lobby room-1]" {
		t.Fatalf("Info = user %q principal %s groups %q, want the owner's %q %s [lobby room-1]", info.UserID, info.Principal, info.Groups, onB.UserID, onB.Principal)
	}
	if hits := testutil.ToFloat64(tn.metrics.cacheHits); hits < 1 {
		t.Fatalf("owner cache hits = %v; the second command should hit the cache", hits)
	}

	tn.hubB.setErr(conn.ErrBufferFull)
	if err := tn.routerA.Post(ctx, onB.ID, []byte("x"), false); !errors.Is(err, conn.ErrBufferFull) {
		t.Fatalf("Post to a full client: %v, want ErrBufferFull", err)
	}
	tn.hubB.setErr(conn.ErrTooLarge)
	if err := tn.routerA.Post(ctx, onB.ID, []byte("x"), false); !errors.Is(err, conn.ErrTooLarge) {
		t.Fatalf("Post too large: %v, want ErrTooLarge", err)
	}
	tn.hubB.setErr(errors.New("disk on fire\r\nX-Injected: 1"))
	if err := tn.routerA.Post(ctx, onB.ID, []byte("x"), false); err == nil || errors.Is(err, conn.ErrGone) {
		t.Fatalf("Post with an owner failure: %v, want a non-Gone error", err)
	}
	tn.hubB.setErr(nil)

	if err := tn.routerA.Close(ctx, onB.ID, 4001, "bye, see\nyou"); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, closes := tn.hubB.record()
	if len(closes) != 1 || closes[0] != onB.ID+":4001:bye, see\nyou" {
		t.Fatalf("node B closes = %q", closes)
	}
	// Closed on B and unregistered: 410 from now on, cache or not.
	if err := tn.reg.Unregister(ctx, tn.hubB.node, onB.ID); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := tn.routerA.Post(ctx, onB.ID, []byte("late"), false); !errors.Is(err, conn.ErrGone) {
			t.Fatalf("Post after close (try %d): %v, want ErrGone", i, err)
		}
	}
	if _, err := tn.routerA.Info(ctx, onB.ID); !errors.Is(err, conn.ErrGone) {
		t.Fatalf("Info after close: %v, want ErrGone", err)
	}
}

func TestRouterShortCircuitsLocalConnections(t *testing.T) {
	tn := startTwoNodes(t, NewMemoryRegistry(nil))
	ctx := testCtx(t)
	onA := tn.hubA.add(t, tn.reg)
	if err := tn.routerA.Post(ctx, onA.ID, []byte("local"), false); err != nil {
		t.Fatal(err)
	}
	posts, _ := tn.hubA.record()
	if len(posts) != 1 {
		t.Fatalf("local hub got %v", posts)
	}
	if served := testutil.ToFloat64(tn.metrics.served.WithLabelValues("post", "ok")); served != 0 {
		t.Fatalf("a local post went over NATS (%v served remotely)", served)
	}
	// Recorded as ours, but the hub no longer has it: gone, without NATS.
	tn.hubA.drop(onA.ID)
	if err := tn.routerA.Post(ctx, onA.ID, []byte("x"), false); !errors.Is(err, conn.ErrGone) {
		t.Fatalf("Post to a closed local connection: %v, want ErrGone", err)
	}
}

func TestRouterRejectsBadInputBeforeTheNetwork(t *testing.T) {
	tn := startTwoNodes(t, NewMemoryRegistry(nil))
	ctx := testCtx(t)
	for _, id := range []string{"", "a.b.c", "x>", "{tag}aaaaaaaaaaa", "toolong-toolong-toolong"} {
		if err := tn.routerA.Post(ctx, id, nil, false); !errors.Is(err, conn.ErrInvalidID) {
			t.Errorf("Post(%q): %v, want ErrInvalidID", id, err)
		}
	}
	onB := tn.hubB.add(t, tn.reg)
	for _, code := range []int{1005, 1006, 999, 5000} {
		if err := tn.routerA.Close(ctx, onB.ID, code, ""); !errors.Is(err, conn.ErrInvalidCloseCode) {
			t.Errorf("Close(code %d): %v, want ErrInvalidCloseCode", code, err)
		}
	}
	for _, reason := range []string{"bye\xff", strings.Repeat("x", 124)} {
		if err := tn.routerA.Close(ctx, onB.ID, 4000, reason); !errors.Is(err, conn.ErrInvalidCloseCode) {
			t.Errorf("Close(reason %q): %v, want ErrInvalidCloseCode", reason, err)
		}
	}
	if tn.hubB.Owns(onB.ID) != true {
		t.Fatal("a rejected Close reached the owner")
	}
	if err := tn.routerA.Post(ctx, conn.NewID(), []byte("x"), false); !errors.Is(err, conn.ErrGone) {
		t.Fatalf("Post to an unknown connection: %v, want ErrGone", err)
	}
}

// Owner unreachable: unavailable while its lease lives (it may be slow or
// cut off), gone once the lease has expired (it died with its connections).
func TestRouterOwnerUnreachable(t *testing.T) {
	reg := NewMemoryRegistry(nil)
	tn := startTwoNodes(t, reg)
	ctx := testCtx(t)
	onB := tn.hubB.add(t, reg)
	if err := tn.routerA.Post(ctx, onB.ID, []byte("x"), false); err != nil {
		t.Fatal(err)
	}
	tn.stopB()
	if err := tn.routerA.Post(ctx, onB.ID, []byte("x"), false); !errors.Is(err, conn.ErrUnavailable) {
		t.Fatalf("Post while B is unreachable but holds its lease: %v, want ErrUnavailable", err)
	}
	if _, err := reg.RenewLease(ctx, tn.hubB.node, Incarnation{}, shortTTL); err != nil {
		t.Fatal(err)
	}
	expire(t, reg, tn.hubB.node)
	if err := tn.routerA.Post(ctx, onB.ID, []byte("x"), false); !errors.Is(err, conn.ErrGone) {
		t.Fatalf("Post after B's lease expired: %v, want ErrGone", err)
	}
}

// Owner slow (it takes longer than the router waits): unavailable while its
// lease lives, gone once the lease has expired; the same rule as for an
// owner that does not answer at all, and as for group membership commands.
func TestRouterOwnerSlow(t *testing.T) {
	reg, _ := startRedisRegistry(t)
	tn := startTwoNodes(t, reg)
	ctx := testCtx(t)
	onB := tn.hubB.add(t, reg)
	impatient, err := NewRouter(RouterConfig{Self: tn.hubA.node, Timeout: 300 * time.Millisecond},
		RouterDeps{NC: tn.routerA.deps.NC, Registry: reg, Local: tn.hubA})
	if err != nil {
		t.Fatal(err)
	}
	slow := make(chan struct{})
	defer close(slow)
	tn.hubB.mu.Lock()
	tn.hubB.slow = slow
	tn.hubB.mu.Unlock()
	if err := impatient.Post(ctx, onB.ID, []byte("x"), false); !errors.Is(err, conn.ErrUnavailable) || errors.Is(err, conn.ErrGone) {
		t.Fatalf("Post to a slow owner that holds its lease: %v, want ErrUnavailable", err)
	}
	if _, err := reg.RenewLease(ctx, tn.hubB.node, Incarnation{}, shortTTL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B's lease to expire", func() bool {
		alive, err := reg.NodeAlive(ctx, tn.hubB.node)
		return err == nil && !alive
	})
	if err := impatient.Post(ctx, onB.ID, []byte("x"), false); !errors.Is(err, conn.ErrGone) {
		t.Fatalf("Post to a slow owner whose lease expired: %v, want ErrGone", err)
	}
}

// A router-only process (no Local) reaches connections through the registry
// in Redis.
func TestRouterWithoutLocalOverRedis(t *testing.T) {
	reg, _ := startRedisRegistry(t)
	tn := startTwoNodes(t, reg)
	ctx := testCtx(t)
	onB := tn.hubB.add(t, reg)
	r, err := NewRouter(RouterConfig{}, RouterDeps{NC: tn.routerA.deps.NC, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Post(ctx, onB.ID, []byte("via router tier"), false); err != nil {
		t.Fatalf("Post from a router-only process: %v", err)
	}
	posts, _ := tn.hubB.record()
	if len(posts) != 1 {
		t.Fatalf("node B got %v", posts)
	}
}

func TestOwnerCacheIsBounded(t *testing.T) {
	c := newOwnerCache(100)
	for i := 0; i < 1000; i++ {
		c.put(fmt.Sprint(i), "n")
	}
	if c.len() > 100 {
		t.Fatalf("cache holds %d entries, bound 100", c.len())
	}
	c.put("hot", "n1")
	for i := 0; i < 1000; i++ {
		c.put(fmt.Sprint(i), "n")
		if _, ok := c.get("hot"); !ok {
			t.Fatalf("a recently used entry was evicted after %d inserts", i)
		}
	}
	c.drop("hot")
	if _, ok := c.get("hot"); ok {
		t.Fatal("dropped entry still cached")
	}
}
