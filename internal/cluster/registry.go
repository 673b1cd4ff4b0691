package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ConnRecord is what the registry knows about one connection: which node owns
// it and who connected. Connections never move between nodes.
type ConnRecord struct {
	ID          string          `json:"id"`
	Node        string          `json:"n"`
	ConnectedAt time.Time       `json:"t"`
	SourceIP    string          `json:"ip,omitempty"`
	UserAgent   string          `json:"ua,omitempty"`
	UserID      string          `json:"u,omitempty"`
	Principal   json.RawMessage `json:"p,omitempty"`
}

// LeaseState is what a lease renewal found before it renewed.
type LeaseState int

const (
	// LeaseHeld: the lease was current; nothing to do.
	LeaseHeld LeaseState = iota
	// LeaseLost: the lease had expired or was absent (first start, or Redis
	// came back empty). It is held again now; the node must re-assert its
	// connections.
	LeaseLost
	// LeaseRevoked: a janitor declared the node dead and orphaned its
	// connections (DISCONNECT was sent for them). The lease is held again
	// now, fresh; the node must drop the connections it still has.
	LeaseRevoked
	// LeaseCleaning: the lease expired and a janitor is cleaning up the node
	// right now. Not renewed; the node stays fenced and tries again.
	LeaseCleaning
	// LeasePrevious: a process that has not held the lease yet found the
	// lease of an earlier incarnation of its node ID (a fixed -node-id
	// restarted before the old lease expired). Not taken; the lease was
	// expired so that the caller can run the janitor's cleanup of the node
	// ID (DISCONNECT for everything the earlier process left), then renew
	// again: it learns LeaseLost once the cleanup removed the node.
	LeasePrevious
	// LeaseSuperseded: a later incarnation of this node ID took the lease
	// over (and announces this process's connections). Not renewed; the
	// process must drop its connections without DISCONNECT and serve
	// nothing.
	LeaseSuperseded
)

// Incarnation is one process start's claim on a node ID: with a fixed node
// ID, a restarted process must not mistake its predecessor's lease (and
// connections) for its own.
type Incarnation struct {
	// Token is random per process start (NewIncarnation). Registries store
	// it with the lease.
	Token string
	// New: this process has not held the lease yet, so a lease of another
	// token is an earlier incarnation's (LeasePrevious), not a later one's
	// (LeaseSuperseded).
	New bool
}

// String names the state; used as a metric label.
func (s LeaseState) String() string {
	switch s {
	case LeaseHeld:
		return "held"
	case LeaseLost:
		return "lost"
	case LeaseRevoked:
		return "revoked"
	case LeaseCleaning:
		return "cleaning"
	case LeasePrevious:
		return "previous"
	case LeaseSuperseded:
		return "superseded"
	}
	return "unknown"
}

// ErrInvalidNodeID: a node ID that is not safe as a NATS subject token and a
// Redis key part. See ValidNodeID.
var ErrInvalidNodeID = errors.New("invalid node id")

// Registry records connection ownership and node leases. Implementations:
// RedisRegistry (shared by a cluster) and MemoryRegistry (a single node, and
// tests). Both pass the same conformance suite.
//
// Times (lease expiry) are the registry's own clock (Redis TIME), so nodes
// with skewed clocks agree on who is dead.
type Registry interface {
	// Register records connections as owned by rec.Node. Idempotent; records
	// may belong to different nodes.
	Register(ctx context.Context, recs ...ConnRecord) error
	// Unregister removes node's connections ids. Missing ones are ignored.
	Unregister(ctx context.Context, node string, ids ...string) error
	// Lookup returns a connection's record, or conn.ErrGone.
	Lookup(ctx context.Context, id string) (ConnRecord, error)

	// RenewLease extends node's lease, for incarnation inc, to ttl from now
	// and reports what it found (see LeaseState). LeaseCleaning,
	// LeasePrevious and LeaseSuperseded do not renew it. A tombstone left by
	// RemoveNode means LeaseRevoked for the incarnation that was removed, a
	// fresh start (LeaseLost) for any other.
	RenewLease(ctx context.Context, node string, inc Incarnation, ttl time.Duration) (LeaseState, error)
	// NodeAlive reports whether node holds an unexpired lease.
	NodeAlive(ctx context.Context, node string) (bool, error)
	// ReleaseLease removes node's lease and its (empty or abandoned)
	// connection set on a graceful exit. Records of connections still in the
	// set are deleted too: call it only once the node closed them all.
	ReleaseLease(ctx context.Context, node string) error
	// ExpiredNodes lists nodes whose lease has expired and that have not been
	// removed yet.
	ExpiredNodes(ctx context.Context) ([]string, error)

	// AcquireCleanup takes the cleanup lock of an expired node for holder, for
	// ttl. It succeeds for exactly one holder at a time, only while node's
	// lease is expired; the holder calling again extends it.
	AcquireCleanup(ctx context.Context, node, holder string, ttl time.Duration) (bool, error)
	// ReleaseCleanup gives the lock up if holder has it.
	ReleaseCleanup(ctx context.Context, node, holder string) error
	// RemoveNode forgets an expired node: its lease, its connection set and its
	// cleanup lock, and tombstones it so that it learns (LeaseRevoked) if it
	// comes back. It returns false and changes nothing if the node renewed
	// its lease meanwhile.
	RemoveNode(ctx context.Context, node string) (bool, error)

	// NodeConns pages through node's connections: start with cursor "", stop
	// when the returned cursor is "". limit is a hint (SSCAN's COUNT): a page
	// may hold a few more or fewer records, or none, before the end. A connection present during the whole
	// walk is returned at least once. Records whose details are missing come
	// back with only ID and Node set.
	NodeConns(ctx context.Context, node, cursor string, limit int) ([]ConnRecord, string, error)
	// CountNode counts node's connections.
	CountNode(ctx context.Context, node string) (int64, error)
	// CountAll counts connections on every node that has a lease (current or
	// expired and not yet cleaned up).
	CountAll(ctx context.Context) (int64, error)
	// Nodes lists, sorted, the nodes CountAll counts: those with a lease,
	// current or expired and not yet cleaned up.
	Nodes(ctx context.Context) ([]string, error)
}
