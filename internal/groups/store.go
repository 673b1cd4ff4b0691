package groups

import (
	"context"

	"github.com/switchboardgw/switchboard/internal/api"
)

// Kind says which index a listing or count reads.
type Kind uint8

const (
	// KindGroup: the connections in a group.
	KindGroup Kind = iota
	// KindUser: the connections of a user.
	KindUser
)

func (k Kind) String() string {
	if k == KindUser {
		return "user"
	}
	return "group"
}

// Store is the cluster-wide membership index behind listing and counting: who
// is in a group, which connections a user has. Delivery never reads it (each
// node delivers from its own index); it may briefly lag the nodes.
// Implementations: RedisStore (a cluster) and MemoryStore (a single node).
// Both pass the same conformance suite. Names passed in are valid (see
// ValidName); IDs are connection IDs.
type Store interface {
	// Add records connection id as user's (if user is not "") and as a
	// member of groups. Idempotent.
	Add(ctx context.Context, id, user string, groups ...string) error
	// RemoveGroups takes id out of groups. Missing memberships are ignored.
	RemoveGroups(ctx context.Context, id string, groups ...string) error
	// RemoveConn forgets a closed connection: every group it is in, and
	// user's set (if user is not ""). Safe to repeat.
	RemoveConn(ctx context.Context, id, user string) error
	// ConnGroups lists the groups id is in.
	ConnGroups(ctx context.Context, id string) ([]string, error)
	// Members pages through a group's or a user's connections: start with
	// cursor "", stop when the returned cursor is "". limit is a hint (Redis
	// SSCAN COUNT): a page may hold a few more or fewer IDs, or none, before
	// the end. An ID present during the whole walk is returned at least once.
	Members(ctx context.Context, kind Kind, name, cursor string, limit int) ([]string, string, error)
	// Count counts a group's or a user's connections.
	Count(ctx context.Context, kind Kind, name string) (int64, error)
}

// ErrBadCursor: a listing cursor this store did not hand out.
var ErrBadCursor = api.ErrInvalidCursor
