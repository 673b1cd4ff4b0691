package groups

import (
	"github.com/switchboardgw/switchboard/internal/testenv"

	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// waitFor is how long tests poll: generous for a slow shared CI machine; a
// passing test never waits this long.
const waitFor = 20 * time.Second

var eventually = testenv.Eventually

var prefixSeq atomic.Int64

var uniquePrefix = testenv.UniquePrefix

func newRedisClient(t testing.TB, addr string) redis.UniversalClient {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}
