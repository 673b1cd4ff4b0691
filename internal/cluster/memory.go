package cluster

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// tombstoneTTL is how long a removed node is remembered, so that a node that
// was paused, declared dead and cleaned up learns it was revoked.
const tombstoneTTL = 24 * time.Hour

// MemoryRegistry is a Registry in process memory: for a single node, and as
// the reference the Redis implementation is tested against.
type MemoryRegistry struct {
	now func() time.Time

	mu     sync.Mutex
	conns  map[string]ConnRecord
	nodes  map[string]map[string]struct{} // node → connection IDs
	leases map[string]time.Time           // node → expiry
	dead   map[string]time.Time           // node → when removed
	incs   map[string]string              // node → incarnation token of the lease holder
	locks  map[string]memLock             // node → cleanup lock
}

type memLock struct {
	holder  string
	expires time.Time
}

var _ Registry = (*MemoryRegistry)(nil)

// NewMemoryRegistry returns an empty registry. now is its clock; nil means
// time.Now.
func NewMemoryRegistry(now func() time.Time) *MemoryRegistry {
	if now == nil {
		now = time.Now
	}
	return &MemoryRegistry{
		now:    now,
		conns:  make(map[string]ConnRecord),
		nodes:  make(map[string]map[string]struct{}),
		leases: make(map[string]time.Time),
		dead:   make(map[string]time.Time),
		incs:   make(map[string]string),
		locks:  make(map[string]memLock),
	}
}

// Register implements Registry.
func (m *MemoryRegistry) Register(ctx context.Context, recs ...ConnRecord) error {
	for _, r := range recs {
		if err := checkRecord(r); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		set := m.nodes[r.Node]
		if set == nil {
			set = make(map[string]struct{})
			m.nodes[r.Node] = set
		}
		set[r.ID] = struct{}{}
		r.Principal = append([]byte(nil), r.Principal...)
		if len(r.Principal) == 0 {
			r.Principal = nil
		}
		m.conns[r.ID] = r
	}
	return nil
}

// Unregister implements Registry.
func (m *MemoryRegistry) Unregister(ctx context.Context, node string, ids ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	set := m.nodes[node]
	for _, id := range ids {
		if r, ok := m.conns[id]; ok && r.Node == node {
			delete(m.conns, id)
		}
		delete(set, id)
	}
	if set != nil && len(set) == 0 {
		delete(m.nodes, node)
	}
	return nil
}

// Lookup implements Registry.
func (m *MemoryRegistry) Lookup(ctx context.Context, id string) (ConnRecord, error) {
	if !conn.ValidID(id) {
		return ConnRecord{}, fmt.Errorf("lookup %q: %w", id, conn.ErrInvalidID)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.conns[id]
	if !ok {
		return ConnRecord{}, fmt.Errorf("lookup %s: %w", id, conn.ErrGone)
	}
	r.Principal = append([]byte(nil), r.Principal...)
	if len(r.Principal) == 0 {
		r.Principal = nil
	}
	return r, nil
}

// RenewLease implements Registry.
func (m *MemoryRegistry) RenewLease(ctx context.Context, node string, inc Incarnation, ttl time.Duration) (LeaseState, error) {
	if !ValidNodeID(node) {
		return 0, fmt.Errorf("renew lease %q: %w", node, ErrInvalidNodeID)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	exp, had := m.leases[node]
	cur := m.incs[node]
	if _, dead := m.dead[node]; dead {
		delete(m.dead, node)
		m.leases[node] = now.Add(ttl)
		if cur == inc.Token {
			return LeaseRevoked, nil
		}
		m.incs[node] = inc.Token // an earlier incarnation was cleaned up
		return LeaseLost, nil
	}
	if had && cur != inc.Token {
		switch {
		case !inc.New:
			return LeaseSuperseded, nil
		case m.lockHeld(node, now):
			return LeaseCleaning, nil
		}
		if !exp.Before(now) {
			m.leases[node] = now.Add(-time.Millisecond) // expired for its cleanup
		}
		return LeasePrevious, nil
	}
	if had && !exp.Before(now) {
		m.leases[node] = now.Add(ttl)
		return LeaseHeld, nil
	}
	if had && m.lockHeld(node, now) {
		return LeaseCleaning, nil
	}
	m.leases[node] = now.Add(ttl)
	m.incs[node] = inc.Token
	return LeaseLost, nil
}

func (m *MemoryRegistry) lockHeld(node string, now time.Time) bool {
	l, ok := m.locks[node]
	return ok && l.expires.After(now)
}

// NodeAlive implements Registry.
func (m *MemoryRegistry) NodeAlive(ctx context.Context, node string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	exp, ok := m.leases[node]
	return ok && !exp.Before(m.now()), nil
}

// ReleaseLease implements Registry.
func (m *MemoryRegistry) ReleaseLease(ctx context.Context, node string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range m.nodes[node] {
		if r, ok := m.conns[id]; ok && r.Node == node {
			delete(m.conns, id)
		}
	}
	delete(m.nodes, node)
	delete(m.leases, node)
	delete(m.incs, node)
	return nil
}

// ExpiredNodes implements Registry.
func (m *MemoryRegistry) ExpiredNodes(ctx context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var out []string
	for n, exp := range m.leases {
		if exp.Before(now) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// AcquireCleanup implements Registry.
func (m *MemoryRegistry) AcquireCleanup(ctx context.Context, node, holder string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	exp, ok := m.leases[node]
	if !ok || !exp.Before(now) {
		return false, nil
	}
	if l, held := m.locks[node]; held && l.expires.After(now) && l.holder != holder {
		return false, nil
	}
	m.locks[node] = memLock{holder: holder, expires: now.Add(ttl)}
	return true, nil
}

// ReleaseCleanup implements Registry.
func (m *MemoryRegistry) ReleaseCleanup(ctx context.Context, node, holder string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.locks[node]; ok && l.holder == holder {
		delete(m.locks, node)
	}
	return nil
}

// RemoveNode implements Registry.
func (m *MemoryRegistry) RemoveNode(ctx context.Context, node string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if exp, ok := m.leases[node]; ok && !exp.Before(now) {
		return false, nil
	}
	for id := range m.nodes[node] {
		if r, ok := m.conns[id]; ok && r.Node == node {
			delete(m.conns, id)
		}
	}
	delete(m.nodes, node)
	delete(m.leases, node)
	delete(m.locks, node)
	m.dead[node] = now
	for n, at := range m.dead {
		if now.Sub(at) > tombstoneTTL {
			delete(m.dead, n)
			if _, ok := m.leases[n]; !ok {
				delete(m.incs, n)
			}
		}
	}
	return true, nil
}

// NodeConns implements Registry. The cursor is the last ID returned: IDs are
// walked in order, so removals during the walk are harmless.
func (m *MemoryRegistry) NodeConns(ctx context.Context, node, cursor string, limit int) ([]ConnRecord, string, error) {
	if limit <= 0 {
		limit = defaultPageSize
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]string, 0, len(m.nodes[node]))
	for id := range m.nodes[node] {
		if id > cursor {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	next := ""
	if len(ids) > limit {
		ids = ids[:limit]
		next = ids[limit-1]
	}
	recs := make([]ConnRecord, len(ids))
	for i, id := range ids {
		r, ok := m.conns[id]
		if !ok || r.Node != node {
			r = ConnRecord{ID: id, Node: node}
		}
		recs[i] = r
	}
	return recs, next, nil
}

// CountNode implements Registry.
func (m *MemoryRegistry) CountNode(ctx context.Context, node string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.nodes[node])), nil
}

// CountAll implements Registry.
func (m *MemoryRegistry) CountAll(ctx context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for node := range m.leases {
		n += int64(len(m.nodes[node]))
	}
	return n, nil
}

// Nodes implements Registry.
func (m *MemoryRegistry) Nodes(ctx context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.leases))
	for node := range m.leases {
		out = append(out, node)
	}
	sort.Strings(out)
	return out, nil
}

// defaultPageSize is NodeConns' page size when the caller gives none.
const defaultPageSize = 500

// checkRecord rejects a record whose ID or node could corrupt keys or subjects.
func checkRecord(r ConnRecord) error {
	if !conn.ValidID(r.ID) {
		return fmt.Errorf("register %q: %w", r.ID, conn.ErrInvalidID)
	}
	if !ValidNodeID(r.Node) {
		return fmt.Errorf("register %s on %q: %w", r.ID, r.Node, ErrInvalidNodeID)
	}
	return nil
}
