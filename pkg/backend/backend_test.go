package backend_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/lifecycle"
	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/backend"
)

const deadline = 30 * time.Second

var eventually = testenv.Eventually

// gateway is the real lifecycle package standing in for an edge node.
func gateway(t testing.TB, n *testenv.NATS, cfg lifecycle.Config) *lifecycle.Lifecycle {
	t.Helper()
	l, err := lifecycle.New(cfg, n.Connect(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "lifecycle", l)
	return l
}

func start(t testing.TB, b *backend.Backend) {
	t.Helper()
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Drain() })
}

func meta() *lifecycle.ConnMeta {
	return &lifecycle.ConnMeta{
		ID: conn.NewID(), NodeID: "n1", ConnectedAt: time.Now(), SourceIP: "198.51.100.7", UserAgent: "ua",
		Headers:      []lifecycle.Pair{{Name: "Sec-WebSocket-Protocol", Value: "v1.chat, v2.chat"}},
		Query:        []lifecycle.Pair{{Name: "token", Value: "secret"}},
		Subprotocols: []string{"v1.chat", "v2.chat"},
	}
}

func TestConnectHandlerDecides(t *testing.T) {
	n := testenv.StartNATS(t)
	b, err := backend.New(n.Connect(t), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b.OnConnect(func(_ context.Context, r *backend.ConnectRequest) backend.ConnectResponse {
		if r.QueryStringParameters["token"] != "secret" {
			return backend.Deny(401, "bad token")
		}
		return backend.ConnectResponse{
			Headers:     map[string]string{"Sec-WebSocket-Protocol": r.Subprotocols()[1]},
			PrincipalID: "alice", Context: map[string]any{"tier": "gold"},
			UserID: "alice", Groups: []string{"lobby", "vip"},
		}
	})
	start(t, b)
	l := gateway(t, n, lifecycle.Config{})

	d, err := l.Authorize(context.Background(), meta())
	if err != nil {
		t.Fatal(err)
	}
	if !d.Allow || d.Header.Get("Sec-WebSocket-Protocol") != "v2.chat" || d.UserID != "alice" || len(d.Groups) != 2 {
		t.Fatalf("allow: %+v", d)
	}
	var p map[string]string
	if err := json.Unmarshal(d.Principal, &p); err != nil || p["principalId"] != "alice" || p["tier"] != "gold" {
		t.Fatalf("principal %s", d.Principal)
	}

	m := meta()
	m.Query = nil
	d, err = l.Authorize(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allow || d.Status != 401 || string(d.Body) != "bad token" {
		t.Fatalf("deny: %+v", d)
	}
}

func TestLifecycleEventsReachTypedHandlers(t *testing.T) {
	n := testenv.StartNATS(t)
	b, _ := backend.New(n.Connect(t), backend.Options{Prefix: "app"})
	var mu sync.Mutex
	var got []*backend.Event
	record := func(_ context.Context, e *backend.Event) {
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
	}
	b.OnConnected(record)
	b.OnDisconnect(record)
	start(t, b)
	l := gateway(t, n, lifecycle.Config{Prefix: "app"})
	m := meta()
	m.UserID, m.Groups = "bob", []string{"g1"}
	if err := l.Connected(m); err != nil {
		t.Fatal(err)
	}
	eventually(t, "CONNECT", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	if err := l.Disconnected(m, 4001, "kicked"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "DISCONNECT", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	c, d := got[0], got[1]
	if c.RequestContext.EventType != "CONNECT" || c.ConnectionID() != m.ID || c.Switchboard.UserID != "bob" ||
		c.Switchboard.NodeID != "n1" || c.Subject != "app.event.connect" || c.ConnectedAt().UnixMilli() != m.ConnectedAt.UnixMilli() {
		t.Fatalf("connect %+v", c)
	}
	if d.RequestContext.EventType != "DISCONNECT" || d.RequestContext.DisconnectStatusCode != 4001 ||
		*d.RequestContext.DisconnectReason != "kicked" || d.Switchboard.EventID == c.Switchboard.EventID {
		t.Fatalf("disconnect %+v", d)
	}
}

// replies records what a two-way route sends back to a client.
type replies struct {
	mu  sync.Mutex
	got []string
}

func (r *replies) fn(data []byte, binary bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, fmt.Sprintf("%v:%s", binary, data))
}

func (r *replies) first(t testing.TB) string {
	t.Helper()
	eventually(t, "a reply", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(r.got) > 0 })
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[0]
}

func TestRoutesAndTwoWayReplies(t *testing.T) {
	n := testenv.StartNATS(t)
	b, _ := backend.New(n.Connect(t), backend.Options{})
	b.Route("echo", func(_ context.Context, m *backend.Message) ([]byte, error) {
		return append([]byte("echo "), m.Data...), nil
	})
	b.Route("fail", func(context.Context, *backend.Message) ([]byte, error) { return nil, errors.New("db down\r\n") })
	b.Default(func(_ context.Context, m *backend.Message) ([]byte, error) {
		m.ReplyBinary = m.Binary
		return m.Data, nil
	})
	start(t, b)
	l := gateway(t, n, lifecycle.Config{TwoWayRoutes: []string{"*"}})

	var r1, r2, r3 replies
	l.Message(meta(), []byte(`{"action":"echo"}`), false, r1.fn)
	if got := r1.first(t); got != `false:echo {"action":"echo"}` {
		t.Fatalf("echo: %q", got)
	}
	l.Message(meta(), []byte{0xde, 0xad}, true, r2.fn)
	if got := r2.first(t); got != "true:\xde\xad" {
		t.Fatalf("binary via $default: %q", got)
	}
	l.Message(meta(), []byte(`{"action":"fail"}`), false, r3.fn)
	var frame struct{ Message string }
	if got := r3.first(t); json.Unmarshal([]byte(got[len("false:"):]), &frame) != nil || frame.Message != "Internal server error" {
		t.Fatalf("failing handler: %q", got)
	}
}

func TestInvalidRouteKeyIsReportedByStart(t *testing.T) {
	n := testenv.StartNATS(t)
	b, _ := backend.New(n.Connect(t), backend.Options{})
	b.Route("a.b", func(context.Context, *backend.Message) ([]byte, error) { return nil, nil })
	if err := b.Start(context.Background()); !errors.Is(err, backend.ErrInvalidRouteKey) {
		t.Fatalf("Start: %v", err)
	}
}

func TestQueueGroupSharesWorkBetweenReplicas(t *testing.T) {
	n := testenv.StartNATS(t)
	var a, c atomic.Int64
	for _, counter := range []*atomic.Int64{&a, &c} {
		b, _ := backend.New(n.Connect(t), backend.Options{})
		b.Route("work", func(context.Context, *backend.Message) ([]byte, error) { counter.Add(1); return nil, nil })
		start(t, b)
	}
	l := gateway(t, n, lifecycle.Config{})
	const total = 400
	for range total {
		l.Message(meta(), []byte(`{"action":"work"}`), false, nil)
	}
	eventually(t, "all handled", func() bool { return a.Load()+c.Load() == total })
	if a.Load() == 0 || c.Load() == 0 {
		t.Fatalf("one replica got everything: %d / %d", a.Load(), c.Load())
	}
	// Handled once each, never twice: give stragglers a chance to show up.
	if err := n.Connect(t).Flush(); err != nil {
		t.Fatal(err)
	}
	if got := a.Load() + c.Load(); got != total {
		t.Fatalf("handled %d times, want %d", got, total)
	}
}

func TestDrainFinishesInFlightHandlers(t *testing.T) {
	n := testenv.StartNATS(t)
	b, _ := backend.New(n.Connect(t), backend.Options{})
	entered := make(chan struct{})
	var finished atomic.Bool
	b.OnDisconnect(func(context.Context, *backend.Event) {
		close(entered)
		time.Sleep(100 * time.Millisecond) // a handler still working while Drain is called
		finished.Store(true)
	})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	l := gateway(t, n, lifecycle.Config{})
	if err := l.Disconnected(meta(), 1000, ""); err != nil {
		t.Fatal(err)
	}
	<-entered
	if err := b.Drain(); err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Fatal("Drain returned before the handler finished")
	}
	if err := b.Drain(); err != nil {
		t.Fatalf("second Drain: %v", err)
	}
}

func TestRunServesUntilCanceled(t *testing.T) {
	n := testenv.StartNATS(t)
	b, _ := backend.New(n.Connect(t), backend.Options{})
	b.OnConnect(func(context.Context, *backend.ConnectRequest) backend.ConnectResponse {
		return backend.ConnectResponse{}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	l := gateway(t, n, lifecycle.Config{ConnectTimeout: time.Second})
	eventually(t, "backend answering", func() bool {
		d, _ := l.Authorize(context.Background(), meta())
		return d.Allow
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	nc := n.Connect(t)
	if _, err := nc.Request("switchboard.connect", nil, time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("after Run returned: %v, want no responders", err)
	}
}

// BenchmarkConnectRoundTrip: $connect decisions per second through the real
// lifecycle package against an SDK responder, on loopback.
func BenchmarkConnectRoundTrip(b *testing.B) {
	n := testenv.StartNATS(b)
	be, _ := backend.New(n.Connect(b), backend.Options{})
	be.OnConnect(func(_ context.Context, r *backend.ConnectRequest) backend.ConnectResponse {
		return backend.ConnectResponse{UserID: "u1"}
	})
	start(b, be)
	l := gateway(b, n, lifecycle.Config{})
	m := meta()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d, err := l.Authorize(context.Background(), m)
			if err != nil || !d.Allow {
				b.Errorf("%+v %v", d, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "connects/s")
}

// One-way messages carry a reply subject only so the gateway hears "no
// responders"; the SDK must not answer them. A one-way and then a two-way
// message on the same route (one subscription, handled in order): the first
// reply must be the two-way one's.
func TestOneWayMessagesGetNoReply(t *testing.T) {
	n := testenv.StartNATS(t)
	b, _ := backend.New(n.Connect(t), backend.Options{})
	b.Route("note", func(_ context.Context, m *backend.Message) ([]byte, error) { return m.Data, nil })
	start(t, b)
	nc := n.Connect(t)
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	event := func(body string) []byte {
		return []byte(`{"requestContext":{"routeKey":"note","eventType":"MESSAGE","connectionId":"AAAAAAAAAAAAAAAA"},"body":"` + body + `","isBase64Encoded":false}`)
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: "switchboard.route.note", Reply: inbox,
		Header: nats.Header{backend.HeaderOneWay: {"true"}}, Data: event("one-way")}); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: "switchboard.route.note", Reply: inbox, Data: event("two-way")}); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(testenv.WaitFor)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "two-way" {
		t.Fatalf("first reply %q, want only the two-way message's", m.Data)
	}
}

func TestNewRejectsAPrefixTheGatewayCannotHave(t *testing.T) {
	n := testenv.StartNATS(t)
	for _, p := range []string{"sb.*", "sb.>", "a b", "sb.", "$SYS"} {
		if _, err := backend.New(n.Connect(t), backend.Options{Prefix: p}); err == nil || !strings.Contains(err.Error(), "subject prefix") {
			t.Errorf("prefix %q: %v, want a subject prefix error", p, err)
		}
	}
	if _, err := backend.New(n.Connect(t), backend.Options{Prefix: "sb.prod-1"}); err != nil {
		t.Fatal(err)
	}
}
