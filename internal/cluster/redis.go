package cluster

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// Scripts for the steps that must be atomic. Every key a script touches
// shares the {nodes} hash tag, so they run on Redis Cluster too.
var (
	//go:embed lua/renew.lua
	renewSrc string
	//go:embed lua/alive.lua
	aliveSrc string
	//go:embed lua/expired.lua
	expiredSrc string
	//go:embed lua/acquire.lua
	acquireSrc string
	//go:embed lua/release.lua
	releaseSrc string
	//go:embed lua/remove.lua
	removeSrc string

	renewScript   = redis.NewScript(renewSrc)
	aliveScript   = redis.NewScript(aliveSrc)
	expiredScript = redis.NewScript(expiredSrc)
	acquireScript = redis.NewScript(acquireSrc)
	releaseScript = redis.NewScript(releaseSrc)
	removeScript  = redis.NewScript(removeSrc)
)

// RedisConfig configures a RedisRegistry.
type RedisConfig struct {
	// KeyPrefix starts every key, so that several deployments (or tests) can
	// share one Redis. Characters [A-Za-z0-9_.:-] only. Default "switchboard".
	KeyPrefix string
}

// Validate checks the prefix: braces would change the hash tags that keep
// multi-key scripts in one Redis Cluster slot.
func (c RedisConfig) Validate() error {
	if err := ValidKeyPrefix(c.KeyPrefix); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	return nil
}

// ValidKeyPrefix accepts a Redis key prefix of [A-Za-z0-9_.:-]: no braces,
// which would change the hash tags that keep multi-key scripts in one
// Redis Cluster slot. Every Redis store of the project checks it.
func ValidKeyPrefix(p string) error {
	for i := 0; i < len(p); i++ {
		ch := p[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9',
			ch == '_', ch == '.', ch == ':', ch == '-':
		default:
			return fmt.Errorf("redis key prefix %q: character %q not allowed", p, ch)
		}
	}
	return nil
}

func (c RedisConfig) withDefaults() RedisConfig {
	if c.KeyPrefix == "" {
		c.KeyPrefix = "switchboard"
	}
	return c
}

// RedisRegistry is a Registry in Redis, through a go-redis UniversalClient:
// standalone, Sentinel or Cluster. See docs/cluster.md for the keys.
type RedisRegistry struct {
	c      redis.UniversalClient
	prefix string
	leases string // zset node → lease expiry (ms, Redis clock)
	dead   string // zset node → when removed (ms): tombstones
	incs   string // hash node → incarnation token of the lease holder
}

var _ Registry = (*RedisRegistry)(nil)

// NewRedisRegistry returns a registry on client. The caller owns client.
func NewRedisRegistry(cfg RedisConfig, client redis.UniversalClient) (*RedisRegistry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if client == nil {
		return nil, errors.New("cluster: redis registry needs a client")
	}
	cfg = cfg.withDefaults()
	p := cfg.KeyPrefix
	return &RedisRegistry{
		c:      client,
		prefix: p,
		leases: p + ":{nodes}:leases",
		dead:   p + ":{nodes}:dead",
		incs:   p + ":{nodes}:incarnations",
	}, nil
}

func (r *RedisRegistry) connKey(id string) string { return r.prefix + ":conn:" + id }

// setKey is a node's set of connection IDs; the hash tag spreads nodes over
// slots.
func (r *RedisRegistry) setKey(node string) string { return r.prefix + ":node:{" + node + "}:conns" }

// lockKey shares the {nodes} tag with the leases so that acquire and renew can
// look at both atomically.
func (r *RedisRegistry) lockKey(node string) string { return r.prefix + ":{nodes}:cleanup:" + node }

// Register implements Registry: one pipeline for any number of records. The
// node set is written before the record so that a half-done write leaves at
// worst a set member without details (which cleanup handles), never a record
// that cleanup cannot find.
func (r *RedisRegistry) Register(ctx context.Context, recs ...ConnRecord) error {
	if len(recs) == 0 {
		return nil
	}
	byNode := make(map[string][]any, 1)
	vals := make([][]byte, len(recs))
	for i, rec := range recs {
		if err := checkRecord(rec); err != nil {
			return err
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("register %s: encode: %w", rec.ID, err)
		}
		vals[i] = b
		byNode[rec.Node] = append(byNode[rec.Node], rec.ID)
	}
	pipe := r.c.Pipeline()
	for node, ids := range byNode {
		pipe.SAdd(ctx, r.setKey(node), ids...)
	}
	for i, rec := range recs {
		pipe.Set(ctx, r.connKey(rec.ID), vals[i], 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("register %d connections: %w", len(recs), err)
	}
	return nil
}

// Unregister implements Registry: record first, then set membership (the
// reverse of Register).
func (r *RedisRegistry) Unregister(ctx context.Context, node string, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	if !ValidNodeID(node) {
		return fmt.Errorf("unregister on %q: %w", node, ErrInvalidNodeID)
	}
	members := make([]any, 0, len(ids))
	pipe := r.c.Pipeline()
	for _, id := range ids {
		if !conn.ValidID(id) {
			continue // never registered: nothing to remove
		}
		pipe.Del(ctx, r.connKey(id))
		members = append(members, id)
	}
	if len(members) == 0 {
		return nil
	}
	pipe.SRem(ctx, r.setKey(node), members...)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("unregister %d connections: %w", len(members), err)
	}
	return nil
}

// Lookup implements Registry.
func (r *RedisRegistry) Lookup(ctx context.Context, id string) (ConnRecord, error) {
	if !conn.ValidID(id) {
		return ConnRecord{}, fmt.Errorf("lookup %q: %w", id, conn.ErrInvalidID)
	}
	b, err := r.c.Get(ctx, r.connKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return ConnRecord{}, fmt.Errorf("lookup %s: %w", id, conn.ErrGone)
	}
	if err != nil {
		return ConnRecord{}, fmt.Errorf("lookup %s: %w", id, err)
	}
	var rec ConnRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return ConnRecord{}, fmt.Errorf("lookup %s: decode: %w", id, err)
	}
	return rec, nil
}

// RenewLease implements Registry.
func (r *RedisRegistry) RenewLease(ctx context.Context, node string, inc Incarnation, ttl time.Duration) (LeaseState, error) {
	if !ValidNodeID(node) {
		return 0, fmt.Errorf("renew lease %q: %w", node, ErrInvalidNodeID)
	}
	isNew := "0"
	if inc.New {
		isNew = "1"
	}
	n, err := renewScript.Run(ctx, r.c, []string{r.leases, r.dead, r.lockKey(node), r.incs}, node, ttl.Milliseconds(), inc.Token, isNew).Int()
	if err != nil {
		return 0, fmt.Errorf("renew lease %s: %w", node, err)
	}
	switch n {
	case 0:
		return LeaseHeld, nil
	case 1:
		return LeaseLost, nil
	case 2:
		return LeaseRevoked, nil
	case 3:
		return LeaseCleaning, nil
	case 4:
		return LeasePrevious, nil
	case 5:
		return LeaseSuperseded, nil
	}
	return 0, fmt.Errorf("renew lease %s: unexpected script result %d", node, n)
}

// NodeAlive implements Registry.
func (r *RedisRegistry) NodeAlive(ctx context.Context, node string) (bool, error) {
	n, err := aliveScript.Run(ctx, r.c, []string{r.leases}, node).Int()
	if err != nil {
		return false, fmt.Errorf("node alive %s: %w", node, err)
	}
	return n == 1, nil
}

// ReleaseLease implements Registry.
func (r *RedisRegistry) ReleaseLease(ctx context.Context, node string) error {
	if !ValidNodeID(node) {
		return fmt.Errorf("release lease %q: %w", node, ErrInvalidNodeID)
	}
	if err := r.dropNodeConns(ctx, node); err != nil {
		return fmt.Errorf("release lease %s: %w", node, err)
	}
	pipe := r.c.TxPipeline() // same slot ({nodes})
	pipe.ZRem(ctx, r.leases, node)
	pipe.HDel(ctx, r.incs, node)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("release lease %s: %w", node, err)
	}
	return nil
}

// dropNodeConns deletes the records still in node's set, then the set.
func (r *RedisRegistry) dropNodeConns(ctx context.Context, node string) error {
	key := r.setKey(node)
	var cursor uint64
	for {
		ids, next, err := r.c.SScan(ctx, key, cursor, "", defaultPageSize).Result()
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			pipe := r.c.Pipeline()
			for _, id := range ids {
				pipe.Del(ctx, r.connKey(id))
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	return r.c.Del(ctx, key).Err()
}

// ExpiredNodes implements Registry.
func (r *RedisRegistry) ExpiredNodes(ctx context.Context) ([]string, error) {
	nodes, err := expiredScript.Run(ctx, r.c, []string{r.leases}).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("expired nodes: %w", err)
	}
	return nodes, nil
}

// AcquireCleanup implements Registry.
func (r *RedisRegistry) AcquireCleanup(ctx context.Context, node, holder string, ttl time.Duration) (bool, error) {
	n, err := acquireScript.Run(ctx, r.c, []string{r.leases, r.lockKey(node)}, node, holder, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("acquire cleanup of %s: %w", node, err)
	}
	return n == 1, nil
}

// ReleaseCleanup implements Registry.
func (r *RedisRegistry) ReleaseCleanup(ctx context.Context, node, holder string) error {
	if err := releaseScript.Run(ctx, r.c, []string{r.lockKey(node)}, holder).Err(); err != nil {
		return fmt.Errorf("release cleanup of %s: %w", node, err)
	}
	return nil
}

// RemoveNode implements Registry.
func (r *RedisRegistry) RemoveNode(ctx context.Context, node string) (bool, error) {
	if !ValidNodeID(node) {
		return false, fmt.Errorf("remove node %q: %w", node, ErrInvalidNodeID)
	}
	n, err := removeScript.Run(ctx, r.c, []string{r.leases, r.dead, r.lockKey(node), r.incs}, node, tombstoneTTL.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("remove node %s: %w", node, err)
	}
	if n == 0 {
		return false, nil
	}
	// The lease is gone, so nobody adds to the set any more: what remains
	// (normally nothing, the janitor emptied it) can go.
	if err := r.dropNodeConns(ctx, node); err != nil {
		return true, fmt.Errorf("remove node %s: records: %w", node, err)
	}
	return true, nil
}

// NodeConns implements Registry, with SSCAN's cursor.
func (r *RedisRegistry) NodeConns(ctx context.Context, node, cursor string, limit int) ([]ConnRecord, string, error) {
	if limit <= 0 {
		limit = defaultPageSize
	}
	var cur uint64
	if cursor != "" {
		var err error
		if cur, err = strconv.ParseUint(cursor, 10, 64); err != nil {
			return nil, "", fmt.Errorf("node conns %s: bad cursor %q", node, cursor)
		}
	}
	ids, next, err := r.c.SScan(ctx, r.setKey(node), cur, "", int64(limit)).Result()
	if err != nil {
		return nil, "", fmt.Errorf("node conns %s: %w", node, err)
	}
	nextCursor := ""
	if next != 0 {
		nextCursor = strconv.FormatUint(next, 10)
	}
	if len(ids) == 0 {
		return nil, nextCursor, nil
	}
	ids = dedupe(ids) // SSCAN may repeat a member
	pipe := r.c.Pipeline()
	gets := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		gets[i] = pipe.Get(ctx, r.connKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, "", fmt.Errorf("node conns %s: records: %w", node, err)
	}
	recs := make([]ConnRecord, len(ids))
	for i, id := range ids {
		recs[i] = ConnRecord{ID: id, Node: node}
		b, err := gets[i].Bytes()
		if err != nil {
			continue // set member without details: half-done write
		}
		var rec ConnRecord
		if json.Unmarshal(b, &rec) == nil && rec.Node == node {
			recs[i] = rec
		}
	}
	return recs, nextCursor, nil
}

func dedupe(ids []string) []string {
	seen := make(map[string]struct{}, len(ids))
	out := ids[:0]
	for _, id := range ids {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}

// CountNode implements Registry.
func (r *RedisRegistry) CountNode(ctx context.Context, node string) (int64, error) {
	n, err := r.c.SCard(ctx, r.setKey(node)).Result()
	if err != nil {
		return 0, fmt.Errorf("count %s: %w", node, err)
	}
	return n, nil
}

// Nodes implements Registry: the leases' members (a node per edge, so a
// short list), sorted.
func (r *RedisRegistry) Nodes(ctx context.Context) ([]string, error) {
	nodes, err := r.c.ZRange(ctx, r.leases, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}
	slices.Sort(nodes)
	return nodes, nil
}

// CountAll implements Registry: one SCARD per known node, pipelined, instead
// of a SCAN over the keyspace.
func (r *RedisRegistry) CountAll(ctx context.Context) (int64, error) {
	nodes, err := r.c.ZRange(ctx, r.leases, 0, -1).Result()
	if err != nil {
		return 0, fmt.Errorf("count all: nodes: %w", err)
	}
	if len(nodes) == 0 {
		return 0, nil
	}
	pipe := r.c.Pipeline()
	cards := make([]*redis.IntCmd, len(nodes))
	for i, n := range nodes {
		cards[i] = pipe.SCard(ctx, r.setKey(n))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("count all: %w", err)
	}
	var total int64
	for _, c := range cards {
		total += c.Val()
	}
	return total, nil
}

// String describes the registry for logs.
func (r *RedisRegistry) String() string {
	return "redis(" + strings.TrimSuffix(r.prefix, ":") + ")"
}
