package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboardgw/switchboard/internal/testenv"
)

// waitFor is how long tests poll for a condition: generous, because CI
// machines are slow and shared; a passing test never waits this long.
const waitFor = 20 * time.Second

// eventually polls cond until it holds or waitFor passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitFor, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var prefixSeq atomic.Int64

// uniquePrefix gives each test its own Redis keys, so tests share servers
// and run in parallel.
func uniquePrefix(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, t.Name())
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return fmt.Sprintf("t%d_%d_%s", time.Now().UnixNano()%1e9, prefixSeq.Add(1), name)
}

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
