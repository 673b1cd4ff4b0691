package lifecycle

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// frame is an API Gateway error frame as the client sees it.
type frame struct {
	Message      string `json:"message"`
	ConnectionID string `json:"connectionId"`
	RequestID    string `json:"requestId"`
}

// frames decodes what the reply callback got; every entry must be a text
// error frame.
func frames(t testing.TB, got []string) []frame {
	t.Helper()
	out := make([]frame, 0, len(got))
	for _, g := range got {
		text, ok := strings.CutPrefix(g, "false:")
		var f frame
		if !ok || json.Unmarshal([]byte(text), &f) != nil {
			t.Fatalf("not a text error frame: %q", g)
		}
		out = append(out, f)
	}
	return out
}

// heardMsgs gathers MESSAGE events a backend receives, with their NATS metadata.
type heardMsgs struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func (e *heardMsgs) wait(t testing.TB, n int) []*nats.Msg {
	t.Helper()
	eventually(t, "backend messages", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.msgs) >= n
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*nats.Msg(nil), e.msgs...)
}

// subscribe runs a one-way backend on subject; if answer is set it replies
// to whatever has a reply subject, as an SDK that ignores the one-way
// header would.
func subscribe(t testing.TB, nc *nats.Conn, subject string, answer []byte) *heardMsgs {
	t.Helper()
	e := &heardMsgs{}
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		e.mu.Lock()
		e.msgs = append(e.msgs, m)
		e.mu.Unlock()
		if answer != nil && m.Reply != "" {
			_ = m.Respond(answer)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return e
}

func watched(l *Lifecycle) int {
	l.nmu.Lock()
	defer l.nmu.Unlock()
	return len(l.noRoute)
}

// The detection rests on this server behaviour: a publish with a reply
// subject that reaches no subscriber is answered, on that reply subject,
// with a header-only message of status 503 — but only to the publisher's own
// subscription (the Lifecycle publishes and subscribes on one connection).
func TestNATSAnswersAPublishNobodyHearsWithStatus503(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := n.Connect(t)
	inbox := nats.NewInbox()
	got := make(chan *nats.Msg, 4)
	if _, err := nc.ChanSubscribe(inbox+".*", got); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: "nobody.here", Reply: inbox + ".x1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Subject != inbox+".x1" || m.Header.Get("Status") != "503" || len(m.Data) != 0 {
			t.Fatalf("got %q status %q data %q, want a 503 on the reply subject", m.Subject, m.Header.Get("Status"), m.Data)
		}
	case <-time.After(deadline):
		t.Fatal("no 503 status")
	}

	// Another connection's publish with our inbox as reply gets no status:
	// the server answers only the publisher's own subscription. Barrier: our
	// own publish afterwards, whose 503 must be the next message.
	other := n.Connect(t)
	if err := other.PublishMsg(&nats.Msg{Subject: "nobody.here", Reply: inbox + ".x2"}); err != nil {
		t.Fatal(err)
	}
	if err := other.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: "nobody.here", Reply: inbox + ".x3"}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Subject != inbox+".x3" {
			t.Fatalf("got a status for %q, want only ours (x3)", m.Subject)
		}
	case <-time.After(deadline):
		t.Fatal("no 503 status")
	}
}

func TestOneWayMessageNobodySubscribesToGetsTheNoRouteFrameOnce(t *testing.T) {
	n := testenv.StartNATS(t)
	l, _ := newLC(t, Config{NoRouteWindow: deadline}, n.Connect(t))
	m := meta()
	var r replies
	l.Message(m, []byte(`{"action":"nobody"}`), false, r.fn)
	first := frames(t, r.wait(t, 1))[0]
	if first != (frame{Message: "Forbidden", ConnectionID: m.ID, RequestID: first.RequestID}) || len(first.RequestID) != 22 {
		t.Fatalf("frame %+v", first)
	}
	// Exactly once: the statuses of one connection's publishes come back in
	// order, so a second frame for the first message would arrive before
	// the frame of the next one.
	l.Message(m, []byte(`{"action":"nobody"}`), false, r.fn)
	got := frames(t, r.wait(t, 2))
	if len(got) != 2 || got[0] != first || got[1].RequestID == first.RequestID || got[1].Message != "Forbidden" {
		t.Fatalf("frames %+v, want one per message", got)
	}
	if v := testutil.ToFloat64(l.m.routeMessages.WithLabelValues(labelCustom, routeNoRoute)); v != 2 {
		t.Fatalf("no_route = %v, want 2", v)
	}
	if w := watched(l); w != 0 {
		t.Fatalf("%d messages still watched after their status", w)
	}
}

func TestOneWayMessageABackendHearsGetsNoFrameEvenWithoutAReply(t *testing.T) {
	n := testenv.StartNATS(t)
	backend := n.Connect(t)
	quiet := subscribe(t, backend, "switchboard.route.quiet", nil)
	chatty := subscribe(t, backend, "switchboard.route.chatty", []byte("ignored"))
	l, _ := newLC(t, Config{NoRouteWindow: deadline}, n.Connect(t))
	m := meta()
	var r replies
	l.Message(m, []byte(`{"action":"quiet"}`), false, r.fn)
	l.Message(m, []byte(`{"action":"chatty"}`), false, r.fn)
	// Barrier: a message nobody hears, published after both; its frame comes
	// after any status for the first two.
	l.Message(m, []byte(`{"action":"nobody"}`), false, r.fn)
	got := frames(t, r.wait(t, 1))

	q := quiet.wait(t, 1)[0]
	c := chatty.wait(t, 1)[0]
	if q.Reply == "" || q.Header.Get(protocol.HeaderOneWay) != "true" {
		t.Fatalf("one-way event: reply %q, %s %q; want a reply subject marked one-way", q.Reply, protocol.HeaderOneWay, q.Header.Get(protocol.HeaderOneWay))
	}
	if len(got) != 1 || got[0].RequestID == q.Header.Get(protocol.HeaderMsgID) || got[0].RequestID == c.Header.Get(protocol.HeaderMsgID) {
		t.Fatalf("frames %+v: only the unheard message may get one", got)
	}
	// The backend's reply to a one-way message ends its watch and is not
	// sent to the client; the unanswered one stays watched for its window.
	eventually(t, "the answered message is no longer watched", func() bool { return watched(l) == 1 })
	if got := r.wait(t, 1); len(got) != 1 {
		t.Fatalf("client got %q", got)
	}
	if v := testutil.ToFloat64(l.m.routeMessages.WithLabelValues(labelCustom, routeNoRoute)); v != 1 {
		t.Fatalf("no_route = %v, want 1", v)
	}
}

func TestWatchedMessagesExpireAfterTheWindow(t *testing.T) {
	n := testenv.StartNATS(t)
	subscribe(t, n.Connect(t), "switchboard.route.quiet", nil)
	l, _ := newLC(t, Config{NoRouteWindow: 50 * time.Millisecond}, n.Connect(t))
	var r replies
	for range 10 {
		l.Message(meta(), []byte(`{"action":"quiet"}`), false, r.fn)
	}
	eventually(t, "watched messages expire", func() bool {
		l.nmu.Lock()
		defer l.nmu.Unlock()
		return l.nrLen == 0 && len(l.noRoute) == 0 && l.nextNR == 10
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) != 0 {
		t.Fatalf("client got %q", r.got)
	}
}

// API Gateway sends a message with no matching route to $default. Without
// an allow-list every legal key has its own subject, so a key nobody
// subscribes to gets the frame even when $default has a backend; with the
// allow-list (Config.Routes) it goes to $default.
func TestNoRouteAndDefault(t *testing.T) {
	n := testenv.StartNATS(t)
	backend := n.Connect(t)
	def := subscribe(t, backend, "switchboard.route._default", nil)
	m := meta()

	open, _ := newLC(t, Config{NoRouteWindow: deadline}, n.Connect(t))
	var r replies
	open.Message(m, []byte(`{"action":"unknown"}`), false, r.fn)
	if f := frames(t, r.wait(t, 1)); f[0].Message != "Forbidden" {
		t.Fatalf("frame %+v", f)
	}

	listed, _ := newLC(t, Config{NoRouteWindow: deadline, Routes: []string{"known"}}, n.Connect(t))
	var rl replies
	listed.Message(m, []byte(`{"action":"unknown"}`), false, rl.fn)
	got := def.wait(t, 1)
	if len(got) != 1 || decodeAWS(t, got[0].Data).RequestContext.RouteKey != protocol.RouteDefault {
		t.Fatalf("$default got %d messages", len(got))
	}
	// "known" is allow-listed but has no backend: it gets the frame; a
	// barrier for the unknown key that $default handled.
	listed.Message(m, []byte(`{"action":"known"}`), false, rl.fn)
	if f := frames(t, rl.wait(t, 1)); len(f) != 1 || f[0].Message != "Forbidden" || f[0].RequestID == got[0].Header.Get(protocol.HeaderMsgID) {
		t.Fatalf("frames %+v: want one, for \"known\", none for the message $default handled", f)
	}
	if v := testutil.ToFloat64(listed.m.routeMessages.WithLabelValues("known", routeNoRoute)); v != 1 {
		t.Fatalf("no_route{route=known} = %v", v)
	}

	// With no $default backend, a message for $default gets the frame too.
	nodef, _ := newLC(t, Config{NoRouteWindow: deadline, Prefix: "other"}, n.Connect(t))
	var rd replies
	nodef.Message(m, []byte(`not json`), false, rd.fn)
	if f := frames(t, rd.wait(t, 1)); f[0].Message != "Forbidden" {
		t.Fatalf("frame %+v", f)
	}
	if v := testutil.ToFloat64(nodef.m.routeMessages.WithLabelValues(protocol.RouteDefault, routeNoRoute)); v != 1 {
		t.Fatalf("no_route{route=$default} = %v", v)
	}
}

func TestWatchedMessagesAreBoundedAndTheRestPublishedUnwatched(t *testing.T) {
	n := testenv.StartNATS(t)
	heard := subscribe(t, n.Connect(t), "switchboard.route.quiet", nil)
	// A long window: the first two slots stay taken for the whole test.
	l, _ := newLC(t, Config{NoRouteWindow: time.Hour, MaxNoRoutePending: 2}, n.Connect(t))
	var r replies
	for range 5 {
		l.Message(meta(), []byte(`{"action":"quiet"}`), false, r.fn)
	}
	got := heard.wait(t, 5)
	withReply := 0
	for _, m := range got {
		if m.Reply != "" {
			withReply++
		}
	}
	if withReply != 2 {
		t.Fatalf("%d of 5 published with a reply subject, want the bound 2", withReply)
	}
	if v := testutil.ToFloat64(l.m.routeMessages.WithLabelValues(labelCustom, routeUntracked)); v != 3 {
		t.Fatalf("untracked = %v, want 3", v)
	}
	if v := testutil.ToFloat64(l.m.routeMessages.WithLabelValues(labelCustom, routeRouted)); v != 5 {
		t.Fatalf("routed = %v, want 5 (every message is still delivered)", v)
	}
}

func TestSilentNoRouteKeepsOneWayMessagesPlainPublishes(t *testing.T) {
	n := testenv.StartNATS(t)
	heard := subscribe(t, n.Connect(t), "switchboard.route.quiet", nil)
	l, _ := newLC(t, Config{SilentNoRoute: true}, n.Connect(t))
	var r replies
	l.Message(meta(), []byte(`{"action":"quiet"}`), false, r.fn)
	got := heard.wait(t, 1)
	if got[0].Reply != "" || got[0].Header.Get(protocol.HeaderOneWay) != "" {
		t.Fatalf("reply %q, one-way header %q: want a plain publish", got[0].Reply, got[0].Header.Get(protocol.HeaderOneWay))
	}
	if l.noRoute != nil || l.nrRing != nil {
		t.Fatal("watch state allocated though SilentNoRoute")
	}
}

func TestNoRouteFrameShape(t *testing.T) {
	got := string(noRouteFrame("Lr0a8Qm1cXk2YbZ_", "Q8tVxT6MuwQn8Gtv0y6Imx"))
	want := `{"message":"Forbidden","connectionId":"Lr0a8Qm1cXk2YbZ_","requestId":"Q8tVxT6MuwQn8Gtv0y6Imx"}`
	if got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}

// BenchmarkPublishWatched is BenchmarkPublishThroughput with a reply
// callback, so every one-way message is watched for no-responders (up to
// the bound): the per-message cost of the no-route frame.
func BenchmarkPublishWatched(b *testing.B) {
	l := benchPublish(b, func([]byte, bool) { b.Error("frame for a message a backend heard") })
	b.ReportMetric(testutil.ToFloat64(l.m.routeMessages.WithLabelValues(labelCustom, routeUntracked)), "untracked")
}

// lockedLog is a slog text sink read while the lifecycle writes to it.
type lockedLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedLog) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedLog) lines(substr string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// The Forbidden frame names no cause (it is API Gateway's): the log says
// which subject has no backend, once per subject.
func TestNoRouteIsExplainedInTheLogOncePerSubject(t *testing.T) {
	n := testenv.StartNATS(t)
	var logs lockedLog
	l, err := New(Config{NoRouteWindow: deadline}, n.Connect(t), prometheus.NewRegistry(), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "lifecycle", l)
	var r replies
	l.Message(meta(), []byte(`{"action":"nobody"}`), false, r.fn)
	l.Message(meta(), []byte(`{"action":"nobody"}`), false, r.fn)
	r.wait(t, 2)
	l.Message(meta(), []byte(`{"action":"other"}`), false, r.fn)
	r.wait(t, 3)
	const hint = "no backend subscribes"
	eventually(t, "the second subject's hint", func() bool { return len(logs.lines(hint)) == 2 })
	got := logs.lines(hint)
	if !strings.Contains(got[0], "subject=switchboard.route.nobody") || !strings.Contains(got[1], "subject=switchboard.route.other") ||
		!strings.Contains(got[0], "level=WARN") || !strings.Contains(got[0], "Forbidden") {
		t.Fatalf("hints %q: want one WARN per subject, naming it and the frame", got)
	}
}
