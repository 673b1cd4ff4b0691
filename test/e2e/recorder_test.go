package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// recorder is the backend of every scenario: it allows every $connect and
// records each CONNECT and DISCONNECT event by connection ID. In JetStream
// mode it reads the events from a durable consumer on the stream, as a
// backend that must not miss any would.
type recorder struct {
	t      testing.TB
	nc     *nats.Conn
	prefix string

	mu       sync.Mutex
	byID     map[string]*connRec
	byClient map[string]string   // client key (query parameter c) → connection ID
	seen     map[string]struct{} // event IDs: a redelivered event is counted once
	dupes    int                 // redeliveries of an event already seen
	bad      []string            // events that could not be decoded

	cc jetstream.ConsumeContext
}

// connRec is what the backend learnt about one connection.
type connRec struct {
	id, client, node string
	connects         int          // distinct CONNECT events
	firstConnect     time.Time    // when the recorder received it
	disconnects      []disconnect // distinct DISCONNECT events
	messages         int          // MESSAGE events (only with recordMessages)
	resumes          int          // RESUME events (only with a stream, or recordResumes)
	// lastNumbered is the highest n of a MESSAGE "m<n>" (sendEvery20ms's
	// numbering), -1 before the first.
	lastNumbered int
	// afterDisconnect counts CONNECT and MESSAGE events received after the
	// connection's first DISCONNECT: the backend was told it was gone.
	afterDisconnect int
	// lateNumbered holds the n of each MESSAGE "m<n>" among them.
	lateNumbered []int
}

type disconnect struct {
	node   string // the node that reported it
	code   int
	reason string
	at     time.Time // when the recorder received it
}

// event is the part of a lifecycle event the recorder reads
// (docs/protocol.md).
type event struct {
	RequestContext struct {
		EventType            string  `json:"eventType"`
		ConnectionID         string  `json:"connectionId"`
		DisconnectStatusCode int     `json:"disconnectStatusCode"`
		DisconnectReason     *string `json:"disconnectReason"`
		Switchboard          struct {
			EventID string `json:"eventId"`
			NodeID  string `json:"nodeId"`
		} `json:"switchboard"`
	} `json:"requestContext"`
	QueryStringParameters map[string]string `json:"queryStringParameters"`
	Body                  string            `json:"body"`
}

// startRecorder connects to natsURL and subscribes. With stream != "" the
// events come from that JetStream stream (created here if missing, with the
// configuration the edges would give it).
func startRecorder(t testing.TB, natsURL, prefix, stream string) *recorder {
	t.Helper()
	r := &recorder{t: t, prefix: prefix, byID: map[string]*connRec{}, byClient: map[string]string{}, seen: map[string]struct{}{}}
	nc, err := nats.Connect(natsURL, nats.Name("e2e-recorder"), nats.MaxReconnects(-1),
		nats.ReconnectWait(10*time.Millisecond), nats.ReconnectJitter(0, 0), nats.Timeout(10*time.Second))
	if err != nil {
		t.Fatalf("recorder: connect %s: %v", natsURL, err)
	}
	r.nc = nc
	t.Cleanup(r.close)
	// $connect: allow everyone (an empty reply allows); a client that dials
	// with ?user= and ?group= gets them as its user ID and group.
	if _, err := nc.QueueSubscribe(prefix+".connect", "e2e-backend", func(m *nats.Msg) { _ = m.Respond(connectReply(m.Data)) }); err != nil {
		t.Fatalf("recorder: subscribe: %v", err)
	}
	if stream == "" {
		for _, subj := range []string{prefix + ".event.connect", prefix + ".event.disconnect"} {
			sub, err := nc.Subscribe(subj, func(m *nats.Msg) { r.handle(m.Data) })
			if err != nil {
				t.Fatalf("recorder: subscribe %s: %v", subj, err)
			}
			// Lifecycle bursts (2,000 disconnects at once) must not make the
			// recorder a slow consumer that NATS cuts off.
			_ = sub.SetPendingLimits(-1, -1)
		}
	} else {
		r.consume(stream)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("recorder: flush: %v", err)
	}
	return r
}

func (r *recorder) consume(stream string) {
	js, err := jetstream.New(r.nc)
	if err != nil {
		r.t.Fatalf("recorder: jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: stream, Subjects: []string{r.prefix + ".event.>"}, Storage: jetstream.FileStorage,
		MaxAge: 24 * time.Hour, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		r.t.Fatalf("recorder: stream %s: %v", stream, err)
	}
	cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "e2e-recorder", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: 100000,
	})
	if err != nil {
		r.t.Fatalf("recorder: consumer: %v", err)
	}
	r.cc, err = cons.Consume(func(m jetstream.Msg) {
		r.handle(m.Data())
		_ = m.Ack()
	}, jetstream.PullMaxMessages(1000))
	if err != nil {
		r.t.Fatalf("recorder: consume: %v", err)
	}
}

func (r *recorder) close() {
	if r.cc != nil {
		r.cc.Stop()
	}
	r.nc.Close()
}

func (r *recorder) handle(data []byte) {
	var ev event
	err := json.Unmarshal(data, &ev)
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	rc := ev.RequestContext
	if err != nil || rc.ConnectionID == "" || rc.Switchboard.EventID == "" {
		r.bad = append(r.bad, fmt.Sprintf("%v: %.200s", err, data))
		return
	}
	if _, dup := r.seen[rc.Switchboard.EventID]; dup {
		r.dupes++
		return
	}
	r.seen[rc.Switchboard.EventID] = struct{}{}
	c := r.byID[rc.ConnectionID]
	if c == nil {
		c = &connRec{id: rc.ConnectionID, lastNumbered: -1}
		r.byID[rc.ConnectionID] = c
	}
	if len(c.disconnects) > 0 && rc.EventType != "DISCONNECT" {
		c.afterDisconnect++
		var n int
		if _, err := fmt.Sscanf(ev.Body, "m%d", &n); err == nil && rc.EventType == "MESSAGE" {
			c.lateNumbered = append(c.lateNumbered, n)
		}
	}
	switch rc.EventType {
	case "MESSAGE":
		c.messages++
		var n int
		if _, err := fmt.Sscanf(ev.Body, "m%d", &n); err == nil && n > c.lastNumbered {
			c.lastNumbered = n
		}
	case "CONNECT":
		c.connects++
		c.node = rc.Switchboard.NodeID
		if c.firstConnect.IsZero() {
			c.firstConnect = now
		}
		if key := ev.QueryStringParameters["c"]; key != "" {
			c.client = key
			r.byClient[key] = rc.ConnectionID
		}
	case "DISCONNECT":
		d := disconnect{node: rc.Switchboard.NodeID, code: rc.DisconnectStatusCode, at: now}
		if rc.DisconnectReason != nil {
			d.reason = *rc.DisconnectReason
		} else {
			d.reason = "<absent>"
		}
		c.disconnects = append(c.disconnects, d)
	case "RESUME":
		c.resumes++
	default:
		r.bad = append(r.bad, fmt.Sprintf("unexpected event type %q", rc.EventType))
	}
}

// recordResumes also records RESUME events (a stream records them anyway).
func (r *recorder) recordResumes() {
	if _, err := r.nc.Subscribe(r.prefix+".event.resume", func(m *nats.Msg) { r.handle(m.Data) }); err != nil {
		r.t.Fatalf("recorder: subscribe: %v", err)
	}
	if err := r.nc.Flush(); err != nil {
		r.t.Fatalf("recorder: flush: %v", err)
	}
}

// recordMessages also records MESSAGE events (every route), so that an
// event arriving after its connection's DISCONNECT is seen.
func (r *recorder) recordMessages() {
	r.t.Helper()
	sub, err := r.nc.Subscribe(r.prefix+".route.>", func(m *nats.Msg) { r.handle(m.Data) })
	if err != nil {
		r.t.Fatalf("recorder: subscribe routes: %v", err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := r.nc.Flush(); err != nil {
		r.t.Fatalf("recorder: flush: %v", err)
	}
}

// eventsAfterDisconnect counts, over ids, the events that arrived after the
// connection's first DISCONNECT, and the DISCONNECTs beyond the first.
func (r *recorder) eventsAfterDisconnect(ids []string) (events, extraDisconnects int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if c := r.byID[id]; c != nil {
			events += c.afterDisconnect
			if len(c.disconnects) > 1 {
				extraDisconnects += len(c.disconnects) - 1
			}
		}
	}
	return events, extraDisconnects
}

// eventsAfterDisconnectBut is eventsAfterDisconnect without the MESSAGE
// events of the numbered messages "m<n>" with n < before[id], counted apart
// as early: those a node may have handed to NATS before it stopped.
func (r *recorder) eventsAfterDisconnectBut(before map[string]int) (events, early, extraDisconnects int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, b := range before {
		c := r.byID[id]
		if c == nil {
			continue
		}
		events += c.afterDisconnect
		for _, n := range c.lateNumbered {
			if n < b {
				events--
				early++
			}
		}
		if len(c.disconnects) > 1 {
			extraDisconnects += len(c.disconnects) - 1
		}
	}
	return events, early, extraDisconnects
}

// idOf returns the connection ID of the client with key.
func (r *recorder) idOf(key string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id, ok := r.byClient[key]
	return id, ok
}

// get returns a copy of what was recorded for id.
func (r *recorder) get(id string) connRec {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.byID[id]; c != nil {
		cp := *c
		cp.disconnects = append([]disconnect(nil), c.disconnects...)
		return cp
	}
	return connRec{id: id}
}

// disconnected counts the ids that have at least one DISCONNECT.
func (r *recorder) disconnected(ids []string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, id := range ids {
		if c := r.byID[id]; c != nil && len(c.disconnects) > 0 {
			n++
		}
	}
	return n
}

// waitDisconnects waits until every id has a DISCONNECT and returns how long
// that took.
func (r *recorder) waitDisconnects(ids []string, timeout time.Duration) time.Duration {
	r.t.Helper()
	return eventually(r.t, timeout, "DISCONNECT for every closed connection", func() error {
		if n := r.disconnected(ids); n < len(ids) {
			return fmt.Errorf("%d of %d have a DISCONNECT", n, len(ids))
		}
		return nil
	})
}

// checkInvariant is the end-of-scenario invariant: the connections
// established are exactly those the backend heard of, each with exactly one
// CONNECT and exactly one DISCONNECT (with a code in wantCodes, if given for
// it), and nothing undecodable arrived.
func (r *recorder) checkInvariant(established []string, wantCodes map[string]int) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var problems []string
	want := make(map[string]bool, len(established))
	for _, id := range established {
		if want[id] {
			problems = append(problems, "connection ID issued twice: "+id)
		}
		want[id] = true
	}
	connects, disconnects := 0, 0
	for id, c := range r.byID {
		connects += c.connects
		disconnects += len(c.disconnects)
		if !want[id] {
			problems = append(problems, fmt.Sprintf("%s: events for a connection no client established (%d CONNECT, %d DISCONNECT)", id, c.connects, len(c.disconnects)))
			continue
		}
		if c.connects != 1 {
			problems = append(problems, fmt.Sprintf("%s: %d CONNECT events, want 1", id, c.connects))
		}
		if len(c.disconnects) != 1 {
			problems = append(problems, fmt.Sprintf("%s: %d DISCONNECT events, want 1: %+v", id, len(c.disconnects), c.disconnects))
		} else if code, ok := wantCodes[id]; ok && c.disconnects[0].code != code {
			problems = append(problems, fmt.Sprintf("%s: DISCONNECT code %d (%q), want %d", id, c.disconnects[0].code, c.disconnects[0].reason, code))
		}
	}
	for id := range want {
		if r.byID[id] == nil {
			problems = append(problems, id+": established but no event at all")
		}
	}
	for _, b := range r.bad {
		problems = append(problems, "bad event: "+b)
	}
	if connects != len(established) || disconnects != len(established) {
		problems = append(problems, fmt.Sprintf("#CONNECT=%d #DISCONNECT=%d #established=%d", connects, disconnects, len(established)))
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		if len(problems) > 20 {
			problems = append(problems[:20], fmt.Sprintf("… and %d more", len(problems)-20))
		}
		r.t.Fatalf("invariant #CONNECT = #DISCONNECT = #established broken:\n  %s", strings.Join(problems, "\n  "))
	}
	r.t.Logf("invariant holds: %d established, %d CONNECT, %d DISCONNECT (%d redeliveries ignored)", len(established), connects, disconnects, r.dupes)
}

// forget drops what the recorder knows of a connection whose events were
// counted as dropped (core mode), so the invariant covers the others.
func (r *recorder) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.byID, id)
}

// known reports whether the recorder holds events of a connection.
func (r *recorder) known(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byID[id] != nil
}

// connectReply is the $connect reply for a CONNECT request: empty (allow),
// or the user, group and role (a principal) the client asked for in its query.
func connectReply(req []byte) []byte {
	var ev struct {
		Query map[string]string `json:"queryStringParameters"`
	}
	if json.Unmarshal(req, &ev) != nil || ev.Query["user"] == "" && ev.Query["group"] == "" {
		return nil
	}
	reply := map[string]any{"statusCode": 200}
	if u := ev.Query["user"]; u != "" {
		reply["userId"] = u
	}
	if g := ev.Query["group"]; g != "" {
		reply["groups"] = []string{g}
	}
	if r := ev.Query["role"]; r != "" { // a principal: the authorizer object
		reply["principalId"] = ev.Query["user"]
		reply["context"] = map[string]string{"role": r}
	}
	b, _ := json.Marshal(reply)
	return b
}
