package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/api"
	"github.com/switchboardgw/switchboard/internal/lifecycle"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// startNode runs a console service for node id with conns connections on
// its own registry, on a real NATS server.
func startNode(t *testing.T, nc *nats.Conn, id string, conns float64, cfg Config) *Service {
	t.Helper()
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "switchboard_connections", Help: "h"})
	g.Set(conns)
	acc := prometheus.NewCounter(prometheus.CounterOpts{Name: "switchboard_connections_accepted_total", Help: "h"})
	acc.Add(conns + 10)
	reg.MustRegister(g, acc)
	s, err := New(cfg, Deps{NC: nc, Prefix: "t", NodeID: id, Role: "edge", Gatherer: reg,
		Ready: func() bool { return true }, LeaseAge: func() time.Duration { return 250 * time.Millisecond }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// Subscribed once it answers for itself.
	testenv.Eventually(t, id+" answers", func() bool {
		_, err := s.Node(context.Background(), id)
		return err == nil
	})
	return s
}

func TestNodesGathersEveryNode(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := n.Connect(t)
	a := startNode(t, nc, "edge-a", 3, Config{})
	startNode(t, n.Connect(t), "edge-b", 2, Config{})

	nodes, err := a.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].ID != "edge-a" || nodes[0].Connections != 3 || nodes[1].ID != "edge-b" || nodes[1].Connections != 2 {
		t.Fatalf("nodes = %+v", nodes)
	}
	if nodes[0].LeaseAgeMs != 250 || !nodes[0].Ready || nodes[0].Counters.Connects != 13 || nodes[0].History != nil {
		t.Fatalf("edge-a = %+v", nodes[0])
	}
	st, err := a.Node(context.Background(), "edge-b")
	if err != nil {
		t.Fatal(err)
	}
	// The sample taken at start and the current reading.
	if len(st.History) < 2 || st.History[len(st.History)-1].Connections != 2 {
		t.Fatalf("edge-b history = %+v", st.History)
	}
	if st.SampleIntervalMs != 5000 || st.HistorySize != 120 {
		t.Fatalf("edge-b samples every %d ms, keeps %d; want the defaults 5000 and 120", st.SampleIntervalMs, st.HistorySize)
	}
	tot, err := a.Totals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if h := tot.History; tot.Nodes != 2 || len(h) == 0 || h[len(h)-1].Connections != 5 || tot.SampleIntervalMs != 5000 || tot.HistorySize != 120 {
		t.Fatalf("totals = %+v, want 2 nodes and 5 connections now", tot)
	}
	if _, err := a.Node(context.Background(), "edge-c"); !errors.Is(err, api.ErrNoSuchNode) {
		t.Fatalf("Node(edge-c) = %v, want ErrNoSuchNode", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{MaxTails: 65}, {SampleInterval: time.Millisecond}, {SampleInterval: time.Hour}, {History: -1}} {
		if c.Validate() == nil {
			t.Errorf("%+v: valid, want an error", c)
		}
	}
	if err := (Config{SampleInterval: 250 * time.Millisecond}).Validate(); err != nil {
		t.Errorf("250ms: %v", err)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	n := testenv.StartNATS(t)
	s, err := New(Config{History: 3}, Deps{NC: n.Connect(t), NodeID: "x", Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		s.sample()
	}
	st := s.status(true)
	if len(st.History) != 4 { // three kept, and the current reading
		t.Fatalf("history has %d samples, want 4", len(st.History))
	}
	for i := 1; i < len(st.History); i++ {
		if st.History[i].T < st.History[i-1].T {
			t.Fatalf("history out of order: %+v", st.History)
		}
	}
}

// tailRec collects what a tail emits.
type tailRec struct {
	mu      sync.Mutex
	events  []api.Event
	dropped uint64
}

func (r *tailRec) emit(ev api.Event, dropped uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	r.dropped += dropped
	return nil
}

func (r *tailRec) snapshot() ([]api.Event, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]api.Event(nil), r.events...), r.dropped
}

// startTail runs a tail until the test ends and waits for its "open".
func startTail(t *testing.T, s *Service, f api.TailFilter) *tailRec {
	t.Helper()
	rec := &tailRec{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Tail(ctx, f, rec.emit) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Tail: %v", err)
		}
	})
	testenv.Eventually(t, "tail open", func() bool {
		evs, _ := rec.snapshot()
		return len(evs) > 0 && evs[0].Type == "open"
	})
	return rec
}

// event is a lifecycle event as the edge publishes it; a RESUME says the
// connection was away 2140 ms.
func event(typ, route, id, user, body string) []byte {
	away := ""
	if typ == "RESUME" {
		away = `,"detachedMs":2140`
	}
	return fmt.Appendf(nil, `{"requestContext":{"routeKey":%q,"eventType":%q,"connectionId":%q,"switchboard":{"nodeId":"edge-a","userId":%q%s}},"body":%q}`,
		route, typ, id, user, away, body)
}

// startTap runs an edge's tap of route traffic until the test ends.
func startTap(t *testing.T, nc *nats.Conn, node string) *Tap {
	t.Helper()
	tp, err := NewTap(nc, "t", node, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("tap Run: %v", err)
		}
	})
	select {
	case <-tp.Ready():
	case <-time.After(testenv.WaitFor):
		t.Fatal("tap not subscribed")
	}
	return tp
}

// waitTaps waits until the tap knows n tails.
func waitTaps(t *testing.T, tp *Tap, n int) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("%d tails announced", n), func() bool { return int(tp.active.Load()) == n })
}

func TestTailFiltersEvents(t *testing.T) {
	n := testenv.StartNATS(t)
	s, err := New(Config{}, Deps{NC: n.Connect(t), Prefix: "t", NodeID: "x", Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	tp := startTap(t, n.Connect(t), "edge-a")
	byUser := startTail(t, s, api.TailFilter{UserID: "alice", Routes: true, Rate: 100})
	byRoute := startTail(t, s, api.TailFilter{Route: "chat", Routes: true, Rate: 100})
	noRoutes := startTail(t, s, api.TailFilter{Rate: 100})
	waitTaps(t, tp, 2) // the two with route traffic

	pub := n.Connect(t)
	const alice, bob = "AAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBB"
	// Each with the number of tails that show it; sent one at a time, so
	// that every tail sees them in this order (the events and the route
	// traffic come by different paths).
	msgs := []struct {
		subj, typ, route, id, user, body string
		shown                            int
	}{
		{"t.event.connect", "CONNECT", "$connect", bob, "bob", "", 1},
		{"t.event.connect", "CONNECT", "$connect", alice, "alice", "", 2},
		{"", "MESSAGE", "chat", bob, "bob", "from bob", 1},
		{"", "MESSAGE", "other", alice, "alice", strings.Repeat("x", 300), 1},
		{"", "MESSAGE", "chat", alice, "alice", "from alice", 2},
		{"t.event.resume", "RESUME", "$resume", alice, "alice", "", 2},
		{"t.event.disconnect", "DISCONNECT", "$disconnect", alice, "alice", "", 2},
	}
	total := func() int {
		n := 0
		for _, r := range []*tailRec{byUser, byRoute, noRoutes} {
			evs, _ := r.snapshot()
			n += len(evs) - 1 // the "open"
		}
		return n
	}
	want := 0
	for _, m := range msgs {
		if m.subj == "" {
			tp.Routed(m.route, m.id, m.user, []byte(m.body), false)
		} else if err := pub.Publish(m.subj, event(m.typ, m.route, m.id, m.user, m.body)); err != nil {
			t.Fatal(err)
		}
		want += m.shown
		testenv.Eventually(t, fmt.Sprintf("%s %s shown", m.typ, m.route), func() bool { return total() >= want })
	}
	types := func(r *tailRec, n int) string {
		var out []string
		testenv.Eventually(t, "events", func() bool {
			evs, _ := r.snapshot()
			return len(evs) >= n
		})
		evs, _ := r.snapshot()
		for _, e := range evs[1:] {
			out = append(out, e.Type+":"+e.Route+":"+e.UserID)
		}
		return strings.Join(out, " ")
	}
	if got, want := types(byUser, 6), "connect::alice message:other:alice message:chat:alice resume::alice disconnect::alice"; got != want {
		t.Errorf("user filter: %s, want %s", got, want)
	}
	if got, want := types(byRoute, 3), "message:chat:bob message:chat:alice"; got != want {
		t.Errorf("route filter: %s, want %s", got, want)
	}
	if got, want := types(noRoutes, 5), "connect::bob connect::alice resume::alice disconnect::alice"; got != want {
		t.Errorf("without route traffic: %s, want %s", got, want)
	}
	evs, _ := byUser.snapshot()
	if p := evs[2].Preview; len(p) > previewMax+len("…") || !strings.HasSuffix(p, "…") || evs[2].ConnectionID != alice || evs[2].Node != "edge-a" || evs[2].Bytes != 300 {
		t.Errorf("long message shown as %+v", evs[2])
	}
	if r := evs[4]; r.Type != "resume" || r.DetachedMs != 2140 || r.ConnectionID != alice || r.Node != "edge-a" {
		t.Errorf("RESUME shown as %+v, want away 2140 ms", r)
	}
}

func TestTailSamplesAndCountsWhatItSkips(t *testing.T) {
	n := testenv.StartNATS(t)
	s, err := New(Config{}, Deps{NC: n.Connect(t), Prefix: "t", NodeID: "x", Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	const rate = 2
	rec := startTail(t, s, api.TailFilter{Rate: rate})
	pub := n.Connect(t)
	const burst = 50 // fits the tail's buffer: every one is shown or counted
	for range burst {
		if err := pub.Publish("t.event.connect", event("CONNECT", "$connect", "AAAAAAAAAAAAAAAA", "u", "")); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	// Later events, one every 100ms, until one carries the skipped count.
	sent := burst
	testenv.Eventually(t, "the skipped events reported", func() bool {
		_, dropped := rec.snapshot()
		if dropped > 0 {
			return true
		}
		_ = pub.Publish("t.event.connect", event("CONNECT", "$connect", "AAAAAAAAAAAAAAAA", "u", ""))
		_ = pub.Flush()
		sent++
		time.Sleep(100 * time.Millisecond) // the bucket refills with time, nothing to poll
		return false
	})
	evs, dropped := rec.snapshot()
	shown := uint64(len(evs) - 1)
	if shown+dropped > uint64(sent) || dropped < burst-rate-1 {
		t.Fatalf("sent %d: shown %d, dropped %d", sent, shown, dropped)
	}
	// The burst's share: at most the bucket (rate) plus what refilled.
	if shown > uint64(sent-burst)+rate+1 {
		t.Fatalf("sent %d: %d shown, want the rate to hold them back", sent, shown)
	}
}

func TestTailViewersAreBounded(t *testing.T) {
	n := testenv.StartNATS(t)
	s, err := New(Config{MaxTails: 2}, Deps{NC: n.Connect(t), Prefix: "t", NodeID: "x", Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	startTail(t, s, api.TailFilter{})
	startTail(t, s, api.TailFilter{})
	err = s.Tail(context.Background(), api.TailFilter{}, func(api.Event, uint64) error {
		t.Error("a third tail emitted")
		return nil
	})
	if !errors.Is(err, api.ErrTooManyViewers) {
		t.Fatalf("third tail: %v, want ErrTooManyViewers", err)
	}
}

func TestHandlerServesPageAndPassesAPICalls(t *testing.T) {
	var got []string
	var mu sync.Mutex
	apiH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.URL.Path+" origin="+r.Header.Get("Origin"))
		mu.Unlock()
		w.WriteHeader(http.StatusTeapot)
	})
	srv := httptest.NewServer(Handler(apiH))
	defer srv.Close()
	res, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") || res.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("GET /: %d %v", res.StatusCode, res.Header)
	}
	for _, tc := range []struct{ origin, want string }{
		{srv.URL, ""}, // the console's own: removed
		{"http://evil.example", "http://evil.example"}, // left for the API to refuse
	} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/@connections/AAAAAAAAAAAAAAAA", strings.NewReader("x"))
		req.Header.Set("Origin", tc.origin)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusTeapot {
			t.Fatalf("API call not passed on: %d", res.StatusCode)
		}
		mu.Lock()
		last := got[len(got)-1]
		mu.Unlock()
		if last != "/@connections/AAAAAAAAAAAAAAAA origin="+tc.want {
			t.Fatalf("API saw %q, want origin %q", last, tc.want)
		}
	}
}

// A tail of route traffic is not a backend: a route nobody serves still
// answers its client with API Gateway's no-route frame while the tail is
// open, and the tail still shows the message.
func TestRouteTrafficTailKeepsNoBackendReply(t *testing.T) {
	n := testenv.StartNATS(t)
	tp := startTap(t, n.Connect(t), "edge-a")
	lc, err := lifecycle.New(lifecycle.Config{Prefix: "t", NodeID: "edge-a", Tap: tp}, n.Connect(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- lc.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := lc.Shutdown(context.Background()); err != nil {
			t.Errorf("lifecycle shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("lifecycle run: %v", err)
		}
	})
	s, err := New(Config{}, Deps{NC: n.Connect(t), Prefix: "t", NodeID: "x", Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	rec := startTail(t, s, api.TailFilter{Routes: true, Rate: 100})
	waitTaps(t, tp, 1)

	const id = "AAAAAAAAAAAAAAAA"
	replies := make(chan string, 1)
	err = lc.Message(&lifecycle.ConnMeta{ID: id, UserID: "alice"}, []byte(`{"action":"chat","text":"anyone?"}`), false,
		func(data []byte, _ bool) { replies <- string(data) })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-replies:
		if !strings.Contains(r, `"message":"Forbidden"`) || !strings.Contains(r, id) {
			t.Fatalf("client got %s, want the no-route frame", r)
		}
	case <-time.After(testenv.WaitFor):
		t.Fatal("no no-route frame while a tail of route traffic is open")
	}
	testenv.Eventually(t, "the message in the tail", func() bool {
		evs, _ := rec.snapshot()
		for _, e := range evs {
			if e.Type == "message" && e.Route == "chat" && e.ConnectionID == id && e.UserID == "alice" && strings.Contains(e.Preview, "anyone?") {
				return true
			}
		}
		return false
	})
}

func TestTapsAreBoundedAndExpire(t *testing.T) {
	n := testenv.StartNATS(t)
	tp := startTap(t, n.Connect(t), "edge-a")
	pub := n.Connect(t)
	announce := func(b string) {
		t.Helper()
		if err := pub.Publish("t.console.tap", []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	// Anything but an inbox is ignored: the edge never publishes on an
	// event, route or wildcard subject for an announcement; nor is an
	// announcement larger than its filters can be kept. The valid one
	// after them is taken alone (announcements are handled in order).
	for _, b := range []string{`{"inbox":"t.route.chat","rate":5,"ttlMs":1000}`, `{"inbox":"t.event.connect","rate":5,"ttlMs":1000}`,
		`{"inbox":"_INBOX.a b","ttlMs":1000}`, `{"inbox":"_INBOX.>","ttlMs":1000}`, `{"inbox":"_INBOX.","ttlMs":1000}`, `not json`,
		`{"inbox":"_INBOX.big","ttlMs":1000,"user":"` + strings.Repeat("u", 4<<10) + `"}`} {
		announce(b)
	}
	announce(`{"inbox":"_INBOX.ok","rate":5,"ttlMs":1000}`)
	waitTaps(t, tp, 1)
	announce(`{"inbox":"_INBOX.ok","ttlMs":0}`)
	waitTaps(t, tp, 0)

	for i := range maxTaps + 10 {
		announce(fmt.Sprintf(`{"inbox":"_INBOX.t%d","rate":5,"ttlMs":60000}`, i))
	}
	waitTaps(t, tp, maxTaps)
	// A removal frees a slot; an announcement's TTL is capped (tapTTL), so
	// the sweep forgets the rest.
	announce(`{"inbox":"_INBOX.t0","ttlMs":0}`)
	waitTaps(t, tp, maxTaps-1)
	tp.sweep(time.Now().Add(tapTTL + time.Second))
	if a := tp.active.Load(); a != 0 {
		t.Fatalf("%d taps after their TTL, want 0", a)
	}
}

func TestTapSamplesAtItsRate(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := n.Connect(t)
	tp := startTap(t, n.Connect(t), "edge-a")
	ch := make(chan *nats.Msg, 100)
	if _, err := nc.ChanSubscribe("_INBOX.rate", ch); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("t.console.tap", []byte(`{"inbox":"_INBOX.rate","rate":3,"ttlMs":10000}`)); err != nil {
		t.Fatal(err)
	}
	waitTaps(t, tp, 1)
	const burst = 50
	for range burst {
		tp.Routed("chat", "AAAAAAAAAAAAAAAA", "alice", []byte("hi"), false)
	}
	tp.sweep(time.Now()) // reports what the rate skipped
	var shown int
	var dropped uint64
	for shown+int(dropped) < burst {
		select {
		case m := <-ch:
			var te tapEvent
			if err := json.Unmarshal(m.Data, &te); err != nil {
				t.Fatal(err)
			}
			dropped += te.Dropped
			if te.Type == "message" {
				shown++
			}
		case <-time.After(testenv.WaitFor):
			t.Fatalf("shown %d, dropped %d of %d", shown, dropped, burst)
		}
	}
	if shown > 4 || shown+int(dropped) != burst { // the bucket (3) and what refilled meanwhile
		t.Fatalf("shown %d, dropped %d of %d at rate 3", shown, dropped, burst)
	}
}
