package cluster

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboardgw/switchboard/internal/testenv"
)

// waitFor is how long tests poll for a condition: generous, because CI
// machines are slow and shared; a passing test never waits this long.
const waitFor = 20 * time.Second

var eventually = testenv.Eventually

var prefixSeq atomic.Int64

var uniquePrefix = testenv.UniquePrefix

// newRedisClient connects to a test Redis with short timeouts, so that a
// killed server shows up as errors quickly.
func newRedisClient(t testing.TB, addr string) redis.UniversalClient {
	c := redis.NewClient(&redis.Options{
		Addr:         addr,
		DialTimeout:  time.Second,
		ReadTimeout:  2 * time.Second,
		WriteTimeout: 2 * time.Second,
		MaxRetries:   1,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

func newClusterClient(t testing.TB, addrs []string) redis.UniversalClient {
	c := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:        addrs,
		DialTimeout:  time.Second,
		ReadTimeout:  2 * time.Second,
		WriteTimeout: 2 * time.Second,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// startRedisRegistry starts a real redis-server for the test and returns a
// registry on it with the test's own prefix.
func startRedisRegistry(t testing.TB) (*RedisRegistry, *testenv.Redis) {
	srv := testenv.StartRedis(t)
	reg, err := NewRedisRegistry(RedisConfig{KeyPrefix: uniquePrefix(t)}, newRedisClient(t, srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	return reg, srv
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	t.Cleanup(cancel)
	return ctx
}
