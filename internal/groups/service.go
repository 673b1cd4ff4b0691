// Package groups gives connections a user and groups and delivers messages
// to a group, a user or everyone across the cluster (an extension over API
// Gateway; see docs/groups.md).
//
// Each edge node keeps an index of its own connections' memberships and
// subscribes to <prefix>.group.<token> (and .user.<token>) only while it has
// a local member; a send is one NATS publish, and every interested node
// encodes the frame once and writes the same bytes to each local member. A
// Store (Redis, or memory for a single node) keeps the cluster-wide
// membership for listing and counting; delivery never reads it.
package groups

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/api"
	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/nodecmd"
	"github.com/switchboardgw/switchboard/internal/rules"
)

// Errors, shared with the API so they map to HTTP statuses there.
var (
	// ErrInvalidName: not a legal group or user name (HTTP 400).
	ErrInvalidName = api.ErrInvalidName
	// ErrTooManyGroups: the connection is in MaxGroupsPerConn groups (HTTP 409).
	ErrTooManyGroups = api.ErrTooManyGroups
	// ErrNoNode: a call that needs a local index on a router-only Service.
	ErrNoNode = errors.New("groups: no local node (router-only service)")
	// ErrAlreadyTracked: Track was called twice for one connection.
	ErrAlreadyTracked = errors.New("groups: connection already tracked")
)

// Config configures a Service. The zero value of every field means its default.
type Config struct {
	// Prefix starts every NATS subject; the same as the lifecycle's and the
	// cluster's. Default "switchboard".
	Prefix string
	// NodeID is this edge node's ID. Default "": a router-only Service that
	// sends, lists and forwards membership changes but has no connections.
	NodeID string
	// MaxGroupsPerConn bounds the groups of one connection; adding one more
	// fails with ErrTooManyGroups (HTTP 409). Default 100.
	MaxGroupsPerConn int
	// MaxMessageBytes bounds a message sent to a group, a user or everyone
	// (conn.ErrTooLarge, HTTP 413). Default 128 KiB.
	MaxMessageBytes int
	// Workers deliver fan-out messages to local members. A subject's
	// messages always go to the same worker, so they arrive in order.
	// Default GOMAXPROCS.
	Workers int
	// FanoutWriters write one message to a big group's local members
	// together, each its own share of them, so one group's fan-out uses
	// every core; the delivery worker is one of them. Default GOMAXPROCS.
	FanoutWriters int
	// FanoutMinShare is the fewest members a writer is given: a message to
	// fewer than twice as many is written by the delivery worker alone.
	// Handing a share over costs about a microsecond, a tenth of one write
	// (BenchmarkShareHandoff), so a share of 32 pays well under 1%.
	// Default 32.
	FanoutMinShare int
	// QueueLen bounds each worker's queue of fan-out messages; beyond it
	// NATS drops messages as a slow consumer. Default 65536.
	QueueLen int
	// StoreWorkers write memberships to the Store, in order per connection.
	// Default 4.
	StoreWorkers int
	// StoreQueueLen bounds each store worker's queue. Default 16384.
	StoreQueueLen int
	// StoreTimeout bounds one Store call. Default 5 s.
	StoreTimeout time.Duration
	// CommandTimeout bounds a membership change that another node sent
	// here, on this node (the sender's own timeout is its Remote's).
	// Default 5 s.
	CommandTimeout time.Duration
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.Prefix != "" {
		if err := rules.CheckSubjectPrefix(c.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("groups: %w", err))
		}
	}
	if c.NodeID != "" && !plain(c.NodeID) {
		errs = append(errs, fmt.Errorf("groups: node id %q: [A-Za-z0-9_-] only", c.NodeID))
	}
	for name, v := range map[string]int64{"MaxGroupsPerConn": int64(c.MaxGroupsPerConn), "MaxMessageBytes": int64(c.MaxMessageBytes),
		"Workers": int64(c.Workers), "FanoutWriters": int64(c.FanoutWriters), "FanoutMinShare": int64(c.FanoutMinShare), "QueueLen": int64(c.QueueLen), "StoreWorkers": int64(c.StoreWorkers),
		"StoreQueueLen": int64(c.StoreQueueLen), "StoreTimeout": int64(c.StoreTimeout), "CommandTimeout": int64(c.CommandTimeout)} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("groups: %s must not be negative", name))
		}
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Prefix == "" {
		c.Prefix = "switchboard"
	}
	def(&c.MaxGroupsPerConn, 100)
	def(&c.MaxMessageBytes, 128<<10)
	def(&c.Workers, runtime.GOMAXPROCS(0))
	def(&c.FanoutWriters, runtime.GOMAXPROCS(0))
	def(&c.FanoutMinShare, 32)
	def(&c.QueueLen, 65536)
	def(&c.StoreWorkers, 4)
	def(&c.StoreQueueLen, 16384)
	if c.StoreTimeout == 0 {
		c.StoreTimeout = 5 * time.Second
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = 5 * time.Second
	}
	return c
}

// Deps are what a Service uses.
type Deps struct {
	// NC carries fan-out and membership commands. Required.
	NC *nats.Conn
	// Store is the cluster-wide membership. Required.
	Store Store
	// Remote carries a membership change (a nodecmd request) to the node
	// that owns its connection and returns the answer, or the error of the
	// node command protocol: wire it to cluster.Router.Command (owner
	// lookup, timeout, dead-owner rule). Without it, membership changes
	// reach only this node's connections.
	Remote func(ctx context.Context, msg *nats.Msg) (*nats.Msg, error)
	// Registerer receives the metrics. Required.
	Registerer prometheus.Registerer
	// Logger; nil discards.
	Logger *slog.Logger
	// Fence, if set, is waited for before every delivery to local members:
	// while this node's cluster lease is in doubt it may no longer own them
	// (cluster.Node implements it).
	Fence interface {
		Wait(ctx context.Context) error
	}
}

// Service is the groups, users and broadcast extension of one node (edge or
// router). It implements api.GroupsController.
type Service struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	m    *metrics
	subj subjects
	seed maphash.Seed

	idx     *index           // nil in a router-only service
	inbox   []chan *nats.Msg // one per delivery worker
	writers []chan fanTask   // fan-out writers beside the delivery worker
	storeQ  []chan storeOp
	qmu     sync.RWMutex // guards qclosed against enqueueing on a closed queue
	qclosed bool

	subMu      sync.Mutex
	fixed      *nats.Subscription // broadcast
	subsClosed bool               // Shutdown ran: Run subscribes nothing more
	ready      chan struct{}      // closed once the broadcast subscription is active
	stop       chan struct{}
	stopOnce   sync.Once
	runOnce    sync.Once
	started    chan struct{} // closed once Run started the workers
	wg         sync.WaitGroup
}

var _ api.GroupsController = (*Service)(nil)

// storeOp is one queued Store write.
type storeOp struct {
	run  func(ctx context.Context) error
	done chan error // nil: nobody waits
}

// New validates cfg and builds a Service; it starts nothing and subscribes
// to nothing. Workers and the broadcast subscription start with Run;
// connections may be tracked before (their writes and messages are queued).
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NC == nil || deps.Store == nil || deps.Registerer == nil {
		return nil, errors.New("groups: NC, Store and Registerer are required")
	}
	cfg = cfg.withDefaults()
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, deps: deps, log: log, m: m, subj: newSubjects(cfg.Prefix), seed: maphash.MakeSeed(),
		ready: make(chan struct{}), stop: make(chan struct{}), started: make(chan struct{})}
	if cfg.NodeID == "" {
		close(s.ready)
		return s, nil
	}
	s.inbox = make([]chan *nats.Msg, cfg.Workers)
	s.writers = newWriterQueues(cfg)
	for i := range s.inbox {
		s.inbox[i] = make(chan *nats.Msg, cfg.QueueLen)
	}
	s.storeQ = make([]chan storeOp, cfg.StoreWorkers)
	for i := range s.storeQ {
		s.storeQ[i] = make(chan storeOp, cfg.StoreQueueLen)
	}
	s.idx = newIndex(s.subj.broadcast)
	s.idx.subscribe = func(subject string) (*nats.Subscription, error) {
		sub, err := deps.NC.ChanSubscribe(subject, s.inbox[s.shard(subject, len(s.inbox))])
		if err != nil {
			return nil, fmt.Errorf("%w: subscribe %s: %v", conn.ErrUnavailable, subject, err)
		}
		return sub, nil
	}
	s.idx.unsubscribe = func(sub *nats.Subscription) {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			s.log.Warn("groups: unsubscribe failed", "subject", sub.Subject, "err", err)
		}
	}
	s.idx.onMembers = func(d int) { s.m.members.Add(float64(d)) }
	s.idx.onSubs = func(d int) { s.m.subscriptions.Add(float64(d)) }
	return s, nil
}

func (s *Service) shard(key string, n int) int { return int(maphash.String(s.seed, key) % uint64(n)) }

// Ready is closed once Run's broadcast subscription is active on the NATS
// server (at once for a router-only service).
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Run subscribes to broadcasts, starts the delivery and store workers, then
// waits until ctx ends or Shutdown is called. The workers run until
// Shutdown.
func (s *Service) Run(ctx context.Context) error {
	first := false
	s.runOnce.Do(func() { first = true })
	if !first {
		return errors.New("groups: Run called twice")
	}
	started, err := s.start()
	if err != nil || !started {
		return err
	}
	if s.idx != nil {
		fctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
		err := s.deps.NC.FlushWithContext(fctx)
		cancel()
		if err != nil {
			return fmt.Errorf("groups: subscribe %s: %w", s.subj.broadcast, err)
		}
		close(s.ready)
	}
	select {
	case <-ctx.Done():
	case <-s.stop:
	}
	return nil
}

// Shutdown unsubscribes, finishes the queued Store writes and stops the
// workers. Call it after the edge server has shut down (every connection
// untracked). Safe to call twice.
func (s *Service) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.unsubscribeFixed()
		s.qmu.Lock()
		s.qclosed = true
		for _, q := range s.storeQ {
			close(q)
		}
		s.qmu.Unlock()
		close(s.stop)
	})
	select {
	case <-s.started:
	default:
		// Run never started the workers: write what was queued here.
		s.runOnce.Do(func() {})
		for _, q := range s.storeQ {
			for op := range q {
				s.execStore(op)
			}
		}
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("groups: shutdown: %w", ctx.Err())
	}
}

// start subscribes this node to broadcasts and starts the workers, unless
// Shutdown came first: the two never interleave, so Shutdown either waits
// for the workers or does their work itself.
func (s *Service) start() (bool, error) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	if s.subsClosed {
		return false, nil
	}
	if s.idx != nil {
		sub, err := s.deps.NC.ChanSubscribe(s.subj.broadcast, s.inbox[s.shard(s.subj.broadcast, len(s.inbox))])
		if err != nil {
			return false, fmt.Errorf("groups: subscribe %s: %w", s.subj.broadcast, err)
		}
		s.fixed = sub
		s.startDelivery()
		for _, q := range s.storeQ {
			s.wg.Add(1)
			go s.storeLoop(q)
		}
	}
	close(s.started)
	return true, nil
}

func (s *Service) unsubscribeFixed() {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.subsClosed = true
	if s.fixed != nil {
		_ = s.fixed.Unsubscribe()
		s.fixed = nil
	}
}

// ---- local connections (edge side) ----

// Track adds a local connection to the index with its user ("" for none)
// and initial groups, as the $connect decision set them. Call it once per
// connection, before its CONNECT event is published (then a backend reacting
// to the event already reaches it through its groups). Invalid names and
// groups beyond MaxGroupsPerConn are skipped and reported in the error; the
// rest are tracked. The Store is written in the background.
func (s *Service) Track(c Conn, user string, groups []string) error {
	if s.idx == nil {
		return ErrNoNode
	}
	var errs []error
	if user != "" && !ValidName(user) {
		errs = append(errs, fmt.Errorf("user %q: %w", user, ErrInvalidName))
		user = ""
	}
	id := c.ID()
	x := s.idx
	x.mu.Lock()
	if x.conns[id] != nil {
		x.mu.Unlock()
		return ErrAlreadyTracked
	}
	subs := x.subscribed
	m := &member{c: c, user: user}
	x.conns[id] = m
	_ = x.join(m, x.broadcast) // cannot fail: no subscription per broadcast member
	if user != "" {
		if err := x.join(m, s.subj.userSubject(user)); err != nil {
			errs = append(errs, err)
			m.user = ""
		}
	}
	for _, g := range groups {
		switch {
		case !ValidName(g):
			errs = append(errs, fmt.Errorf("group %q: %w", g, ErrInvalidName))
			continue
		case slices.Contains(m.groups, g):
			continue
		case len(m.groups) >= s.cfg.MaxGroupsPerConn:
			errs = append(errs, fmt.Errorf("group %q: %w (max %d)", g, ErrTooManyGroups, s.cfg.MaxGroupsPerConn))
			continue
		}
		if err := x.join(m, s.subj.groupSubject(g)); err != nil {
			errs = append(errs, err)
			continue
		}
		m.groups = append(m.groups, g)
	}
	user, joined := m.user, slices.Clone(m.groups)
	m.stored = user != "" || len(joined) > 0
	fresh := x.subscribed != subs
	x.mu.Unlock()
	if fresh {
		s.confirm()
	}
	x.onMembers(len(joined))
	if user != "" || len(joined) > 0 {
		s.enqueue(id, func(ctx context.Context) error { return s.deps.Store.Add(ctx, id, user, joined...) }, nil)
	}
	if len(errs) > 0 {
		return fmt.Errorf("groups: track %s: %w", id, errors.Join(errs...))
	}
	return nil
}

// Untrack removes a local connection from the index when it closes; its
// Store records are removed in the background. Untracking an unknown
// connection does nothing.
func (s *Service) Untrack(id string) {
	if s.idx == nil {
		return
	}
	x := s.idx
	x.mu.Lock()
	m := x.conns[id]
	if m == nil {
		x.mu.Unlock()
		return
	}
	delete(x.conns, id)
	m.untraced = true
	x.leave(m, x.broadcast)
	if m.user != "" {
		x.leave(m, s.subj.userSubject(m.user))
	}
	for _, g := range m.groups {
		x.leave(m, s.subj.groupSubject(g))
	}
	user, n, stored := m.user, len(m.groups), m.stored
	x.mu.Unlock()
	x.onMembers(-n)
	if stored {
		// A connection that never had a user or a group has nothing in
		// the Store: most connections, whose close then costs Redis
		// nothing here.
		s.enqueue(id, func(ctx context.Context) error { return s.deps.Store.RemoveConn(ctx, id, user) }, nil)
	}
}

// Orphaned removes a dead node's connection from the Store. Wire it into the
// janitor's OnOrphan (the record carries the user ID); the groups are read
// from the Store.
func (s *Service) Orphaned(ctx context.Context, id, user string) error {
	if user != "" && !ValidName(user) {
		user = ""
	}
	return s.deps.Store.RemoveConn(ctx, id, user)
}

// Reassert writes every local membership to the Store again, e.g. after Redis
// restarted empty (the cluster node's Reassert hook).
func (s *Service) Reassert(ctx context.Context) error {
	if s.idx == nil {
		return nil
	}
	type rec struct {
		id, user string
		groups   []string
	}
	var recs []rec
	s.idx.mu.RLock()
	for id, m := range s.idx.conns {
		if m.user != "" || len(m.groups) > 0 {
			recs = append(recs, rec{id, m.user, slices.Clone(m.groups)})
		}
	}
	s.idx.mu.RUnlock()
	var errs []error
	for _, r := range recs {
		if err := s.deps.Store.Add(ctx, r.id, r.user, r.groups...); err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// confirmWait bounds confirm's round trip to the NATS server.
const confirmWait = 2 * time.Second

// confirm waits until the NATS server has the subscriptions made so far: a
// member that just joined a subject this node had no interest in gets
// every message sent after its join returned, even one published at once
// through another node. Only the first local member of a subject pays the
// round trip. If NATS is away, the subscription is sent on reconnect.
func (s *Service) confirm() {
	if err := s.deps.NC.FlushTimeout(confirmWait); err != nil {
		s.log.Debug("groups: subscription not confirmed by the NATS server yet", "err", err)
	}
}

// LocalGroups lists the groups of a local connection (nil if not tracked).
func (s *Service) LocalGroups(id string) []string {
	if s.idx == nil {
		return nil
	}
	return s.idx.localGroups(id)
}

func (s *Service) addLocal(ctx context.Context, group, id string) error {
	x := s.idx
	x.mu.Lock()
	m := x.conns[id]
	switch {
	case m == nil:
		x.mu.Unlock()
		return conn.ErrGone
	case slices.Contains(m.groups, group):
		x.mu.Unlock()
		return nil
	case len(m.groups) >= s.cfg.MaxGroupsPerConn:
		x.mu.Unlock()
		return fmt.Errorf("%w (max %d)", ErrTooManyGroups, s.cfg.MaxGroupsPerConn)
	}
	subs := x.subscribed
	if err := x.join(m, s.subj.groupSubject(group)); err != nil {
		x.mu.Unlock()
		return err
	}
	m.groups = append(m.groups, group)
	m.stored = true
	fresh := x.subscribed != subs
	x.mu.Unlock()
	if fresh {
		s.confirm()
	}
	x.onMembers(1)
	s.storeWait(ctx, id, func(ctx context.Context) error { return s.deps.Store.Add(ctx, id, "", group) })
	// Untrack may have run meanwhile and queued its RemoveConn before this
	// write: take the membership out again so the Store does not keep it.
	x.mu.RLock()
	gone := m.untraced
	x.mu.RUnlock()
	if gone {
		s.enqueue(id, func(ctx context.Context) error { return s.deps.Store.RemoveGroups(ctx, id, group) }, nil)
	}
	return nil
}

func (s *Service) removeLocal(ctx context.Context, group, id string) error {
	x := s.idx
	x.mu.Lock()
	m := x.conns[id]
	if m == nil {
		x.mu.Unlock()
		return conn.ErrGone
	}
	i := slices.Index(m.groups, group)
	if i < 0 {
		x.mu.Unlock()
		return nil
	}
	x.leave(m, s.subj.groupSubject(group))
	m.groups = slices.Delete(m.groups, i, i+1)
	x.mu.Unlock()
	x.onMembers(-1)
	s.storeWait(ctx, id, func(ctx context.Context) error { return s.deps.Store.RemoveGroups(ctx, id, group) })
	return nil
}

// ---- Store writes, ordered per connection ----

// enqueue queues a Store write on the connection's worker, so that writes
// for one connection happen in the order they were made.
func (s *Service) enqueue(id string, run func(ctx context.Context) error, done chan error) {
	op := storeOp{run: run, done: done}
	s.qmu.RLock()
	if s.qclosed {
		s.qmu.RUnlock()
		s.execStore(op)
		return
	}
	s.storeQ[s.shard(id, len(s.storeQ))] <- op
	s.qmu.RUnlock()
}

// storeWait queues a write and waits for it: API callers list right after
// adding. A failed write is logged and counted, not returned: delivery
// already works, only listings lag.
func (s *Service) storeWait(ctx context.Context, id string, run func(ctx context.Context) error) {
	done := make(chan error, 1)
	s.enqueue(id, run, done)
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func (s *Service) storeLoop(q chan storeOp) {
	defer s.wg.Done()
	for op := range q {
		s.execStore(op)
	}
}

func (s *Service) execStore(op storeOp) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StoreTimeout)
	err := op.run(ctx)
	cancel()
	if err != nil {
		s.m.storeErrors.Inc()
		s.log.Warn("groups: membership store write failed", "err", err)
	}
	if op.done != nil {
		op.done <- err
	}
}

// ---- the API (any node, or a router) ----

func (s *Service) checkSend(data []byte) error {
	if len(data) > s.cfg.MaxMessageBytes {
		return conn.ErrTooLarge
	}
	return nil
}

func (s *Service) publish(subject string, env []byte, kind string) error {
	if err := s.deps.NC.Publish(subject, env); err != nil {
		return fmt.Errorf("%w: publish %s: %v", conn.ErrUnavailable, subject, err)
	}
	s.m.sends[kind].Inc()
	return nil
}

// SendGroup sends one message to every member of group on every node,
// except excluded ("" for none): one NATS publish.
func (s *Service) SendGroup(_ context.Context, group string, data []byte, binary bool, excluded string) error {
	if !ValidName(group) {
		return ErrInvalidName
	}
	if excluded != "" && !conn.ValidID(excluded) {
		return conn.ErrInvalidID
	}
	if err := s.checkSend(data); err != nil {
		return err
	}
	return s.publish(s.subj.groupSubject(group), encodeSend(data, binary, excluded), kindGroup)
}

// SendUser sends one message to every connection of user.
func (s *Service) SendUser(_ context.Context, user string, data []byte, binary bool) error {
	if !ValidName(user) {
		return ErrInvalidName
	}
	if err := s.checkSend(data); err != nil {
		return err
	}
	return s.publish(s.subj.userSubject(user), encodeSend(data, binary, ""), kindUser)
}

// Broadcast sends one message to every connection of every node.
func (s *Service) Broadcast(_ context.Context, data []byte, binary bool) error {
	if err := s.checkSend(data); err != nil {
		return err
	}
	return s.publish(s.subj.broadcast, encodeSend(data, binary, ""), kindBroadcast)
}

// CloseUser closes every connection of user with code and reason.
func (s *Service) CloseUser(_ context.Context, user string, code int, reason string) error {
	if !ValidName(user) {
		return ErrInvalidName
	}
	if err := rules.CheckClose(code, reason); err != nil {
		return err
	}
	if err := s.deps.NC.Publish(s.subj.userSubject(user), encodeClose(code, reason)); err != nil {
		return fmt.Errorf("%w: publish: %v", conn.ErrUnavailable, err)
	}
	return nil
}

// AddToGroup adds connection id, wherever it lives, to group. Already a
// member: nothing changes. conn.ErrGone if the connection does not exist,
// ErrTooManyGroups at the limit.
func (s *Service) AddToGroup(ctx context.Context, group, id string) error {
	return s.change(ctx, cmdAdd, group, id)
}

// RemoveFromGroup takes connection id, wherever it lives, out of group. Not
// a member: nothing changes. conn.ErrGone if the connection does not exist.
func (s *Service) RemoveFromGroup(ctx context.Context, group, id string) error {
	return s.change(ctx, cmdRemove, group, id)
}

func (s *Service) change(ctx context.Context, cmd, group, id string) error {
	if !ValidName(group) {
		return ErrInvalidName
	}
	if !conn.ValidID(id) {
		return conn.ErrInvalidID
	}
	if s.idx != nil && s.idx.has(id) {
		if cmd == cmdAdd {
			return s.addLocal(ctx, group, id)
		}
		return s.removeLocal(ctx, group, id)
	}
	if s.deps.Remote == nil {
		return conn.ErrGone
	}
	msg := nodecmd.NewRequest(cmd, id)
	msg.Data = []byte(group)
	_, err := s.deps.Remote(ctx, msg)
	// The owner's own words ("… too many groups (max 3)"), as if local.
	return nodecmd.OwnerError(err)
}

// Commands is the lane of membership commands this node answers for its
// own connections; register it on the node's command server. Membership
// changes do not wait behind the node's fence: they only change the index,
// and delivery to the members waits behind it anyway.
func (s *Service) Commands() (nodecmd.Lane, error) {
	if s.idx == nil {
		return nodecmd.Lane{}, ErrNoNode
	}
	return nodecmd.Lane{Name: "membership", Workers: 4, QueueSize: 1024, Timeout: s.cfg.CommandTimeout,
		Handlers: map[string]nodecmd.Handler{
			cmdAdd: func(ctx context.Context, m, _ *nats.Msg) error {
				return s.command(ctx, cmdAdd, m)
			},
			cmdRemove: func(ctx context.Context, m, _ *nats.Msg) error {
				return s.command(ctx, cmdRemove, m)
			},
		}}, nil
}

// command executes a membership change another node sent (the server has
// checked the connection ID).
func (s *Service) command(ctx context.Context, cmd string, m *nats.Msg) error {
	group := string(m.Data)
	if !ValidName(group) {
		return ErrInvalidName
	}
	if cmd == cmdAdd {
		return s.addLocal(ctx, group, m.Header.Get(nodecmd.HdrID))
	}
	return s.removeLocal(ctx, group, m.Header.Get(nodecmd.HdrID))
}

// GroupConnections pages through a group's connections (see Store.Members).
func (s *Service) GroupConnections(ctx context.Context, group, cursor string, limit int) ([]string, string, error) {
	if !ValidName(group) {
		return nil, "", ErrInvalidName
	}
	return s.deps.Store.Members(ctx, KindGroup, group, cursor, limit)
}

// UserConnections pages through a user's connections.
func (s *Service) UserConnections(ctx context.Context, user, cursor string, limit int) ([]string, string, error) {
	if !ValidName(user) {
		return nil, "", ErrInvalidName
	}
	return s.deps.Store.Members(ctx, KindUser, user, cursor, limit)
}

// GroupCount counts a group's connections across the cluster.
func (s *Service) GroupCount(ctx context.Context, group string) (int64, error) {
	if !ValidName(group) {
		return 0, ErrInvalidName
	}
	return s.deps.Store.Count(ctx, KindGroup, group)
}

// UserCount counts a user's connections across the cluster.
func (s *Service) UserCount(ctx context.Context, user string) (int64, error) {
	if !ValidName(user) {
		return 0, ErrInvalidName
	}
	return s.deps.Store.Count(ctx, KindUser, user)
}
