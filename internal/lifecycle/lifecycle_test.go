package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// deadline for conditions in tests: generous, the CI machine is slow.
const deadline = 30 * time.Second

var eventually = testenv.Eventually

func newLC(t testing.TB, cfg Config, nc *nats.Conn) (*Lifecycle, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	l, err := New(cfg, nc, reg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	testenv.Run(t, "lifecycle", l)
	return l, reg
}

func meta() *ConnMeta {
	return &ConnMeta{
		ID: conn.NewID(), NodeID: "n1", ConnectedAt: time.Now(), SourceIP: "192.0.2.1", UserAgent: "ua",
		Headers: []Pair{{"Host", "h"}, {"Sec-WebSocket-Protocol", "chat, v2"}}, Subprotocols: []string{"chat", "v2"},
	}
}

// collector gathers messages of a subscription, in arrival order.
type collector struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func collect(t testing.TB, nc *nats.Conn, subject string) *collector {
	t.Helper()
	c := &collector{}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		c.mu.Lock()
		c.msgs = append(c.msgs, m)
		c.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *collector) wait(t testing.TB, n int) []*nats.Msg {
	t.Helper()
	eventually(t, fmt.Sprintf("%d messages", n), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.msgs) >= n
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*nats.Msg(nil), c.msgs...)
}

func TestAuthorizeAllowsWithHeadersPrincipalUserAndGroups(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := n.Connect(t)
	var got []byte
	var gotHdr nats.Header
	_, err := nc.Subscribe("switchboard.connect", func(m *nats.Msg) {
		got, gotHdr = m.Data, m.Header
		_ = m.Respond([]byte(`{"statusCode":200,"headers":{"Sec-WebSocket-Protocol":"chat"},"principalId":"u-7","context":{"plan":"pro"},"userId":"u-7","groups":["lobby"]}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // the server has the subscription
		t.Fatal(err)
	}
	l, _ := newLC(t, Config{}, n.Connect(t))
	m := meta()
	d, err := l.Authorize(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Allow || d.Header.Get("Sec-WebSocket-Protocol") != "chat" || d.UserID != "u-7" ||
		len(d.Groups) != 1 || d.Groups[0] != "lobby" || string(d.Principal) != `{"principalId":"u-7","plan":"pro"}` {
		t.Fatalf("decision %+v", d)
	}
	ev := decodeAWS(t, got)
	if ev.RequestContext.RouteKey != "$connect" || ev.RequestContext.EventType != "CONNECT" || ev.RequestContext.ConnectionID != m.ID ||
		ev.Headers["Sec-WebSocket-Protocol"] != "chat, v2" {
		t.Fatalf("request event %+v", ev)
	}
	if gotHdr.Get(protocol.HeaderMsgID) != ev.RequestContext.RequestID || gotHdr.Get(protocol.HeaderConnID) != m.ID {
		t.Fatalf("headers %v", gotHdr)
	}
	if v := testutil.ToFloat64(l.m.decisions.WithLabelValues(outcomeAllow)); v != 1 {
		t.Fatalf("allow decisions = %v", v)
	}
}

func TestAuthorizeDenyGivesTheReplyStatus(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := n.Connect(t)
	if _, err := nc.Subscribe("switchboard.connect", func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"statusCode":403,"body":"{\"message\":\"Forbidden\"}","headers":{"Content-Type":"application/json"}}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	l, _ := newLC(t, Config{ConnectMode: ModeOptional}, n.Connect(t)) // a deny is a deny in every mode
	d, err := l.Authorize(context.Background(), meta())
	if err != nil {
		t.Fatal(err)
	}
	if d.Allow || d.Status != 403 || string(d.Body) != `{"message":"Forbidden"}` || d.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("decision %+v", d)
	}
	if v := testutil.ToFloat64(l.m.decisions.WithLabelValues(outcomeDeny)); v != 1 {
		t.Fatalf("deny decisions = %v", v)
	}
}

func TestAuthorizeFailuresInEachMode(t *testing.T) {
	n := testenv.StartNATS(t)
	backend := n.Connect(t)
	// prefix "slow": never answers; "bad": answers garbage; "none": nobody listens.
	if _, err := backend.Subscribe("slow.connect", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Subscribe("bad.connect", func(m *nats.Msg) { _ = m.Respond([]byte(`{"statusCode":`)) }); err != nil {
		t.Fatal(err)
	}
	if err := backend.Flush(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		prefix    string
		failure   string
		statusReq int
	}{
		{"slow", failTimeout, 504},
		{"bad", failBadReply, 502},
		{"none", failNoResponders, 503},
	}
	for _, c := range cases {
		for _, mode := range []Mode{ModeRequired, ModeOptional, ModeOff} {
			t.Run(c.prefix+"/"+string(mode), func(t *testing.T) {
				// Only the silent responder waits for the deadline; the others
				// get a generous one so a slow machine cannot turn them into timeouts.
				timeout := deadline
				if c.failure == failTimeout {
					timeout = 300 * time.Millisecond
				}
				l, _ := newLC(t, Config{Prefix: c.prefix, ConnectMode: mode, ConnectTimeout: timeout}, n.Connect(t))
				d, err := l.Authorize(context.Background(), meta())
				if err != nil {
					t.Fatal(err)
				}
				switch mode {
				case ModeRequired:
					if d.Allow || d.Status != c.statusReq {
						t.Fatalf("required: %+v, want status %d", d, c.statusReq)
					}
					if v := testutil.ToFloat64(l.m.connectFailures.WithLabelValues(c.failure)); v != 1 {
						t.Fatalf("failures{%s} = %v", c.failure, v)
					}
				case ModeOptional:
					if !d.Allow {
						t.Fatalf("optional: %+v", d)
					}
					if v := testutil.ToFloat64(l.m.decisions.WithLabelValues(outcomeErrAllow)); v != 1 {
						t.Fatalf("error_allow = %v", v)
					}
				case ModeOff:
					if !d.Allow || d.Reason != "skipped" {
						t.Fatalf("off: %+v", d)
					}
					if v := testutil.ToFloat64(l.m.connectFailures.WithLabelValues(c.failure)); v != 0 {
						t.Fatalf("off mode must not ask: failures = %v", v)
					}
				}
			})
		}
	}
}

func TestAuthorizeDoesNotSerializeHandshakes(t *testing.T) {
	n := testenv.StartNATS(t)
	backend := n.Connect(t)
	release := make(chan struct{})
	var mu sync.Mutex
	var held []*nats.Msg
	// The responder holds every request until all of them have arrived:
	// only concurrent Authorize calls can finish.
	const parallel = 8
	if _, err := backend.Subscribe("switchboard.connect", func(m *nats.Msg) {
		mu.Lock()
		held = append(held, m)
		if len(held) == parallel {
			close(release)
		}
		mu.Unlock()
		go func() { <-release; _ = m.Respond(nil) }()
	}); err != nil {
		t.Fatal(err)
	}
	if err := backend.Flush(); err != nil {
		t.Fatal(err)
	}
	l, _ := newLC(t, Config{ConnectTimeout: deadline}, n.Connect(t))
	var wg sync.WaitGroup
	errs := make(chan string, parallel)
	for range parallel {
		wg.Go(func() {
			d, err := l.Authorize(context.Background(), meta())
			if err != nil || !d.Allow {
				errs <- fmt.Sprintf("%+v %v", d, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestAuthorizeReturnsWhenTheClientGoesAway(t *testing.T) {
	n := testenv.StartNATS(t)
	backend := n.Connect(t)
	if _, err := backend.Subscribe("switchboard.connect", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := backend.Flush(); err != nil {
		t.Fatal(err)
	}
	l, _ := newLC(t, Config{ConnectMode: ModeOptional, ConnectTimeout: deadline}, n.Connect(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := l.Authorize(ctx, meta())
	if err == nil || d.Allow {
		t.Fatalf("canceled handshake: %+v %v", d, err)
	}
}

func TestEventsOfAConnectionArriveInOrderWithTheRightJSON(t *testing.T) {
	n := testenv.StartNATS(t)
	c := collect(t, n.Connect(t), "switchboard.>")
	l, _ := newLC(t, Config{NodeID: "node-a", Stage: "prod"}, n.Connect(t))
	m := meta()
	m.NodeID = "" // Config.NodeID applies
	m.UserID, m.Principal, m.Groups = "bob", json.RawMessage(`{"principalId":"bob"}`), []string{"g"}
	if err := l.Connected(m); err != nil {
		t.Fatal(err)
	}
	const msgs = 200
	for i := range msgs {
		l.Message(m, fmt.Appendf(nil, `{"action":"chat","seq":%d}`, i), false, nil)
	}
	l.Message(m, []byte{1, 2, 3}, true, nil)
	if err := l.Disconnected(m, 1000, "bye"); err != nil {
		t.Fatal(err)
	}
	got := c.wait(t, msgs+3)
	if len(got) != msgs+3 {
		t.Fatalf("%d messages", len(got))
	}
	ids := map[string]bool{}
	for i, msg := range got {
		ev := decodeAWS(t, msg.Data)
		rc := ev.RequestContext
		if rc.ConnectionID != m.ID || rc.Stage != "prod" || rc.Identity.SourceIP != "192.0.2.1" {
			t.Fatalf("event %d: %+v", i, rc)
		}
		if a, _ := rc.Authorizer.(map[string]any); a["principalId"] != "bob" {
			t.Fatalf("event %d: authorizer %#v", i, rc.Authorizer)
		}
		x := decodeExt(t, msg.Data)
		if x.NodeID != "node-a" || x.UserID != "bob" || x.EventID != rc.RequestID || msg.Header.Get(protocol.HeaderMsgID) != x.EventID {
			t.Fatalf("event %d: extension %+v header %v", i, x, msg.Header)
		}
		if ids[x.EventID] {
			t.Fatalf("event ID %s repeated", x.EventID)
		}
		ids[x.EventID] = true
		switch {
		case i == 0:
			if msg.Subject != "switchboard.event.connect" || rc.EventType != "CONNECT" || ev.Headers["Host"] != "h" {
				t.Fatalf("first: %s %+v", msg.Subject, ev)
			}
		case i <= msgs:
			var body struct{ Seq int }
			if err := json.Unmarshal([]byte(ev.Body), &body); err != nil || body.Seq != i-1 {
				t.Fatalf("message %d out of order or broken: %q", i, ev.Body)
			}
			if msg.Subject != "switchboard.route.chat" || rc.RouteKey != "chat" || rc.MessageID != rc.RequestID {
				t.Fatalf("message %d: %s %+v", i, msg.Subject, rc)
			}
		case i == msgs+1:
			if msg.Subject != "switchboard.route._default" || rc.RouteKey != "$default" || !ev.IsBase64Encoded || ev.Body != "AQID" {
				t.Fatalf("binary: %s %+v", msg.Subject, ev)
			}
		default:
			if msg.Subject != "switchboard.event.disconnect" || rc.DisconnectStatusCode != 1000 || *rc.DisconnectReason != "bye" {
				t.Fatalf("last: %s %+v", msg.Subject, rc)
			}
		}
	}
	eventually(t, "published{message} to count every message", func() bool {
		return testutil.ToFloat64(l.m.published.WithLabelValues("message")) == msgs+1
	})
}

func TestHostileRouteKeysEndToEnd(t *testing.T) {
	n := testenv.StartNATS(t)
	c := collect(t, n.Connect(t), ">")
	l, _ := newLC(t, Config{}, n.Connect(t))
	m := meta()
	hostile := []string{"a.b", "*", ">", "a b", "\x00", "\t", "日本", strings.Repeat("x", 5000), "_default", "$disconnect", "ok"}
	for _, k := range hostile {
		body, _ := json.Marshal(map[string]string{"action": k})
		l.Message(m, body, false, nil)
	}
	got := c.wait(t, len(hostile))
	for _, msg := range got {
		toks := strings.Split(msg.Subject, ".")
		if len(toks) != 3 || toks[0] != "switchboard" || toks[1] != "route" {
			t.Fatalf("subject %q", msg.Subject)
		}
		checkSubjectToken(t, toks[2])
		if toks[2] != "_default" && toks[2] != "ok" {
			t.Fatalf("subject %q", msg.Subject)
		}
	}
	if got[len(got)-1].Subject != "switchboard.route.ok" {
		t.Fatalf("legal key: %q", got[len(got)-1].Subject)
	}
	if v := testutil.ToFloat64(l.m.routeMessages.WithLabelValues(labelNone, routeInvalidKey)); v != float64(len(hostile)-1) {
		t.Fatalf("invalid keys counted %v, want %d (all but \"ok\")", v, len(hostile)-1)
	}
}

// replies gathers what a two-way route sends back to the client.
type replies struct {
	mu  sync.Mutex
	got []string
}

func (r *replies) fn(data []byte, binary bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, fmt.Sprintf("%v:%s", binary, data))
}

func (r *replies) wait(t testing.TB, n int) []string {
	t.Helper()
	eventually(t, fmt.Sprintf("%d replies", n), func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.got) >= n
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func TestTwoWayRoutes(t *testing.T) {
	n := testenv.StartNATS(t)
	backend := n.Connect(t)
	if _, err := backend.Subscribe("switchboard.route.echo", func(m *nats.Msg) {
		var ev struct{ Body string } // decoded here: t.Fatal is not for this goroutine
		_ = json.Unmarshal(m.Data, &ev)
		_ = m.Respond([]byte("echo:" + ev.Body))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Subscribe("switchboard.route.bin", func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Data = []byte{9, 9}
		r.Header.Set(protocol.HeaderBinary, "true")
		_ = m.RespondMsg(r)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Subscribe("switchboard.route.fail", func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set(protocol.HeaderError, "boom")
		_ = m.RespondMsg(r)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := backend.Subscribe("switchboard.route.silent", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := backend.Flush(); err != nil {
		t.Fatal(err)
	}
	l, _ := newLC(t, Config{TwoWayRoutes: []string{"echo", "bin", "fail", "silent", "nobody"}, RouteTimeout: deadline}, n.Connect(t))
	// Only the silent backend waits for a deadline: a short one, on its own Lifecycle.
	short, _ := newLC(t, Config{TwoWayRoutes: []string{"silent"}, RouteTimeout: 300 * time.Millisecond}, n.Connect(t))
	m := meta()

	var r replies
	l.Message(m, []byte(`{"action":"echo"}`), false, r.fn)
	if got := r.wait(t, 1); got[0] != `false:echo:{"action":"echo"}` {
		t.Fatalf("echo reply %q", got[0])
	}
	var rb replies
	l.Message(m, []byte(`{"action":"bin"}`), false, rb.fn)
	if got := rb.wait(t, 1); got[0] != "true:\x09\x09" {
		t.Fatalf("binary reply %q", got[0])
	}
	for _, route := range []string{"fail", "silent", "nobody"} {
		var rf replies
		lc := l
		if route == "silent" {
			lc = short
		}
		lc.Message(m, []byte(`{"action":"`+route+`"}`), false, rf.fn)
		got := rf.wait(t, 1)
		var frame struct{ Message, ConnectionID, RequestID string }
		if err := json.Unmarshal([]byte(strings.TrimPrefix(got[0], "false:")), &frame); err != nil ||
			frame.Message != "Internal server error" || frame.ConnectionID != m.ID || frame.RequestID == "" {
			t.Fatalf("%s: error frame %q", route, got[0])
		}
	}
	eventually(t, "in-flight back to zero", func() bool { return l.inflight.Load() == 0 && short.inflight.Load() == 0 })
	if v := testutil.ToFloat64(l.m.routeMessages.WithLabelValues(labelCustom, routeNoReply)); v != 1 {
		t.Fatalf("no_reply = %v (nobody)", v)
	}
	if v := testutil.ToFloat64(short.m.routeMessages.WithLabelValues(labelCustom, routeNoReply)); v != 1 {
		t.Fatalf("no_reply = %v (silent)", v)
	}
	if v := testutil.ToFloat64(l.m.routeMessages.WithLabelValues(labelCustom, routeError)); v != 1 {
		t.Fatalf("error = %v (fail)", v)
	}
	if v := testutil.ToFloat64(l.m.routeMessages.WithLabelValues(labelCustom, routeReplied)); v != 2 {
		t.Fatalf("replied = %v", v)
	}

	// One-way routes never wait for a reply even when reply is given. (A
	// subscriber for "other": with none, it would get the no-route frame.)
	if _, err := backend.Subscribe("switchboard.route.other", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := backend.Flush(); err != nil {
		t.Fatal(err)
	}
	var ro replies
	l.Message(m, []byte(`{"action":"other"}`), false, ro.fn)
	l.Message(m, []byte(`{"action":"echo"}`), false, ro.fn)
	ro.wait(t, 1)
	if got := ro.wait(t, 1); len(got) != 1 || !strings.HasPrefix(got[0], "false:echo:") {
		t.Fatalf("got %q", got)
	}
}

func TestTwoWayInflightBoundDropsAndCounts(t *testing.T) {
	n := testenv.StartNATS(t)
	backend := n.Connect(t)
	if _, err := backend.Subscribe("switchboard.route.slow", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := backend.Flush(); err != nil {
		t.Fatal(err)
	}
	l, _ := newLC(t, Config{TwoWayRoutes: []string{"*"}, MaxInflight: 5, RouteTimeout: deadline, NoErrorFrame: true}, n.Connect(t))
	var r replies
	for range 20 {
		l.Message(meta(), []byte(`{"action":"slow"}`), false, r.fn)
	}
	if v := l.inflight.Load(); v != 5 {
		t.Fatalf("in flight %d, want the bound 5", v)
	}
	if v := dropped(l, dropInflightFull); v != 15 {
		t.Fatalf("dropped{inflight_full} = %v", v)
	}
}

func TestNATSDownDropsAreCountedAndBounded(t *testing.T) {
	n := testenv.StartNATS(t)
	// A small reconnect buffer, so NATS refuses quickly while down.
	nc := n.Connect(t, nats.ReconnectBufSize(32<<10))
	const queueLen = 64
	l, _ := newLC(t, Config{QueueLen: queueLen}, nc)
	n.Shutdown()
	eventually(t, "client to notice", func() bool { return !nc.IsConnected() })
	m := meta()
	payload := []byte(`{"action":"x","pad":"` + strings.Repeat("p", 1000) + `"}`)
	maxQueued := 0
	for range 5000 {
		l.Message(m, payload, false, nil)
		_, q := l.queued()
		maxQueued = max(maxQueued, q)
	}
	if maxQueued > queueLen {
		t.Fatalf("queue grew to %d, bound %d", maxQueued, queueLen)
	}
	var drops, published float64
	eventually(t, "every message published or dropped", func() bool {
		drops = dropped(l, dropNATSError) + dropped(l, dropQueueFull)
		published = testutil.ToFloat64(l.m.published.WithLabelValues("message"))
		return drops+published == 5000
	})
	if drops == 0 {
		t.Fatal("nothing dropped while NATS was down")
	}
	if published > 40 { // at most what fits in 32 KiB of reconnect buffer
		t.Fatalf("published %v while down", published)
	}

	// NATS returns: events flow again.
	n.Restart()
	eventually(t, "reconnect", nc.IsConnected)
	c := collect(t, n.Connect(t), "switchboard.event.>")
	if err := l.Disconnected(m, 1006, ""); err != nil {
		t.Fatal(err)
	}
	c.wait(t, 1)
}

func TestQueueByteBound(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := n.Connect(t, nats.ReconnectBufSize(1))
	l, _ := newLC(t, Config{QueueBytes: 1}, nc)
	// Every message is larger than one byte: none can be queued.
	if err := l.Message(meta(), []byte(`{"action":"x"}`), false, nil); err != ErrDropped {
		t.Fatalf("Message: %v, want ErrDropped", err)
	}
	if v := dropped(l, dropQueueFull); v != 1 {
		t.Fatalf("dropped{queue_full} = %v", v)
	}
	// The lifecycle lane has no byte bound: CONNECT is not lost.
	if err := l.Connected(meta()); err != nil {
		t.Fatalf("Connected: %v", err)
	}
}

// dropped sums switchboard_events_dropped_total{reason} over the types.
func dropped(l *Lifecycle, reason string) float64 {
	var v float64
	for _, typ := range []string{"connect", "disconnect", "message"} {
		v += testutil.ToFloat64(l.m.dropped.WithLabelValues(reason, typ))
	}
	return v
}

func TestShutdownPublishesQueuedEventsThenRefuses(t *testing.T) {
	n := testenv.StartNATS(t)
	c := collect(t, n.Connect(t), "switchboard.event.>")
	reg := prometheus.NewRegistry()
	l, err := New(Config{}, n.Connect(t), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if err := l.Disconnected(meta(), 1001, "going away"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	c.wait(t, 100)
	if err := l.Connected(meta()); err != ErrDropped {
		t.Fatalf("after Shutdown: %v", err)
	}
	if problems, err := testutil.CollectAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("metric lint: %v %v", problems, err)
	}
}

func TestJetStreamKeepsEventsForAnOfflineConsumerAndDedupes(t *testing.T) {
	n := testenv.StartNATS(t, testenv.WithJetStream())
	l, _ := newLC(t, Config{JetStream: true, Stream: "EVENTS"}, n.Connect(t))
	m := meta()
	if err := l.Connected(m); err != nil {
		t.Fatal(err)
	}
	l.Message(m, []byte(`{"action":"x"}`), false, nil) // core NATS: not in the stream
	if err := l.Disconnected(m, 1000, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both acks", func() bool { return testutil.ToFloat64(l.m.published.WithLabelValues("disconnect")) == 1 })

	// The backend comes up only now, and still gets both events, in order.
	js, err := jetstream.New(n.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{Durable: "backend", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(deadline))
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	var first jetstream.Msg
	for msg := range batch.Messages() {
		if first == nil {
			first = msg
		}
		types = append(types, decodeAWS(t, msg.Data()).RequestContext.EventType)
		_ = msg.Ack()
	}
	if strings.Join(types, ",") != "CONNECT,DISCONNECT" {
		t.Fatalf("got %v", types)
	}
	// A retransmission of the same event (same Nats-Msg-Id) is not stored twice.
	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: first.Subject(), Data: first.Data(), Header: first.Headers()})
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Fatal("republished event not flagged duplicate")
	}
	s, err := js.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("stream holds %d messages, want 2", info.State.Msgs)
	}
	if subj := info.Config.Subjects; len(subj) != 1 || subj[0] != "switchboard.event.>" {
		t.Fatalf("stream subjects %v", subj)
	}
}

// BenchmarkPublishThroughput: MESSAGE events from Message() to a subscriber
// on another connection, counted when received (nothing dropped).
func BenchmarkPublishThroughput(b *testing.B) {
	l := benchPublish(b, nil)
	if d := dropped(l, dropQueueFull); d > 0 {
		b.Fatalf("dropped %v", d)
	}
}

// benchPublish sends b.N MESSAGE events through Message, with reply as the
// message's reply callback, to a subscriber that counts them, and reports
// events/s once every one has arrived.
func benchPublish(b *testing.B, reply func([]byte, bool)) *Lifecycle {
	n := testenv.StartNATS(b)
	sub := n.Connect(b)
	var mu sync.Mutex
	received := 0
	s, err := sub.Subscribe("switchboard.route.>", func(*nats.Msg) { mu.Lock(); received++; mu.Unlock() })
	if err != nil {
		b.Fatal(err)
	}
	_ = s.SetPendingLimits(-1, -1)
	if err := sub.Flush(); err != nil {
		b.Fatal(err)
	}
	l, _ := newLC(b, Config{QueueLen: 1 << 20, QueueBytes: 1 << 30, ConnQueueLen: 1 << 20, ConnQueueBytes: 1 << 30}, n.Connect(b))
	m := meta()
	payload := []byte(`{"action":"sendmessage","data":"hello, world, this is a typical chat message"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		l.Message(m, payload, false, reply)
	}
	eventually(b, "all received", func() bool { mu.Lock(); defer mu.Unlock(); return received == b.N })
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	return l
}

func TestJetStreamEventsSurviveANATSOutage(t *testing.T) {
	n := testenv.StartNATS(t, testenv.WithJetStream())
	nc := n.Connect(t)
	l, _ := newLC(t, Config{JetStream: true, Stream: "EV", AckTimeout: 300 * time.Millisecond, JetStreamRetries: 1000}, nc)
	n.Shutdown()
	eventually(t, "client to notice", func() bool { return !nc.IsConnected() })
	const events = 20
	for range events {
		if err := l.Disconnected(meta(), 1006, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Acks time out while the server is gone, and the events are retried.
	eventually(t, "a retry", func() bool { return testutil.ToFloat64(l.m.retried.WithLabelValues("disconnect")) > 0 })
	n.Restart()

	js, err := jetstream.New(n.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var stored uint64
	eventually(t, "every event stored", func() bool {
		s, err := js.Stream(ctx, "EV")
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		if err != nil {
			return false
		}
		stored = info.State.Msgs
		return stored >= events
	})
	if stored != events {
		t.Fatalf("stream holds %d events, want %d (retries must be deduplicated)", stored, events)
	}
	if f := testutil.ToFloat64(l.m.failed.WithLabelValues("disconnect")); f != 0 {
		t.Fatalf("failed{disconnect} = %v", f)
	}
	eventually(t, "published{disconnect} to count each event once", func() bool {
		return testutil.ToFloat64(l.m.published.WithLabelValues("disconnect")) == events
	})
}
