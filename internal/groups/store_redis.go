package groups

import (
	swcluster "github.com/switchboardgw/switchboard/internal/cluster"

	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// defaultPage is the page size when a listing asks for none.
const defaultPage = 100

// RedisStoreConfig configures a RedisStore.
type RedisStoreConfig struct {
	// KeyPrefix starts every key, so several deployments (or tests) can share
	// one Redis. Characters [A-Za-z0-9_.:-] only. Default "switchboard".
	KeyPrefix string
}

// Validate rejects a prefix with characters that could change a key's hash tag.
func (c RedisStoreConfig) Validate() error {
	if err := swcluster.ValidKeyPrefix(c.KeyPrefix); err != nil {
		return fmt.Errorf("groups: %w", err)
	}
	return nil
}

// RedisStore is a Store in Redis through a go-redis UniversalClient
// (standalone, Sentinel or Cluster). Keys, each its own hash tag so a busy
// group does not pin a user's keys to its slot:
//
//	<prefix>:grp:{<token>}  set of connection IDs in a group
//	<prefix>:usr:{<token>}  set of connection IDs of a user
//	<prefix>:cg:{<id>}      set of group names a connection is in
//
// Tokens (see Token) never contain braces. Steps touching several keys are
// pipelined, not atomic: every step is idempotent and RemoveConn is safe to repeat.
type RedisStore struct {
	c      redis.UniversalClient
	prefix string
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a RedisStore on client.
func NewRedisStore(cfg RedisStoreConfig, client redis.UniversalClient) (*RedisStore, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if client == nil {
		return nil, fmt.Errorf("groups: redis store: nil client")
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = "switchboard"
	}
	return &RedisStore{c: client, prefix: cfg.KeyPrefix}, nil
}

func (r *RedisStore) setKey(kind Kind, name string) string {
	if kind == KindUser {
		return r.prefix + ":usr:{" + Token(name) + "}"
	}
	return r.prefix + ":grp:{" + Token(name) + "}"
}

func (r *RedisStore) connKey(id string) string { return r.prefix + ":cg:{" + id + "}" }

// Add implements Store.
func (r *RedisStore) Add(ctx context.Context, id, user string, groups ...string) error {
	if user == "" && len(groups) == 0 {
		return nil
	}
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		if user != "" {
			p.SAdd(ctx, r.setKey(KindUser, user), id)
		}
		for _, g := range groups {
			p.SAdd(ctx, r.setKey(KindGroup, g), id)
		}
		if len(groups) > 0 {
			p.SAdd(ctx, r.connKey(id), toAny(groups)...)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("groups: redis add %s: %w", id, err)
	}
	return nil
}

// RemoveGroups implements Store.
func (r *RedisStore) RemoveGroups(ctx context.Context, id string, groups ...string) error {
	if len(groups) == 0 {
		return nil
	}
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, g := range groups {
			p.SRem(ctx, r.setKey(KindGroup, g), id)
		}
		p.SRem(ctx, r.connKey(id), toAny(groups)...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("groups: redis remove %s: %w", id, err)
	}
	return nil
}

// RemoveConn implements Store. The connection's group set is read first and
// deleted last, so a failure part-way leaves it for a retry to finish.
func (r *RedisStore) RemoveConn(ctx context.Context, id, user string) error {
	groups, err := r.ConnGroups(ctx, id)
	if err != nil {
		return err
	}
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, g := range groups {
			p.SRem(ctx, r.setKey(KindGroup, g), id)
		}
		if user != "" {
			p.SRem(ctx, r.setKey(KindUser, user), id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("groups: redis remove connection %s: %w", id, err)
	}
	if err := r.c.Del(ctx, r.connKey(id)).Err(); err != nil {
		return fmt.Errorf("groups: redis remove connection %s: %w", id, err)
	}
	return nil
}

// ConnGroups implements Store.
func (r *RedisStore) ConnGroups(ctx context.Context, id string) ([]string, error) {
	groups, err := r.c.SMembers(ctx, r.connKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("groups: redis groups of %s: %w", id, err)
	}
	return groups, nil
}

// Members implements Store with SSCAN: the cursor is Redis's.
func (r *RedisStore) Members(ctx context.Context, kind Kind, name, cursor string, limit int) ([]string, string, error) {
	if limit <= 0 {
		limit = defaultPage
	}
	var cur uint64
	if cursor != "" {
		var err error
		if cur, err = strconv.ParseUint(cursor, 10, 64); err != nil || cur == 0 {
			return nil, "", ErrBadCursor
		}
	}
	ids, next, err := r.c.SScan(ctx, r.setKey(kind, name), cur, "", int64(limit)).Result()
	if err != nil {
		return nil, "", fmt.Errorf("groups: redis list %s %q: %w", kind, name, err)
	}
	if next == 0 {
		return ids, "", nil
	}
	return ids, strconv.FormatUint(next, 10), nil
}

// Count implements Store.
func (r *RedisStore) Count(ctx context.Context, kind Kind, name string) (int64, error) {
	n, err := r.c.SCard(ctx, r.setKey(kind, name)).Result()
	if err != nil {
		return 0, fmt.Errorf("groups: redis count %s %q: %w", kind, name, err)
	}
	return n, nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
