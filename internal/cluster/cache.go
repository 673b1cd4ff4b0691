package cluster

import "sync"

// ownerCache maps connection ID → owner node, bounded. A connection never
// moves, so an entry is never stale in the sense of pointing at the wrong
// live node; it is dropped when the connection turns out to be gone.
//
// Two generations approximate LRU cheaply: entries go into cur; when cur is
// full it becomes old and a new cur starts; a hit in old is promoted. So at
// most 2×half entries are kept and recently used ones survive.
type ownerCache struct {
	mu   sync.Mutex
	half int
	cur  map[string]string
	old  map[string]string
}

func newOwnerCache(size int) *ownerCache {
	half := max(size/2, 1)
	return &ownerCache{half: half, cur: make(map[string]string, half)}
}

func (c *ownerCache) get(id string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.cur[id]; ok {
		return n, true
	}
	if n, ok := c.old[id]; ok {
		c.putLocked(id, n)
		return n, true
	}
	return "", false
}

func (c *ownerCache) put(id, node string) {
	c.mu.Lock()
	c.putLocked(id, node)
	c.mu.Unlock()
}

func (c *ownerCache) putLocked(id, node string) {
	if len(c.cur) >= c.half {
		c.old = c.cur
		c.cur = make(map[string]string, c.half)
	}
	c.cur[id] = node
}

func (c *ownerCache) drop(id string) {
	c.mu.Lock()
	delete(c.cur, id)
	delete(c.old, id)
	c.mu.Unlock()
}

func (c *ownerCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.old)
}
