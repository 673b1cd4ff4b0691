package e2e

import "testing"

// Scenario 7: the registry is a Redis Cluster of three masters instead of
// one redis-server; scenarios 1 and 2 must pass unchanged.
func TestRedisCluster(t *testing.T) {
	cfg := clusterConfig{redisCluster: true, routers: 2}
	t.Run("SteadyState", func(t *testing.T) { steadyState(t, cfg) })
	t.Run("EdgeKilled", func(t *testing.T) { edgeKilled(t, cfg) })
}
