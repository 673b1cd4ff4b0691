// Package lifecycle connects a node's WebSocket connections to backends over
// NATS: the $connect integration (request/reply with a deadline), CONNECT,
// MESSAGE and DISCONNECT events in the shape of API Gateway's Lambda proxy
// event, route selection, two-way routes and optional JetStream durability.
// The wire protocol is docs/protocol.md. The edge calls it; it never calls
// the edge, except through the reply callback of a two-way route.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/service"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// The NATS headers, subjects and event names are protocol's (pkg/protocol).

// noRouteTag starts the reply-subject token of a watched one-way message.
// Two-way tokens are base 36 (0-9a-z), so the two never collide.
const noRouteTag = '_'

// ErrDropped: the event was not queued (queue full or shutting down); it is
// counted in switchboard_events_dropped_total.
var ErrDropped = errors.New("lifecycle: event dropped")

// Lifecycle publishes events and runs $connect and routes for one node. Its
// methods are safe for concurrent use. New starts its goroutines; Shutdown
// stops them.
type Lifecycle struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream // nil unless cfg.JetStream
	log *slog.Logger
	m   *metrics
	def defaults
	rt  routeSelector

	subj          protocol.Subjects
	routeSubjects map[string]string // token → subject, for known tokens
	twoWayAll     bool
	twoWay        map[string]bool

	// The lanes (lanes.go): one publisher goroutine takes the lifecycle
	// lane first and keeps each connection's events in the order queued.
	qmu      sync.Mutex
	closed   bool
	life     ring // CONNECT, DISCONNECT
	msgs     ring // MESSAGE events and two-way requests
	msgBytes int
	perConn  map[string]connQueue // connections with messages queued
	parked   int                  // DISCONNECTs waiting for their connection's messages
	idle     bool                 // the publisher waits on wake
	wake     chan struct{}
	room     chan struct{} // closed when the lifecycle lane gets room; nil if nobody waits
	waiting  int           // callers waiting for room

	// $connect requests in the NATS client, abandoned ones included.
	connectSem chan struct{}

	abort    atomic.Bool // Shutdown's ctx expired: drop what is left
	abortCtx context.Context
	abortNow context.CancelFunc // ends a Fence wait when abort is set
	pubDone  chan struct{}
	stopReap chan struct{}
	wg       sync.WaitGroup // the publisher and the reaper, owned by Run
	gate     service.Gate

	// Two-way requests awaiting replies, keyed by the last token of their
	// reply subject.
	inflight    atomic.Int64
	pmu         sync.Mutex
	pending     map[string]*pendingReq
	nextToken   uint64
	inboxPrefix string
	replySub    *nats.Subscription

	// One-way messages watched for NATS's no-responders status (see
	// sendWatched). All share one window, so they expire in publish order:
	// a ring of (token, deadline) bounds them and is popped from the head,
	// without scanning. nmu guards the map, the ring and nextNR.
	nmu     sync.Mutex
	noRoute map[uint64]noRouteMsg
	nrRing  []nrSlot
	nrHead  int
	nrLen   int
	nextNR  uint64
	epoch   time.Time // deadlines are monotonic nanoseconds since epoch
	// hinted: subjects whose missing backend was logged (see hintNoRoute),
	// at most maxNoRouteHints. Guarded by nmu.
	hinted map[string]struct{}

	shutdownOnce sync.Once
	shutdownErr  error
}

type job struct {
	subject string
	data    []byte
	id      string
	typ     string // event type, for metrics and JetStream choice
	connID  string
	attempt int // JetStream republishes so far
	// two-way only
	reply func([]byte, bool)
	route string // metric label
	// one-way with a reply callback: where the no-route error frame goes
	watch func([]byte, bool)
	epoch uint64 // Fence epoch when queued
	// foreign: another node's connection (the janitor's announcement). This
	// node's revocation does not cover it, so the Fence holds it but never
	// drops it: nobody else would announce it.
	foreign bool
}

// noRouteMsg is what the error frame of a watched one-way message needs.
type noRouteMsg struct {
	reply   func([]byte, bool)
	connID  string
	id      string
	route   string
	subject string
}

// maxNoRouteHints bounds the subjects hintNoRoute logs: route keys are
// client input, so without an allow-list there is no end to them.
const maxNoRouteHints = 32

type nrSlot struct {
	token    uint64
	deadline int64
}

type pendingReq struct {
	reply    func([]byte, bool)
	connID   string
	id       string
	route    string
	start    time.Time
	deadline time.Time
}

// New checks cfg, subscribes for two-way replies and, in JetStream mode,
// creates the stream if missing. nc is owned by the caller and must outlive
// Shutdown. reg and log may be nil (metrics unregistered, logs discarded).
func New(cfg Config, nc *nats.Conn, reg prometheus.Registerer, log *slog.Logger) (*Lifecycle, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, errors.New("lifecycle: nil NATS connection")
	}
	cfg = cfg.withDefaults()
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sel, _ := compileSelector(cfg.RouteSelection) // checked by Validate
	l := &Lifecycle{
		cfg:           cfg,
		nc:            nc,
		log:           log,
		def:           defaults{nodeID: cfg.NodeID, stage: cfg.Stage, domain: cfg.DomainName, apiID: cfg.APIID},
		rt:            routeSelector{sel: sel, max: cfg.MaxRouteKey, policy: cfg.InvalidRouteKey},
		subj:          protocol.NewSubjects(cfg.Prefix),
		routeSubjects: map[string]string{},
		twoWay:        map[string]bool{},
		perConn:       map[string]connQueue{},
		wake:          make(chan struct{}, 1),
		connectSem:    make(chan struct{}, cfg.MaxConnectPending),
		pubDone:       make(chan struct{}),
		stopReap:      make(chan struct{}),
		pending:       map[string]*pendingReq{},
		inboxPrefix:   nats.NewInbox() + ".",
		epoch:         time.Now(),
	}
	l.abortCtx, l.abortNow = context.WithCancel(context.Background())
	if !cfg.SilentNoRoute {
		l.noRoute = map[uint64]noRouteMsg{}
		l.nrRing = make([]nrSlot, cfg.MaxNoRoutePending)
	}
	l.routeSubjects[protocol.DefaultToken] = l.subj.RoutePrefix + protocol.DefaultToken
	if len(cfg.Routes) > 0 {
		l.rt.allow = map[string]bool{}
		for _, r := range cfg.Routes {
			l.rt.allow[r] = true
			l.routeSubjects[r] = l.subj.RoutePrefix + r
		}
	}
	for _, r := range cfg.TwoWayRoutes {
		if r == "*" {
			l.twoWayAll = true
		}
		l.twoWay[r] = true
	}
	if cfg.JetStream {
		if err := l.setupJetStream(); err != nil {
			return nil, err
		}
	}
	// Registered only once nothing else can fail but the subscription (which
	// fails only on a closed connection), so a retried New rarely collides.
	l.m = newMetrics(reg,
		func() float64 { life, msgs := l.queued(); return float64(life + msgs) },
		func() float64 { life, _ := l.queued(); return float64(life) },
		func() float64 { return float64(l.inflight.Load()) })
	sub, err := nc.Subscribe(l.inboxPrefix+"*", l.onReply)
	if err != nil {
		return nil, fmt.Errorf("lifecycle: subscribe for route replies: %w", err)
	}
	l.replySub = sub
	return l, nil
}

// Run publishes queued events and expires two-way requests until Shutdown
// has drained them. Events queued before Run wait in their lanes. If ctx
// ends without a Shutdown, what is still queued is dropped (counted).
func (l *Lifecycle) Run(ctx context.Context) error {
	if err := l.gate.Start("lifecycle"); err != nil {
		return err
	}
	defer l.gate.Finish()
	l.wg.Go(l.publishLoop)
	l.wg.Go(l.reapLoop)
	select {
	case <-l.gate.Stopping():
	case <-ctx.Done():
		l.abort.Store(true)
		l.abortNow()
		l.closeLanes()
	}
	<-l.pubDone // Shutdown drains the lanes first, within its own deadline
	close(l.stopReap)
	l.wg.Wait()
	return nil
}

func (l *Lifecycle) setupJetStream() error {
	js, err := jetstream.New(l.nc,
		jetstream.WithPublishAsyncMaxPending(l.cfg.MaxAckPending),
		jetstream.WithPublishAsyncTimeout(l.cfg.AckTimeout),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
			// A retry acknowledged as a duplicate means the first try was
			// stored but its ack lost: count the event once either way.
			if !ack.Duplicate || m.Header.Get(protocol.HeaderAttempt) != "" {
				l.m.published.WithLabelValues(subjectLabel(l, m.Subject)).Inc()
			}
		}),
		jetstream.WithPublishAsyncErrHandler(l.onAckError),
	)
	if err != nil {
		return fmt.Errorf("lifecycle: jetstream: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = js.Stream(ctx, l.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:       l.cfg.Stream,
			Subjects:   []string{l.subj.Events},
			MaxAge:     l.cfg.StreamMaxAge,
			Duplicates: l.cfg.DedupeWindow,
			Storage:    jetstream.FileStorage,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			err = nil // another node created it first
		}
	}
	if err != nil {
		return fmt.Errorf("lifecycle: stream %s: %w", l.cfg.Stream, err)
	}
	l.js = js
	return nil
}

// onAckError queues an unacknowledged event again, up to
// Config.JetStreamRetries times; the same Nats-Msg-Id makes a duplicate
// harmless. Per-connection order is given up for the retried event.
func (l *Lifecycle) onAckError(_ jetstream.JetStream, m *nats.Msg, err error) {
	typ := subjectLabel(l, m.Subject)
	attempt, _ := strconv.Atoi(m.Header.Get(protocol.HeaderAttempt))
	if attempt < l.cfg.JetStreamRetries {
		j := job{subject: m.Subject, data: m.Data, id: m.Header.Get(protocol.HeaderMsgID), connID: m.Header.Get(protocol.HeaderConnID), attempt: attempt + 1, typ: protocol.EventConnect}
		switch typ {
		case "disconnect":
			j.typ = protocol.EventDisconnect
		case "resume":
			j.typ = protocol.EventResume
		}
		// Never waits (this is the NATS client's goroutine): retries are
		// bounded by MaxAckPending.
		if l.enqueueLife(nil, j) == nil {
			l.m.retried.WithLabelValues(typ).Inc()
			return
		}
	} else {
		l.m.dropped.WithLabelValues(dropNATSError, typ).Inc()
	}
	// enqueue counted its own drop reason.
	l.m.failed.WithLabelValues(typ).Inc()
	l.log.Warn("lifecycle: event not acknowledged by JetStream", "subject", m.Subject, "event_id", m.Header.Get(protocol.HeaderMsgID), "attempt", attempt, "err", err)
}

func subjectLabel(l *Lifecycle, subject string) string {
	switch subject {
	case l.subj.EventDisconnect:
		return "disconnect"
	case l.subj.EventResume:
		return "resume"
	}
	return "connect"
}

// Authorize runs the $connect integration for a pending upgrade: a request
// on <prefix>.connect carrying the CONNECT event, answered within
// Config.ConnectTimeout. It blocks the calling handshake only; concurrent
// calls proceed in parallel. When the integration fails (no responder,
// timeout, malformed reply, NATS down or stalled) the decision follows
// Config.ConnectMode.
//
// A connection is admitted only while the lifecycle lane has room for its
// CONNECT and DISCONNECT: Authorize first waits for room (backpressure on
// the accept path, never a lost event), and when there is none within
// ConnectTimeout the decision is a 503. The whole call, room and request,
// ends within ConnectTimeout whatever NATS does.
// The error is non-nil only when ctx ended first (the client is gone); the
// decision is then a 503 rejection.
func (l *Lifecycle) Authorize(ctx context.Context, m *ConnMeta) (Decision, error) {
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, l.cfg.ConnectTimeout)
	defer cancel()
	if d, ok := l.admit(ctx, dctx, m); !ok {
		if ctx.Err() != nil {
			return d, fmt.Errorf("lifecycle: $connect %s: %w", m.ID, ctx.Err())
		}
		return d, nil
	}
	if l.cfg.ConnectMode == ModeOff {
		l.m.decisions.WithLabelValues(outcomeSkip).Inc()
		return Decision{Allow: true, Reason: "skipped"}, nil
	}
	id := nuid.Next()
	body := appendEvent(make([]byte, 0, 1024), &l.def, m, &eventSpec{typ: protocol.EventConnect, routeKey: protocol.RouteConnect, id: id, now: start})
	msg := &nats.Msg{Subject: l.subj.Connect, Data: body, Header: l.header(id, m.ID)}
	reply, err := l.request(dctx, msg)
	l.m.connectDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		if ctx.Err() != nil {
			return Decision{Status: 503, Reason: "client gone"}, fmt.Errorf("lifecycle: $connect %s: %w", m.ID, ctx.Err())
		}
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return l.failed(m, failNoResponders, 503, err), nil
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
			return l.failed(m, failTimeout, 504, err), nil
		default:
			return l.failed(m, failUnavailable, 503, err), nil
		}
	}
	if len(reply.Data) > l.cfg.MaxConnectReply {
		return l.failed(m, failBadReply, 502, fmt.Errorf("%w: %d bytes (max %d)", errBadReply, len(reply.Data), l.cfg.MaxConnectReply)), nil
	}
	d, err := parseReply(reply.Data, l.cfg.MaxPrincipal, l.cfg.MaxGroups)
	if err != nil {
		return l.failed(m, failBadReply, 502, err), nil
	}
	if d.Allow {
		l.m.decisions.WithLabelValues(outcomeAllow).Inc()
	} else {
		l.m.decisions.WithLabelValues(outcomeDeny).Inc()
	}
	return d, nil
}

// admit waits, within dctx, for room in the lifecycle lane. ok false: the
// connection must be refused with d.
func (l *Lifecycle) admit(ctx, dctx context.Context, m *ConnMeta) (d Decision, ok bool) {
	l.qmu.Lock()
	full := l.lifeLenLocked() >= l.cfg.LifecycleQueueLen
	l.qmu.Unlock()
	if !full {
		return Decision{}, true // the common case: no wait, nothing counted
	}
	err := l.waitRoom(dctx)
	switch {
	case err == nil:
		l.m.backpressure.WithLabelValues(backpressureWaited).Inc()
		return Decision{}, true
	case ctx.Err() != nil:
		return Decision{Status: 503, Reason: "client gone"}, false
	case errors.Is(err, ErrDropped):
		return Decision{Status: 503, Reason: "shutting down"}, false
	}
	l.m.backpressure.WithLabelValues(backpressureRejected).Inc()
	l.log.Debug("lifecycle: connection refused, lifecycle event queue full", "connection_id", m.ID, "queued", l.cfg.LifecycleQueueLen)
	return Decision{Status: 503, Reason: "lifecycle event queue full"}, false
}

// request sends a $connect request and waits for its reply within ctx.
//
// The NATS client can hold its caller past any context: a publish waits
// for the connection's lock, which nats.go's flusher keeps while a write to
// a server that stopped reading (paused, overloaded) is stuck in the
// kernel, up to nats.FlusherTimeout (a minute by default). So the request
// runs in a goroutine of its own and the handshake's deadline holds; the
// goroutine ends when the NATS client lets it go (its ctx has expired by
// then). At most MaxConnectPending run at once, abandoned ones included:
// beyond that $connect fails at once as unavailable.
func (l *Lifecycle) request(ctx context.Context, msg *nats.Msg) (*nats.Msg, error) {
	select {
	case l.connectSem <- struct{}{}:
	default:
		return nil, errConnectBacklog
	}
	type result struct {
		msg *nats.Msg
		err error
	}
	done := make(chan result, 1)
	go func() { // owned by the NATS client call; bounded by connectSem
		defer func() { <-l.connectSem }()
		r, err := l.nc.RequestMsgWithContext(ctx, msg)
		done <- result{r, err}
	}()
	select {
	case r := <-done:
		return r.msg, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// failed applies the connect mode to an integration failure.
func (l *Lifecycle) failed(m *ConnMeta, reason string, status int, err error) Decision {
	l.m.connectFailures.WithLabelValues(reason).Inc()
	// No backend subscribed is the normal state of an optional integration
	// (a node run without $connect handling): not worth a log line per
	// connection. The metric counts it either way.
	level := slog.LevelWarn
	if reason == failNoResponders && l.cfg.ConnectMode == ModeOptional {
		level = slog.LevelDebug
	}
	l.log.Log(context.Background(), level, "lifecycle: $connect integration failed", "connection_id", m.ID, "reason", reason, "mode", string(l.cfg.ConnectMode), "err", err)
	why := reason + ": " + err.Error()
	if l.cfg.ConnectMode == ModeOptional {
		l.m.decisions.WithLabelValues(outcomeErrAllow).Inc()
		return Decision{Allow: true, Reason: why}
	}
	l.m.decisions.WithLabelValues(outcomeErrDeny).Inc()
	return Decision{Status: status, Reason: why}
}

func (l *Lifecycle) header(id, connID string) nats.Header {
	return nats.Header{
		protocol.HeaderMsgID:   []string{id},
		protocol.HeaderConnID:  []string{connID},
		protocol.HeaderVersion: []string{"1"},
	}
}

// Connected queues the CONNECT event of an established connection, to
// <prefix>.event.connect, in the lifecycle lane. It never blocks and never
// drops the event to make room (Authorize admitted the connection while the
// lane had room); ErrDropped only after Shutdown.
func (l *Lifecycle) Connected(m *ConnMeta) error {
	id := nuid.Next()
	data := appendEvent(make([]byte, 0, 1024), &l.def, m, &eventSpec{typ: protocol.EventConnect, routeKey: protocol.RouteConnect, id: id, now: time.Now()})
	return l.enqueueLife(nil, job{subject: l.subj.EventConnect, data: data, id: id, typ: protocol.EventConnect, connID: m.ID})
}

// Resumed queues the RESUME event of a connection its client resumed after
// being detached for away (docs/resume.md), to <prefix>.event.resume, in
// the lifecycle lane like CONNECT.
func (l *Lifecycle) Resumed(m *ConnMeta, away time.Duration) error {
	id := nuid.Next()
	data := appendEvent(make([]byte, 0, 768+len(m.Principal)), &l.def, m, &eventSpec{typ: protocol.EventResume, routeKey: protocol.RouteResume, id: id, now: time.Now(), away: away})
	return l.enqueueLife(nil, job{subject: l.subj.EventResume, data: data, id: id, typ: protocol.EventResume, connID: m.ID})
}

// Disconnected queues the DISCONNECT event, to <prefix>.event.disconnect,
// with the close code and reason. The edge calls it exactly once per
// established connection. It never blocks and never drops the event
// (ErrDropped only after Shutdown); it is published after every MESSAGE of
// the connection queued before it.
func (l *Lifecycle) Disconnected(m *ConnMeta, code int, reason string) error {
	return l.enqueueLife(nil, l.disconnectJob(m, code, reason))
}

// DisconnectedWait is Disconnected for the cluster janitor, which announces
// the connections of a dead node: it waits, within ctx, for room in the
// lifecycle lane rather than growing it without bound, and returns ctx's
// error if there was none (ErrDropped after Shutdown). The connection is
// another node's (or a previous incarnation's): a revocation of this node
// does not drop its DISCONNECT.
func (l *Lifecycle) DisconnectedWait(ctx context.Context, m *ConnMeta, code int, reason string) error {
	j := l.disconnectJob(m, code, reason)
	j.foreign = true
	return l.enqueueLife(ctx, j)
}

func (l *Lifecycle) disconnectJob(m *ConnMeta, code int, reason string) job {
	id := nuid.Next()
	data := appendEvent(make([]byte, 0, 768+len(m.Principal)), &l.def, m, &eventSpec{typ: protocol.EventDisconnect, routeKey: protocol.RouteDisconnect, id: id, now: time.Now(), code: code, reason: reason})
	return job{subject: l.subj.EventDisconnect, data: data, id: id, typ: protocol.EventDisconnect, connID: m.ID}
}

// Message routes a client message: it selects the route key, queues the
// MESSAGE event to <prefix>.route.<token> and, for a two-way route, sends it
// as a request whose reply is passed to reply (from another goroutine; reply
// must not block). It never blocks: over the connection's queue bound
// (ErrConnQueueFull), the message lane's or the in-flight bound
// (ErrDropped) the message is dropped and counted. payload is copied
// before Message returns.
// reply may be nil (one-way only). On a one-way route, reply gets API
// Gateway's no-route error frame when nobody subscribes to the route's
// subject, unless Config.SilentNoRoute.
func (l *Lifecycle) Message(m *ConnMeta, payload []byte, binary bool, reply func(data []byte, binary bool)) error {
	r := l.rt.route(payload, binary)
	if r.invalid {
		l.m.routeMessages.WithLabelValues(labelNone, routeInvalidKey).Inc()
		if r.drop {
			l.drop(dropInvalidKey, protocol.EventMessage)
			return ErrDropped
		}
	}
	label := labelCustom
	if r.key == protocol.RouteDefault || l.rt.allow != nil {
		label = r.key
	}
	twoWay := reply != nil && (l.twoWayAll || l.twoWay[r.key])
	if twoWay && l.inflight.Add(1) > int64(l.cfg.MaxInflight) {
		l.inflight.Add(-1)
		l.drop(dropInflightFull, protocol.EventMessage)
		l.m.routeMessages.WithLabelValues(label, routeDropped).Inc()
		return ErrDropped
	}
	subject, ok := l.routeSubjects[r.token]
	if !ok {
		subject = l.subj.RoutePrefix + r.token
	}
	id := nuid.Next()
	size := 640 + len(m.Principal) + len(payload)
	if binary {
		size += len(payload) / 3
	}
	data := appendEvent(make([]byte, 0, size), &l.def, m, &eventSpec{typ: protocol.EventMessage, routeKey: r.key, id: id, now: time.Now(), body: payload, binary: binary})
	j := job{subject: subject, data: data, id: id, typ: protocol.EventMessage, connID: m.ID, route: label}
	if twoWay {
		j.reply = reply
	} else if reply != nil && !l.cfg.SilentNoRoute {
		j.watch = reply
	}
	if err := l.enqueueMsg(j); err != nil {
		if twoWay {
			l.inflight.Add(-1)
		}
		l.m.routeMessages.WithLabelValues(label, routeDropped).Inc()
		return err
	}
	l.m.routeMessages.WithLabelValues(label, routeRouted).Inc()
	if l.cfg.Tap != nil {
		l.cfg.Tap.Routed(r.key, m.ID, m.UserID, payload, binary)
	}
	return nil
}

// drop counts an event not delivered.
func (l *Lifecycle) drop(reason, typ string) {
	l.m.dropped.WithLabelValues(reason, eventLabel(typ)).Inc()
}

// publishLoop publishes queued jobs, the lifecycle lane first, until the
// lanes are closed and empty.
func (l *Lifecycle) publishLoop() {
	defer close(l.pubDone)
	for {
		j, ok := l.next()
		if !ok {
			return
		}
		if reason := l.mayPublish(&j); reason != "" {
			l.drop(reason, j.typ)
			if j.reply != nil {
				l.inflight.Add(-1)
			}
			continue
		}
		switch {
		case j.reply != nil:
			l.sendRequest(j)
		case j.watch != nil:
			l.sendWatched(j)
		default:
			l.publish(j)
		}
	}
}

// mayPublish waits for the Fence and returns the drop reason of a job that
// must not be published, or "".
func (l *Lifecycle) mayPublish(j *job) string {
	if l.abort.Load() {
		return dropShutdown
	}
	f := l.cfg.Fence
	if f == nil {
		return ""
	}
	if err := f.Wait(l.abortCtx); err != nil {
		return dropShutdown
	}
	if !j.foreign && f.Epoch() != j.epoch {
		return dropFenced
	}
	return ""
}

func (l *Lifecycle) publish(j job) {
	msg := &nats.Msg{Subject: j.subject, Data: j.data, Header: l.header(j.id, j.connID)}
	if j.attempt > 0 {
		msg.Header[protocol.HeaderAttempt] = []string{strconv.Itoa(j.attempt)}
	}
	typ := eventLabel(j.typ)
	if l.js != nil && j.typ != protocol.EventMessage {
		// Counted as published when acknowledged (ack handler).
		if _, err := l.js.PublishMsgAsync(msg); err != nil {
			l.m.failed.WithLabelValues(typ).Inc()
			l.m.dropped.WithLabelValues(dropNATSError, typ).Inc()
			l.log.Warn("lifecycle: jetstream publish failed", "subject", j.subject, "event_id", j.id, "err", err)
		}
		return
	}
	if err := l.nc.PublishMsg(msg); err != nil {
		l.m.failed.WithLabelValues(typ).Inc()
		l.m.dropped.WithLabelValues(dropNATSError, typ).Inc()
		return
	}
	l.m.published.WithLabelValues(typ).Inc()
}

// sendRequest publishes a two-way route message with a reply subject of our
// reply subscription and records it as pending.
func (l *Lifecycle) sendRequest(j job) {
	now := time.Now()
	p := &pendingReq{reply: j.reply, connID: j.connID, id: j.id, route: j.route, start: now, deadline: now.Add(l.cfg.RouteTimeout)}
	l.pmu.Lock()
	l.nextToken++
	token := strconv.FormatUint(l.nextToken, 36)
	l.pending[token] = p
	l.pmu.Unlock()
	msg := &nats.Msg{Subject: j.subject, Reply: l.inboxPrefix + token, Data: j.data, Header: l.header(j.id, j.connID)}
	if err := l.nc.PublishMsg(msg); err != nil {
		l.m.failed.WithLabelValues("message").Inc()
		l.drop(dropNATSError, protocol.EventMessage)
		if p := l.take(token); p != nil {
			l.finish(p, routeNoReply)
		}
		return
	}
	l.m.published.WithLabelValues("message").Inc()
}

// sendWatched publishes a one-way route message with a reply subject on our
// reply subscription, so that the NATS server answers it with a
// no-responders status (503) when nobody subscribes: that is API Gateway's
// "no route and no $default" case. The message is watched for
// NoRouteWindow; a backend that receives it and does not reply costs
// nothing more. Over MaxNoRoutePending it is published unwatched.
func (l *Lifecycle) sendWatched(j job) {
	now := int64(time.Since(l.epoch))
	l.nmu.Lock()
	l.expireNoRouteLocked(now)
	if l.nrLen == len(l.nrRing) {
		l.nmu.Unlock()
		l.m.routeMessages.WithLabelValues(j.route, routeUntracked).Inc()
		l.publish(j)
		return
	}
	l.nextNR++
	tok := l.nextNR
	l.noRoute[tok] = noRouteMsg{reply: j.watch, connID: j.connID, id: j.id, route: j.route, subject: j.subject}
	l.nrRing[(l.nrHead+l.nrLen)%len(l.nrRing)] = nrSlot{token: tok, deadline: now + int64(l.cfg.NoRouteWindow)}
	l.nrLen++
	l.nmu.Unlock()

	// Registered before the publish: the 503 may come back at once.
	reply := make([]byte, 0, len(l.inboxPrefix)+14)
	reply = append(append(reply, l.inboxPrefix...), noRouteTag)
	reply = strconv.AppendUint(reply, tok, 36)
	msg := &nats.Msg{Subject: j.subject, Reply: string(reply), Data: j.data, Header: l.header(j.id, j.connID)}
	msg.Header[protocol.HeaderOneWay] = []string{"true"}
	if err := l.nc.PublishMsg(msg); err != nil {
		l.takeNoRoute(tok)
		l.m.failed.WithLabelValues("message").Inc()
		l.drop(dropNATSError, protocol.EventMessage)
		return
	}
	l.m.published.WithLabelValues("message").Inc()
}

// expireNoRouteLocked forgets watched messages past their window: ring
// slots in order, and their map entries if still there.
func (l *Lifecycle) expireNoRouteLocked(now int64) {
	for l.nrLen > 0 {
		s := l.nrRing[l.nrHead]
		if s.deadline > now {
			return
		}
		delete(l.noRoute, s.token)
		l.nrHead = (l.nrHead + 1) % len(l.nrRing)
		l.nrLen--
	}
}

// takeNoRoute removes and returns a watched message, ok false if already
// expired or answered. Its ring slot stays until its deadline.
func (l *Lifecycle) takeNoRoute(tok uint64) (noRouteMsg, bool) {
	l.nmu.Lock()
	defer l.nmu.Unlock()
	p, ok := l.noRoute[tok]
	if ok {
		delete(l.noRoute, tok)
	}
	return p, ok
}

// onNoRouteReply handles what comes back for a watched one-way message: the
// server's no-responders status sends the error frame, exactly once (the
// entry is taken). Anything else is a backend replying to a one-way
// message, which is ignored.
func (l *Lifecycle) onNoRouteReply(token string, msg *nats.Msg) {
	tok, err := strconv.ParseUint(token, 36, 64)
	if err != nil {
		return
	}
	p, ok := l.takeNoRoute(tok)
	if !ok || msg.Header.Get("Status") != "503" {
		return
	}
	l.m.routeMessages.WithLabelValues(p.route, routeNoRoute).Inc()
	p.reply(noRouteFrame(p.connID, p.id), false)
	l.hintNoRoute(p.subject)
}

// hintNoRoute says once per subject why clients get a Forbidden frame: the
// frame itself is API Gateway's and names no cause. The first message
// typed into a fresh gateway, with no backend yet, lands here.
func (l *Lifecycle) hintNoRoute(subject string) {
	l.nmu.Lock()
	_, seen := l.hinted[subject]
	full := len(l.hinted) >= maxNoRouteHints
	if !seen && !full {
		if l.hinted == nil {
			l.hinted = map[string]struct{}{}
		}
		l.hinted[subject] = struct{}{}
	}
	l.nmu.Unlock()
	if seen || full {
		return
	}
	l.log.Warn("no backend subscribes to a client message's route; the client got {\"message\":\"Forbidden\"}. Subscribe a backend to the subject (see docs/protocol.md, No route); logged once per route",
		"subject", subject)
}

// take removes and returns a pending request, or nil if already finished.
func (l *Lifecycle) take(token string) *pendingReq {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	p := l.pending[token]
	if p != nil {
		delete(l.pending, token)
	}
	return p
}

// onReply handles a reply to a two-way route request (NATS client goroutine).
func (l *Lifecycle) onReply(msg *nats.Msg) {
	token := msg.Subject[len(l.inboxPrefix):]
	if len(token) > 0 && token[0] == noRouteTag {
		l.onNoRouteReply(token[1:], msg)
		return
	}
	p := l.take(token)
	if p == nil {
		return // late: already timed out
	}
	switch {
	case msg.Header.Get("Status") == "503":
		l.finish(p, routeNoReply)
	case msg.Header.Get(protocol.HeaderError) != "":
		l.finish(p, routeError)
	default:
		l.m.replyDuration.Observe(time.Since(p.start).Seconds())
		if len(msg.Data) > 0 {
			p.reply(msg.Data, msg.Header.Get(protocol.HeaderBinary) == "true")
		}
		l.finish(p, routeReplied)
	}
}

// finish accounts for a completed request and sends the error frame when it
// failed.
func (l *Lifecycle) finish(p *pendingReq, outcome string) {
	l.inflight.Add(-1)
	l.m.routeMessages.WithLabelValues(p.route, outcome).Inc()
	if outcome != routeReplied && !l.cfg.NoErrorFrame {
		p.reply(errorFrame(p.connID, p.id), false)
	}
}

// errorFrame is API Gateway's frame for a failed integration.
func errorFrame(connID, requestID string) []byte {
	return appendErrorFrame(`{"message":"Internal server error","connectionId":`, connID, requestID)
}

// noRouteFrame is API Gateway's frame for a message with no route and no
// $default. Its body is not documented; "Forbidden" is what API Gateway
// users report (aws-samples/simple-websockets-chat-app#24), and the other
// fields follow the documented error frames.
func noRouteFrame(connID, requestID string) []byte {
	return appendErrorFrame(`{"message":"Forbidden","connectionId":`, connID, requestID)
}

func appendErrorFrame(head, connID, requestID string) []byte {
	b := append(make([]byte, 0, 96), head...)
	b = appendString(b, connID)
	b = append(b, `,"requestId":`...)
	b = appendString(b, requestID)
	return append(b, '}')
}

// reapLoop expires two-way requests past their deadline, and watched
// one-way messages past their window when no publish did it.
func (l *Lifecycle) reapLoop() {
	every := min(max(l.cfg.RouteTimeout/4, 10*time.Millisecond), time.Second)
	if !l.cfg.SilentNoRoute {
		every = min(every, max(l.cfg.NoRouteWindow/2, 10*time.Millisecond))
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var expired []*pendingReq
	for {
		select {
		case <-l.stopReap:
			return
		case now := <-t.C:
			expired = expired[:0]
			l.pmu.Lock()
			for tok, p := range l.pending {
				if now.After(p.deadline) {
					delete(l.pending, tok)
					expired = append(expired, p)
				}
			}
			l.pmu.Unlock()
			for _, p := range expired {
				l.finish(p, routeNoReply)
			}
			if !l.cfg.SilentNoRoute {
				l.nmu.Lock()
				l.expireNoRouteLocked(int64(time.Since(l.epoch)))
				l.nmu.Unlock()
			}
		}
	}
}

// Shutdown stops accepting events, publishes what is queued (and waits for
// JetStream acks) until ctx ends, then drops the rest (counted) and stops
// its goroutines. Two-way requests still pending are abandoned. It does not
// close the NATS connection. Safe to call twice.
func (l *Lifecycle) Shutdown(ctx context.Context) error {
	l.shutdownOnce.Do(func() {
		l.closeLanes()
		var err error
		if !l.gate.Close() {
			// Never run (a start that failed later): drain what was
			// queued here, so that Shutdown's promise holds either way.
			go l.publishLoop()
		}
		select {
		case <-l.pubDone:
		case <-ctx.Done():
			l.abort.Store(true)
			l.abortNow()
			<-l.pubDone // quick now: the rest is dropped
			err = fmt.Errorf("lifecycle: shutdown: events left unpublished: %w", ctx.Err())
		}
		if l.js != nil && err == nil {
			select {
			case <-l.js.PublishAsyncComplete():
			case <-ctx.Done():
				err = fmt.Errorf("lifecycle: shutdown: jetstream acks pending: %w", ctx.Err())
			}
		}
		err = errors.Join(err, l.gate.Wait(ctx, "lifecycle"))
		l.abortNow()
		if uerr := l.replySub.Unsubscribe(); uerr != nil && !errors.Is(uerr, nats.ErrConnectionClosed) && !errors.Is(uerr, nats.ErrBadSubscription) {
			err = errors.Join(err, fmt.Errorf("lifecycle: shutdown: %w", uerr))
		}
		l.pmu.Lock()
		n := len(l.pending)
		clear(l.pending)
		l.pmu.Unlock()
		l.inflight.Add(-int64(n))
		l.nmu.Lock()
		clear(l.noRoute)
		l.nrHead, l.nrLen = 0, 0
		l.nmu.Unlock()
		l.shutdownErr = err
	})
	return l.shutdownErr
}
