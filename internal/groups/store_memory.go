package groups

import (
	"context"
	"slices"
	"sync"
)

// MemoryStore is a Store in process memory, for a single node and tests.
type MemoryStore struct {
	mu     sync.Mutex
	sets   [2]map[string]map[string]struct{} // by Kind: name → connection IDs
	byConn map[string]map[string]struct{}    // connection ID → groups
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{
		sets:   [2]map[string]map[string]struct{}{{}, {}},
		byConn: map[string]map[string]struct{}{},
	}
}

func addTo(m map[string]map[string]struct{}, key, v string) {
	s := m[key]
	if s == nil {
		s = map[string]struct{}{}
		m[key] = s
	}
	s[v] = struct{}{}
}

func removeFrom(m map[string]map[string]struct{}, key, v string) {
	if s := m[key]; s != nil {
		delete(s, v)
		if len(s) == 0 {
			delete(m, key)
		}
	}
}

// Add implements Store.
func (m *MemoryStore) Add(_ context.Context, id, user string, groups ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if user != "" {
		addTo(m.sets[KindUser], user, id)
	}
	for _, g := range groups {
		addTo(m.sets[KindGroup], g, id)
		addTo(m.byConn, id, g)
	}
	return nil
}

// RemoveGroups implements Store.
func (m *MemoryStore) RemoveGroups(_ context.Context, id string, groups ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range groups {
		removeFrom(m.sets[KindGroup], g, id)
		removeFrom(m.byConn, id, g)
	}
	return nil
}

// RemoveConn implements Store.
func (m *MemoryStore) RemoveConn(_ context.Context, id, user string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for g := range m.byConn[id] {
		removeFrom(m.sets[KindGroup], g, id)
	}
	delete(m.byConn, id)
	if user != "" {
		removeFrom(m.sets[KindUser], user, id)
	}
	return nil
}

// ConnGroups implements Store.
func (m *MemoryStore) ConnGroups(_ context.Context, id string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.byConn[id]))
	for g := range m.byConn[id] {
		out = append(out, g)
	}
	slices.Sort(out)
	return out, nil
}

// Members implements Store. The cursor is the last ID of the previous page:
// IDs are walked in order, so a page holds exactly limit IDs.
func (m *MemoryStore) Members(_ context.Context, kind Kind, name, cursor string, limit int) ([]string, string, error) {
	if limit <= 0 {
		limit = defaultPage
	}
	m.mu.Lock()
	ids := make([]string, 0, len(m.sets[kind][name]))
	for id := range m.sets[kind][name] {
		if id > cursor {
			ids = append(ids, id)
		}
	}
	m.mu.Unlock()
	slices.Sort(ids)
	if len(ids) <= limit {
		return ids, "", nil
	}
	ids = ids[:limit]
	return ids, ids[limit-1], nil
}

// Count implements Store.
func (m *MemoryStore) Count(_ context.Context, kind Kind, name string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.sets[kind][name])), nil
}
