package cluster

import "time"

// LeaseAge is the time since the start of the last renewal that left the
// lease held, or -1 if this process never held it (the web console shows
// it: a growing age means renewals fail).
func (n *Node) LeaseAge() time.Duration {
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.held {
		return -1
	}
	return now.Sub(n.renewedAt)
}
