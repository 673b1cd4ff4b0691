package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/connections"
)

// prefix is the NATS subject prefix and Redis key prefix of every cluster:
// not the default, so the flags are exercised too.
const prefix = "e2e"

// leaseTTL is short so that dead-node scenarios finish quickly; the
// janitor looks for expired leases every 5 s (not configurable).
const leaseTTL = 3 * time.Second

// clusterConfig says what a scenario runs.
type clusterConfig struct {
	redisCluster bool // 3-master Redis Cluster instead of one redis-server
	jetstream    bool // edges publish lifecycle events to a JetStream stream
	edges        int  // default 3
	routers      int  // default 1
	// edgeArgs adds flags for edge i.
	edgeArgs func(i int) []string
	// routerArgs adds flags for every router.
	routerArgs []string
	// keepID, if set, says which edges keep their -node-id across restarts.
	keepID func(i int) bool
	// apiToken, if set, is the only bearer token the APIs accept (instead
	// of -api-insecure).
	apiToken string
	// natsURL, if set, is a NATS server the scenario runs itself (e.g. a
	// child process it can SIGSTOP) instead of the embedded one.
	natsURL string
}

// cluster is one scenario's system: Redis, NATS (embedded in the test
// process, restartable), the edge and router processes and the recording
// backend.
type cluster struct {
	t   testing.TB
	cfg clusterConfig

	redis    *testenv.Redis
	rcluster *testenv.RedisCluster
	rdb      redis.UniversalClient
	nats     *testenv.NATS
	stream   string
	edges    []*edgeNode
	routers  []*routerNode
	rec      *recorder
	http     *http.Client
}

type edgeNode struct {
	cl                         *cluster
	idx                        int
	nodeID                     string
	keepID                     bool // restart with the same -node-id (a StatefulSet pod)
	wsPort, apiPort, adminPort int
	p                          *proc
}

type routerNode struct {
	apiPort, adminPort int
	p                  *proc
}

func (e *edgeNode) wsURL() string    { return fmt.Sprintf("ws://127.0.0.1:%d", e.wsPort) }
func (e *edgeNode) apiURL() string   { return fmt.Sprintf("http://127.0.0.1:%d", e.apiPort) }
func (e *edgeNode) adminURL() string { return fmt.Sprintf("http://127.0.0.1:%d", e.adminPort) }

func (r *routerNode) apiURL() string { return fmt.Sprintf("http://127.0.0.1:%d", r.apiPort) }

// startCluster starts everything and waits until every node is ready.
func startCluster(t testing.TB, cfg clusterConfig) *cluster {
	t.Helper()
	if cfg.edges == 0 {
		cfg.edges = 3
	}
	if cfg.routers == 0 {
		cfg.routers = 1
	}
	cl := &cluster{t: t, cfg: cfg, http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second},
	}}
	t.Cleanup(cl.http.CloseIdleConnections)
	if cfg.redisCluster {
		cl.rcluster = testenv.StartRedisCluster(t, 3)
		cl.rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.rcluster.Addrs()})
	} else {
		cl.redis = testenv.StartRedis(t)
		cl.rdb = redis.NewClient(&redis.Options{Addr: cl.redis.Addr()})
	}
	t.Cleanup(func() { _ = cl.rdb.Close() })
	var natsOpts []testenv.NATSOption
	if cfg.jetstream {
		natsOpts = append(natsOpts, testenv.WithJetStream())
		cl.stream = "E2E_EVENTS"
	}
	if cfg.natsURL == "" {
		cl.nats = testenv.StartNATS(t, natsOpts...)
	}
	cl.rec = startRecorder(t, cl.natsURL(), prefix, cl.stream)

	for i := range cfg.edges {
		e := &edgeNode{cl: cl, idx: i, wsPort: freePort(t), apiPort: freePort(t), adminPort: freePort(t)}
		e.keepID = cfg.keepID != nil && cfg.keepID(i)
		cl.edges = append(cl.edges, e)
		e.start()
	}
	for range cfg.routers {
		r := &routerNode{apiPort: freePort(t), adminPort: freePort(t)}
		args := append([]string{
			"-api-listen", fmt.Sprintf("127.0.0.1:%d", r.apiPort), cl.apiAuthArg(),
			"-admin-listen", fmt.Sprintf("127.0.0.1:%d", r.adminPort),
			"-nats-url", cl.natsURL(), "-prefix", prefix, "-redis-key-prefix", prefix,
			"-log-format", "json",
		}, cl.redisArgs()...)
		args = append(args, cfg.routerArgs...)
		r.p = startProc(t, fmt.Sprintf("router%d", len(cl.routers)), "router", args...)
		cl.routers = append(cl.routers, r)
	}
	for _, e := range cl.edges {
		e.p.waitReady(e.adminURL() + "/readyz")
	}
	for _, r := range cl.routers {
		r.p.waitReady(fmt.Sprintf("http://127.0.0.1:%d/readyz", r.adminPort))
	}
	return cl
}

// natsURL is the URL of the scenario's NATS server.
func (cl *cluster) natsURL() string {
	if cl.cfg.natsURL != "" {
		return cl.cfg.natsURL
	}
	return cl.nats.URL()
}

// apiAuthArg is the APIs' authentication flag.
func (cl *cluster) apiAuthArg() string {
	if cl.cfg.apiToken != "" {
		return "-api-tokens=" + cl.cfg.apiToken
	}
	return "-api-insecure"
}

func (cl *cluster) redisArgs() []string {
	if cl.rcluster != nil {
		return []string{"-redis-addrs", strings.Join(cl.rcluster.Addrs(), ",")}
	}
	return []string{"-redis-url", cl.redis.URL()}
}

// start runs the edge process (again, after a stop) on its ports with a new
// node ID, as a restarted pod would have (the same one if keepID); it does
// not wait for readiness.
func (e *edgeNode) start() {
	cl := e.cl
	if !e.keepID || e.nodeID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		e.nodeID = fmt.Sprintf("edge%d-%s", e.idx, hex.EncodeToString(b[:]))
	}
	args := []string{
		"-listen", fmt.Sprintf("127.0.0.1:%d", e.wsPort),
		"-api-listen", fmt.Sprintf("127.0.0.1:%d", e.apiPort), cl.apiAuthArg(),
		"-admin-listen", fmt.Sprintf("127.0.0.1:%d", e.adminPort),
		"-nats-url", cl.natsURL(), "-prefix", prefix, "-redis-key-prefix", prefix,
		"-node-id", e.nodeID, "-lease-ttl", leaseTTL.String(),
		"-drain-window", "1s", "-drain-delay", "0s",
		"-connect-mode", "optional", "-connect-timeout", "2s",
		"-log-format", "json",
	}
	args = append(args, cl.redisArgs()...)
	if cl.cfg.jetstream {
		args = append(args, "-jetstream", "-jetstream-stream", cl.stream)
	}
	if cl.cfg.edgeArgs != nil {
		args = append(args, cl.cfg.edgeArgs(e.idx)...)
	}
	e.p = startProc(cl.t, e.nodeID, "edge", args...)
}

// learnIDs waits until the backend's CONNECT events name every client.
func (cl *cluster) learnIDs(clients []*wsClient) {
	cl.t.Helper()
	eventually(cl.t, waitTimeout, "CONNECT event for every client", func() error {
		missing := 0
		for _, c := range clients {
			if c.id != "" {
				continue
			}
			if id, ok := cl.rec.idOf(c.key); ok {
				c.id = id
			} else {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d clients not announced", missing, len(clients))
		}
		return nil
	})
}

// api returns an @connections client for endpoint.
func (cl *cluster) api(endpoint string) *connections.Client {
	c, err := connections.New(endpoint, connections.Options{HTTPClient: cl.http})
	if err != nil {
		cl.t.Fatalf("api client: %v", err)
	}
	return c
}

// namedAPI is an @connections endpoint of the cluster.
type namedAPI struct {
	name string
	*connections.Client
}

// apis lists every @connections endpoint: the routers, then each edge.
func (cl *cluster) apis() []namedAPI {
	var out []namedAPI
	for i, r := range cl.routers {
		out = append(out, namedAPI{fmt.Sprintf("router%d", i), cl.api(r.apiURL())})
	}
	for _, e := range cl.edges {
		if e.p.running() {
			out = append(out, namedAPI{e.nodeID, cl.api(e.apiURL())})
		}
	}
	return out
}

// forEach runs f for every item, a few at a time, and returns the errors.
func forEach[T any](items []T, parallel int, f func(T) error) error {
	sem := make(chan struct{}, parallel)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, it := range items {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(it); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 5 {
		errs = append(errs[:5], fmt.Errorf("… and %d more", len(errs)-5))
	}
	return errors.Join(errs...)
}

// waitGone waits until every id answers 410 through api.
func (cl *cluster) waitGone(api *connections.Client, ids []string) time.Duration {
	cl.t.Helper()
	pending := append([]string(nil), ids...)
	return eventually(cl.t, waitTimeout, "410 Gone for every closed connection", func() error {
		var mu sync.Mutex
		var still []string
		err := forEach(pending, 16, func(id string) error {
			_, err := api.Get(context.Background(), id)
			if errors.Is(err, connections.ErrGone) {
				return nil
			}
			mu.Lock()
			still = append(still, id)
			mu.Unlock()
			return fmt.Errorf("%s: %v", id, err)
		})
		pending = still
		if err != nil {
			return fmt.Errorf("%d not gone yet: %w", len(still), err)
		}
		return nil
	})
}

// scanKeys counts the Redis keys matching pattern (on every master).
func (cl *cluster) scanKeys(pattern string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	count := func(ctx context.Context, c *redis.Client) (int, error) {
		n := 0
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			n++
		}
		return n, iter.Err()
	}
	switch c := cl.rdb.(type) {
	case *redis.Client:
		return count(ctx, c)
	case *redis.ClusterClient:
		var mu sync.Mutex
		total := 0
		err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			n, err := count(ctx, m)
			mu.Lock()
			total += n
			mu.Unlock()
			return err
		})
		return total, err
	}
	return 0, fmt.Errorf("unknown redis client %T", cl.rdb)
}

// connKeyExists reports whether the registry holds a record for id.
func (cl *cluster) connKeyExists(id string) (bool, error) {
	n, err := cl.rdb.Exists(context.Background(), prefix+":conn:"+id).Result()
	return n == 1, err
}

// waitRegistryEmpty waits until Redis holds no connection record and no
// node connection set: nothing for closed connections.
func (cl *cluster) waitRegistryEmpty() {
	cl.t.Helper()
	eventually(cl.t, waitTimeout, "registry holds nothing for closed connections", func() error {
		conns, err := cl.scanKeys(prefix + ":conn:*")
		if err != nil {
			return err
		}
		sets, err := cl.scanKeys(prefix + ":node:*")
		if err != nil {
			return err
		}
		if conns > 0 || sets > 0 {
			return fmt.Errorf("%d connection records and %d node sets left", conns, sets)
		}
		return nil
	})
}

// leases lists the nodes holding a lease.
func (cl *cluster) leases() ([]string, error) {
	return cl.rdb.ZRange(context.Background(), prefix+":{nodes}:leases", 0, -1).Result()
}

// metric sums the samples of a metric family on an admin endpoint, with
// optional label filter (e.g. `reason="nats_error"`).
func (cl *cluster) metric(adminURL, name, labelFilter string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, err := httpGet(ctx, adminURL+"/metrics")
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		if labelFilter != "" && !strings.Contains(line, labelFilter) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
	}
	return sum, nil
}

// closeAll closes every client still open with a normal close (1000).
func closeAll(t testing.TB, clients []*wsClient) {
	t.Helper()
	err := forEach(clients, 32, func(c *wsClient) error {
		if c.isClosed() {
			return nil
		}
		return c.closeWith(1000, 20*time.Second)
	})
	if err != nil {
		t.Fatalf("close clients: %v", err)
	}
}

// finish is the end of every scenario: close what is open, then check the
// invariant (#CONNECT = #DISCONNECT = #established) and that the registry
// and the API know nothing of any closed connection.
func (cl *cluster) finish(all []*wsClient, codes map[string]int) {
	cl.t.Helper()
	closeAll(cl.t, all)
	established := ids(all)
	cl.rec.waitDisconnects(established, waitTimeout)
	cl.waitRegistryEmpty()
	cl.waitGone(cl.api(cl.routers[0].apiURL()), established)
	cl.rec.checkInvariant(established, codes)
}
