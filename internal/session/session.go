// Package session is the connection lifecycle of an edge node: JWT,
// admission, registry, $connect, identity, groups and the lifecycle events of
// every connection, revocation when the node loses its lease, and the
// announcement of a dead node's connections.
package session

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboardgw/switchboard/internal/admission"
	"github.com/switchboardgw/switchboard/internal/authn"
	"github.com/switchboardgw/switchboard/internal/cluster"
	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/groups"
	"github.com/switchboardgw/switchboard/internal/lifecycle"
	"github.com/switchboardgw/switchboard/internal/service"
)

// connState is what the node keeps per connection (Conn.Value): the event
// metadata and whether the cluster already announced its end.
type connState struct {
	// meta is the full metadata during the handshake (headers, query) for
	// $connect and the CONNECT event; dropped at Open. Later events are
	// built from the Conn and the three fields below, so an idle
	// connection keeps ~100 bytes here instead of the whole ConnMeta.
	meta      *lifecycle.ConnMeta
	principal atomic.Pointer[json.RawMessage] // replaced by PUT /@connections/{id}
	groups    []string
	domain    string

	revoked atomic.Bool // other nodes sent DISCONNECT for it: do not send another
	// shed counts its messages shed at its own event queue bound
	// (worker-owned; fills the padding after revoked).
	shed    uint32
	gen     uint64 // Handler.gen when accepted: a later gen means revoked
	release func() // admission slot; nil when admission is off
	lim     admission.MessageLimiter
	limited bool // closed by a message policy (worker-owned)
}

// Events is the lifecycle (internal/lifecycle): $connect's decision and the
// events of a connection.
type Events interface {
	Authorize(ctx context.Context, m *lifecycle.ConnMeta) (lifecycle.Decision, error)
	Connected(m *lifecycle.ConnMeta) error
	Message(m *lifecycle.ConnMeta, payload []byte, binary bool, reply func(data []byte, binary bool)) error
	Disconnected(m *lifecycle.ConnMeta, code int, reason string) error
	// Resumed: a detached connection was resumed after away (RESUME).
	Resumed(m *lifecycle.ConnMeta, away time.Duration) error
	// DisconnectedWait waits for room in the lane as long as ctx lasts.
	DisconnectedWait(ctx context.Context, m *lifecycle.ConnMeta, code int, reason string) error
}

// Owner is the cluster node (cluster.Node): the lease that fences this
// node's connections and the registry of who owns them.
type Owner interface {
	// Healthy: the node may accept connections.
	Healthy() bool
	// Wait returns once the lease is not in doubt, or ctx ends.
	Wait(ctx context.Context) error
	// RegisterNew records (or re-records) a connection of this node.
	RegisterNew(ctx context.Context, rec cluster.ConnRecord) error
	// Unregister removes a closed connection's record (retried on failure).
	Unregister(ctx context.Context, id string)
}

// Memberships is the group service (internal/groups).
type Memberships interface {
	Track(c groups.Conn, user string, groups []string) error
	Untrack(id string)
	// Orphaned removes a dead node's connection from its user and groups.
	Orphaned(ctx context.Context, id, user string) error
	// LocalGroups lists the groups of a connection of this node.
	LocalGroups(id string) []string
}

// Config is what the handler needs to know.
type Config struct {
	// NodeID is this node's ID, in every record and event. Required.
	NodeID string
	// DomainName (-domain-name) is reported in events instead of the
	// client's Host when set.
	DomainName string
	// MsgShedClose (-msg-shed-close): close a connection (1008) once this
	// many of its messages were shed at its own event queue bound; 0 never.
	MsgShedClose int
}

// Deps are the parts the handler joins. Events, Owner and Groups are
// required; JWT and Admission are optional (nil: off).
type Deps struct {
	Events    Events
	Owner     Owner
	Groups    Memberships
	JWT       *authn.JWT
	Admission *admission.Controller
	Logger    *slog.Logger
}

// Handler joins the edge to the rest of the node: $connect through the
// lifecycle, ownership through the cluster registry, events on every change.
type Handler struct {
	nodeID string
	lc     Events
	node   Owner
	groups Memberships
	jwt    *authn.JWT            // nil: no built-in JWT authorizer
	adm    *admission.Controller // nil: no admission limits
	log    *slog.Logger
	domain string // -domain-name: reported in events instead of the client's Host when set

	// Revocation (the cluster already sent DISCONNECT for every connection
	// accepted before it): gen counts revocations; gate is held (read) from
	// a connection's check until its event is queued, so that revokeAll can
	// wait until no event of a revoked connection can still be queued.
	gate sync.RWMutex
	gen  atomic.Uint64

	// shedClose: close a connection (1008) once this many of its messages
	// were shed at its own event queue bound; 0 never.
	shedClose uint32

	// Unregistering a closed connection waits for a Redis round trip: it is
	// queued so reactor workers and the drain never wait for it.
	unreg   chan string
	unregWG sync.WaitGroup // Run's workers
	life    service.Gate
	stopped sync.Once
}

var (
	_ edge.Handler = (*Handler)(nil)
	_ edge.Resumer = (*Handler)(nil)
)

const (
	unregWorkers = 4
	unregQueue   = 65536
)

// New builds the handler; Run starts its unregister workers.
func New(cfg Config, deps Deps) (*Handler, error) {
	switch {
	case !cluster.ValidNodeID(cfg.NodeID):
		return nil, fmt.Errorf("session: node id %q: letters, digits, '-' and '_' only", cfg.NodeID)
	case cfg.MsgShedClose < 0:
		return nil, fmt.Errorf("session: msg shed close %d: must be >= 0", cfg.MsgShedClose)
	case deps.Events == nil || deps.Owner == nil || deps.Groups == nil:
		return nil, errors.New("session: Events, Owner and Groups are required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{nodeID: cfg.NodeID, lc: deps.Events, node: deps.Owner, groups: deps.Groups, jwt: deps.JWT, adm: deps.Admission,
		log: log, domain: cfg.DomainName, shedClose: uint32(cfg.MsgShedClose), unreg: make(chan string, unregQueue)}
	return h, nil
}

// Run removes closed connections' records from the registry until Shutdown.
func (h *Handler) Run(ctx context.Context) error {
	if err := h.life.Start("session"); err != nil {
		return err
	}
	defer h.life.Finish()
	for i := 0; i < unregWorkers; i++ {
		h.unregWG.Go(h.unregisterLoop)
	}
	<-h.life.Stopping() // not ctx: records of connections still closing must go
	h.unregWG.Wait()
	return nil
}

func (h *Handler) unregisterLoop() {
	for id := range h.unreg {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h.node.Unregister(ctx, id)
		cancel()
	}
}

// Shutdown finishes the queued unregistrations. Call after the edge has
// shut down: nothing may queue one after it.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.stopped.Do(func() { close(h.unreg) })
	if !h.life.Close() {
		h.unregisterLoop() // never run: the queue is drained here
	}
	return h.life.Wait(ctx, "session")
}

func (h *Handler) Connect(ctx context.Context, c *edge.Conn, r *edge.Request) (*edge.Accept, error) {
	if !h.node.Healthy() {
		return nil, &edge.Reject{Status: http.StatusServiceUnavailable, Reason: "node fenced: cluster lease not held"}
	}
	// The built-in JWT authorizer answers before anything else runs.
	var jr authn.Result
	protocols := r.Protocols
	if h.jwt != nil {
		var err error
		if jr, err = h.jwt.Authorize(r); err != nil {
			s := authn.StatusOf(err)
			h.log.Debug("JWT refused", "conn", c.ID(), "reason", authn.ReasonOf(err))
			return nil, &edge.Reject{Status: s, Header: http.Header{"Www-Authenticate": {"Bearer"}}, Reason: http.StatusText(s)}
		}
		protocols = h.jwt.StripToken(r.Protocols)
		// A resume must come from the same user (Resume).
		c.SetResumeSubject(jr.UserID)
	}
	release := func() {}
	if h.adm != nil {
		rel, err := h.adm.Admit(c.SourceIP(), jr.UserID)
		if err != nil {
			s := admission.StatusOf(err)
			return nil, &edge.Reject{Status: s, Reason: http.StatusText(s)}
		}
		release = rel
	}
	accepted := false
	defer func() {
		if !accepted {
			release()
		}
	}()
	headers := r.Header
	if len(protocols) != len(r.Protocols) {
		// The token rode in Sec-WebSocket-Protocol: the events show the list
		// without it, so no backend logs it and a $connect that echoes the
		// header back (the usual Lambda pattern) answers a real protocol.
		headers = headers.Clone()
		headers.Del("Sec-WebSocket-Protocol")
		if len(protocols) > 0 {
			headers.Set("Sec-WebSocket-Protocol", strings.Join(protocols, ", "))
		}
	}
	st := &connState{release: release, gen: h.gen.Load(), meta: &lifecycle.ConnMeta{
		ID: c.ID(), NodeID: h.nodeID, ConnectedAt: c.ConnectedAt(), SourceIP: c.SourceIP(), UserAgent: c.UserAgent(),
		DomainName: h.eventDomain(r.Host), Path: r.Path, Headers: lifecycle.HeadersFromHTTP(headers), Query: lifecycle.ParseQuery(r.RawQuery),
		Subprotocols: protocols, UserID: jr.UserID, Principal: jr.Principal,
	}}
	if h.adm != nil {
		st.lim = h.adm.MessageLimiter()
	}
	// Registered before $connect runs: the backend deciding $connect can
	// already post to the connection (held until the 101).
	rec := cluster.ConnRecord{ID: c.ID(), Node: h.nodeID, ConnectedAt: c.ConnectedAt(), SourceIP: c.SourceIP(), UserAgent: c.UserAgent(),
		UserID: jr.UserID, Principal: jr.Principal}
	if err := h.node.RegisterNew(ctx, rec); err != nil {
		h.log.Warn("connection not registered", "conn", c.ID(), "err", err)
		return nil, &edge.Reject{Status: http.StatusServiceUnavailable, Reason: "registry unavailable"}
	}
	d, err := h.lc.Authorize(ctx, st.meta)
	if err != nil || !d.Allow {
		h.queueUnregister(c.ID())
		if err != nil {
			return nil, err
		}
		h.log.Debug("$connect denied", "conn", c.ID(), "status", d.Status, "why", d.Reason)
		body := string(d.Body)
		if body == "" {
			body = http.StatusText(d.Status)
		}
		return nil, &edge.Reject{Status: d.Status, Header: d.Header, Reason: body}
	}
	// The backend's answer refines what the JWT said; it does not erase it.
	if d.UserID != "" && d.UserID != st.meta.UserID {
		if h.adm != nil {
			rel, err := h.adm.AdmitUser(d.UserID)
			if err != nil {
				h.queueUnregister(c.ID())
				s := admission.StatusOf(err)
				return nil, &edge.Reject{Status: s, Reason: http.StatusText(s)}
			}
			prev := st.release
			st.release = func() { prev(); rel() }
			release = st.release
		}
		st.meta.UserID = d.UserID
	}
	if len(d.Principal) > 0 {
		st.meta.Principal = d.Principal
	}
	st.meta.Groups = d.Groups
	if st.meta.UserID != rec.UserID || !bytes.Equal(st.meta.Principal, rec.Principal) {
		// The record carries them so a DISCONNECT for a dead node has them.
		// Written again only when $connect changed what the first write
		// recorded (a backend echoing the JWT's identity costs no write).
		rec.UserID, rec.Principal = st.meta.UserID, st.meta.Principal
		if err := h.node.RegisterNew(ctx, rec); err != nil {
			h.log.Warn("connection identity not recorded", "conn", c.ID(), "err", err)
		}
	}
	st.setPrincipal(st.meta.Principal)
	st.groups, st.domain = st.meta.Groups, st.meta.DomainName
	accepted = true
	return &edge.Accept{Header: d.Header, Subprotocol: jr.Subprotocol, UserID: st.meta.UserID, Value: st}, nil
}

// Resume checks a resume handshake of detached c (docs/resume.md): the
// request's credentials (ResumeCredentials) and the connection
// (ResumeTarget). $connect does not run again: the connection keeps what
// it was admitted with.
func (h *Handler) Resume(_ context.Context, c *edge.Conn, r *edge.Request) error {
	user, err := h.ResumeCredentials(r)
	if err != nil {
		return err
	}
	return h.ResumeTarget(c, user)
}

// ResumeCredentials checks a resume request at the edge that received it,
// whichever node holds the connection: this node must be healthy, the JWT
// (when the built-in authorizer is on) valid, and the connection rates
// must allow it. user is who the JWT names.
func (h *Handler) ResumeCredentials(r *edge.Request) (user string, err error) {
	if !h.node.Healthy() {
		return "", &edge.Reject{Status: http.StatusServiceUnavailable, Reason: "node fenced: cluster lease not held"}
	}
	if h.jwt != nil {
		jr, err := h.jwt.Authorize(r)
		if err != nil {
			s := authn.StatusOf(err)
			h.log.Debug("JWT refused on resume", "reason", authn.ReasonOf(err))
			return "", &edge.Reject{Status: s, Header: http.Header{"Www-Authenticate": {"Bearer"}}, Reason: http.StatusText(s)}
		}
		user = jr.UserID
	}
	if h.adm != nil {
		if err := h.adm.AdmitResume(r.SourceIP); err != nil {
			s := admission.StatusOf(err)
			return "", &edge.Reject{Status: s, Reason: http.StatusText(s)}
		}
	}
	return user, nil
}

// ResumeTarget checks at the node that holds c that it may be resumed by
// user (ResumeCredentials' answer, here or at another edge): not revoked,
// and with the JWT authorizer on, the user it was opened with.
func (h *Handler) ResumeTarget(c *edge.Conn, user string) error {
	if !h.node.Healthy() {
		return &edge.Reject{Status: http.StatusServiceUnavailable, Reason: "node fenced: cluster lease not held"}
	}
	if st, ok := c.Value().(*connState); !ok || h.isRevoked(st) {
		return &edge.Reject{Status: http.StatusGone, Reason: "connection gone"}
	}
	if h.jwt != nil && user != c.ResumeSubject() {
		return &edge.Reject{Status: http.StatusForbidden, Reason: "token names another user"}
	}
	return nil
}

// Resumed emits RESUME for c, back after away: its backend heard neither
// DISCONNECT nor CONNECT for the gap.
func (h *Handler) Resumed(c *edge.Conn, away time.Duration) {
	st := c.Value().(*connState)
	m := h.eventMeta(c, st)
	h.unlessRevoked(st, func() {
		if err := h.lc.Resumed(&m, away); err != nil {
			h.log.Warn("RESUME event dropped", "conn", c.ID(), "err", err)
		}
	})
}

func (h *Handler) Open(c *edge.Conn) {
	st := c.Value().(*connState)
	// Memberships first: a backend reacting to CONNECT can already reach
	// the connection through its user and groups.
	if err := h.groups.Track(c, st.meta.UserID, st.meta.Groups); err != nil {
		h.log.Warn("initial groups not joined", "conn", c.ID(), "err", err)
	}
	h.unlessRevoked(st, func() {
		if err := h.lc.Connected(st.meta); err != nil {
			h.log.Warn("CONNECT event dropped", "conn", c.ID(), "err", err)
		}
	})
	// The request's headers and query only ride on CONNECT: free them.
	st.meta = nil
}

// Message routes a client message. Two policies act on a flooding
// connection: -msg-rate closes it (1008) as soon as it sends faster than
// allowed, before anything is queued; below that rate, while NATS takes
// events more slowly than it sends, its messages are shed at its own event
// queue bound (-conn-event-queue) so that nobody else's are, and
// -msg-shed-close closes it once that happened often enough.
func (h *Handler) Message(c *edge.Conn, data []byte, binary bool) {
	st := c.Value().(*connState)
	if st.limited {
		return // closed by a policy: what it still sends is not routed
	}
	if h.adm != nil && !st.lim.Allow(time.Now()) {
		st.limited = true
		h.adm.MessageRejected()
		c.Close(edge.CodePolicy, "message rate exceeded", edge.ReasonPolicy)
		return
	}
	m := h.eventMeta(c, st)
	// unlessRevoked, inlined on the hot path (no closure per message).
	var err error
	h.gate.RLock()
	if !h.isRevoked(st) {
		err = h.lc.Message(&m, data, binary, func(reply []byte, binary bool) {
			_ = c.Send(reply, binary)
		})
	}
	h.gate.RUnlock()
	if h.shedClose > 0 && errors.Is(err, lifecycle.ErrConnQueueFull) {
		if st.shed++; st.shed >= h.shedClose {
			st.limited = true
			c.Close(edge.CodePolicy, "message queue full", edge.ReasonPolicy)
		}
	}
}

func (h *Handler) Close(c *edge.Conn, code int, reason string, why edge.CloseReason) {
	h.queueUnregister(c.ID())
	h.groups.Untrack(c.ID())
	st, _ := c.Value().(*connState)
	if st != nil && st.release != nil {
		st.release()
	}
	if st == nil || !c.Established() {
		return
	}
	m := h.eventMeta(c, st)
	h.unlessRevoked(st, func() {
		if err := h.lc.Disconnected(&m, code, reason); err != nil {
			h.log.Warn("DISCONNECT event dropped", "conn", c.ID(), "err", err)
		}
	})
}

// isRevoked: the cluster already announced the connection's end.
func (h *Handler) isRevoked(st *connState) bool {
	return st.revoked.Load() || st.gen != h.gen.Load()
}

// unlessRevoked queues a connection's event (emit) unless the cluster
// already announced its end. The check and the queueing happen under the
// revocation gate: an event that passed the check is queued (its Fence
// epoch read) before revokeAll returns, so the epoch change that follows
// drops it.
func (h *Handler) unlessRevoked(st *connState, emit func()) {
	h.gate.RLock()
	defer h.gate.RUnlock()
	if h.isRevoked(st) {
		return
	}
	emit()
}

func (h *Handler) queueUnregister(id string) {
	select {
	case h.unreg <- id:
	default: // queue full: wait for the registry rather than forget the record
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h.node.Unregister(ctx, id)
		cancel()
	}
}

// orphaned announces the end of a dead node's connection (janitor).
func (h *Handler) Orphaned(ctx context.Context, rec cluster.ConnRecord) {
	if err := h.groups.Orphaned(ctx, rec.ID, rec.UserID); err != nil {
		h.log.Warn("memberships of a dead node's connection not removed", "conn", rec.ID, "err", err)
	}
	m := &lifecycle.ConnMeta{ID: rec.ID, NodeID: rec.Node, ConnectedAt: rec.ConnectedAt, SourceIP: rec.SourceIP,
		UserAgent: rec.UserAgent, UserID: rec.UserID, Principal: rec.Principal}
	// Waits for room in the lifecycle lane as long as the janitor's ctx
	// lasts (a node shutting down), so a full lane slows the sweep instead
	// of losing the event.
	if err := h.lc.DisconnectedWait(ctx, m, edge.CodeAbnormal, "node lost"); err != nil {
		h.log.Warn("DISCONNECT for a dead node's connection not queued", "conn", rec.ID, "node", rec.Node, "err", err)
	}
}

// revokeGateWait bounds revokeAll's wait for events being queued. An event
// queue that applies backpressure could hold one longer while the publisher
// waits for the fence: past the bound the revocation goes on, which is still
// safe as long as the queue reads the Fence epoch before it blocks.
const revokeGateWait = time.Second

// revokeAll closes every local connection (1012, no DISCONNECT) after other
// nodes declared this node dead and already sent their DISCONNECT events:
// the cluster node calls it while its fence holds every event and API call,
// and changes the epoch once it returns.
func (h *Handler) RevokeAll(ws *edge.Server) {
	// Every connection accepted so far is revoked, those still in $connect
	// too (their record was announced with the rest).
	h.gen.Add(1)
	var conns []*edge.Conn
	ws.Each(func(c *edge.Conn) { conns = append(conns, c) })
	for _, c := range conns {
		if c.Established() {
			if st, ok := c.Value().(*connState); ok {
				st.revoked.Store(true)
			}
		}
		c.Close(edge.CodeServiceRestart, "node lost its cluster lease", edge.ReasonFenced)
	}
	// Wait for events that passed their check before gen changed.
	locked := make(chan struct{})
	go func() {
		h.gate.Lock()
		close(locked)
	}()
	select {
	case <-locked:
		h.gate.Unlock()
	case <-time.After(revokeGateWait):
		h.log.Warn("revocation: an event is still being queued; going on", "wait", revokeGateWait)
		go func() {
			<-locked
			h.gate.Unlock()
		}()
	}
	h.log.Warn("connections revoked: closed without DISCONNECT (already announced by the cluster)", "count", len(conns))
}

// reassertAll lists the live connections for the registry after it lost them.
func (h *Handler) ReassertAll(ws *edge.Server) []cluster.ConnRecord {
	var recs []cluster.ConnRecord
	ws.Each(func(c *edge.Conn) {
		if !c.Established() {
			return // Value is still being set by the handshake
		}
		st, ok := c.Value().(*connState)
		if !ok || h.isRevoked(st) {
			return // revoked: closing, announced already
		}
		recs = append(recs, cluster.ConnRecord{ID: c.ID(), Node: h.nodeID, ConnectedAt: c.ConnectedAt(),
			SourceIP: c.SourceIP(), UserAgent: c.UserAgent(), UserID: c.UserID(), Principal: st.getPrincipal()})
	})
	return recs
}

func hostOnly(host string) string {
	for i := len(host) - 1; i >= 0; i-- {
		if host[i] == ':' {
			return host[:i]
		}
		if host[i] == ']' {
			break
		}
	}
	return host
}

// eventMeta is the metadata of an established connection's later events.
func (h *Handler) eventMeta(c *edge.Conn, st *connState) lifecycle.ConnMeta {
	return lifecycle.ConnMeta{ID: c.ID(), NodeID: h.nodeID, ConnectedAt: c.ConnectedAt(), SourceIP: c.SourceIP(),
		UserAgent: c.UserAgent(), UserID: c.UserID(), Principal: st.getPrincipal(), Groups: st.groups, DomainName: st.domain}
}

func (st *connState) setPrincipal(p json.RawMessage) {
	if len(p) == 0 {
		st.principal.Store(nil)
		return
	}
	st.principal.Store(&p)
}

func (st *connState) getPrincipal() json.RawMessage {
	if p := st.principal.Load(); p != nil {
		return *p
	}
	return nil
}

// LocalConns is this node's connections as the cluster sees them: the
// edge's hub, plus the per-connection state the node keeps.
type LocalConns struct {
	*edge.Server
	h *Handler
}

var _ conn.StateSetter = LocalConns{}

// Local is ws's hub behind the fence, with SetState.
func (h *Handler) Local(ws *edge.Server) LocalConns { return LocalConns{ws, h} }

// fenceWaitMax bounds how long an API call for a local connection waits for
// a lease in doubt (a pause is settled at the first renewal after it; a
// registry outage may last): then it is answered 503.
const fenceWaitMax = 5 * time.Second

// errFenced: an API call for a local connection waited for the lease in
// doubt until its deadline.
var errFenced = fmt.Errorf("node fenced: cluster lease in doubt: %w", conn.ErrUnavailable)

// local returns id's connection once the fence allows serving it: while the
// lease is in doubt the call waits (the cluster may have announced the
// connection's end already); a connection revoked meanwhile is gone.
func (l LocalConns) local(ctx context.Context, id string) (*edge.Conn, error) {
	wctx, cancel := context.WithTimeout(ctx, fenceWaitMax)
	err := l.h.node.Wait(wctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errFenced, err)
	}
	return l.lookup(id)
}

// lookup returns id's connection, the fence passed.
func (l LocalConns) lookup(id string) (*edge.Conn, error) {
	c := l.Lookup(id)
	if c == nil {
		return nil, conn.ErrGone
	}
	if c.Established() { // Value is set by the handshake before this turns true
		if st, ok := c.Value().(*connState); ok && l.h.isRevoked(st) {
			return nil, conn.ErrGone
		}
	}
	return c, nil
}

// Post implements conn.Controller behind the fence.
func (l LocalConns) Post(ctx context.Context, id string, data []byte, binary bool) error {
	if _, err := l.local(ctx, id); err != nil {
		return err
	}
	return l.Server.Post(ctx, id, data, binary)
}

// doneCtx asks the fence without waiting: Wait returns at once.
var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// postNowMax bounds the posts PostNow takes: a bigger one (compressed,
// perhaps, for a deflate connection) is left to the command server's
// workers, which share it across cores.
const postNowMax = 4 << 10

// PostNow is Post when the fence is open now (cluster.NowPoster), for a
// message up to postNowMax: ok false, and nothing done, while the lease is
// in doubt or for a bigger message.
func (l LocalConns) PostNow(id string, data []byte, binary bool) (ok bool, err error) {
	if len(data) > postNowMax || l.h.node.Wait(doneCtx) != nil {
		return false, nil
	}
	if _, err := l.lookup(id); err != nil {
		return true, err
	}
	return true, l.Server.Post(context.Background(), id, data, binary)
}

// Info implements conn.Controller behind the fence, with the connection's
// principal and its groups (both bounded: MaxState bytes, the groups' cap).
func (l LocalConns) Info(ctx context.Context, id string) (conn.Info, error) {
	c, err := l.local(ctx, id)
	if err != nil {
		return conn.Info{}, err
	}
	info, err := l.Server.Info(ctx, id)
	if err != nil {
		return info, err
	}
	if c.Established() {
		if st, ok := c.Value().(*connState); ok {
			info.Principal = st.getPrincipal()
		}
		info.Groups = l.h.groups.LocalGroups(id)
	}
	return info, nil
}

// Close implements conn.Controller behind the fence.
func (l LocalConns) Close(ctx context.Context, id string, code int, reason string) error {
	if _, err := l.local(ctx, id); err != nil {
		return err
	}
	return l.Server.Close(ctx, id, code, reason)
}

// SetState replaces the state (authorizer context) a local connection
// carries on its later events, and in its registry record so that a
// DISCONNECT sent for it by another node carries it too.
func (l LocalConns) SetState(ctx context.Context, id string, state json.RawMessage) error {
	if !conn.ValidState(state) {
		return conn.ErrInvalidState
	}
	c, err := l.local(ctx, id)
	if err != nil {
		return err
	}
	if !c.Established() {
		return conn.ErrGone
	}
	st, ok := c.Value().(*connState)
	if !ok {
		return conn.ErrGone
	}
	state = append(json.RawMessage(nil), state...)
	st.setPrincipal(state)
	rec := cluster.ConnRecord{ID: id, Node: l.h.nodeID, ConnectedAt: c.ConnectedAt(), SourceIP: c.SourceIP(),
		UserAgent: c.UserAgent(), UserID: c.UserID(), Principal: state}
	if err := l.h.node.RegisterNew(ctx, rec); err != nil {
		l.h.log.Warn("connection state not recorded in the registry", "conn", id, "err", err)
	}
	return nil
}
