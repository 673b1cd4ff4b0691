package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"

	"github.com/switchboardgw/switchboard/internal/testenv"
)

// natsCluster is a cluster of embedded NATS servers in the test process,
// joined by routes on loopback: members can be killed one by one.
type natsCluster struct {
	t       testing.TB
	servers []*server.Server // nil once killed
	urls    []string         // client URL of each member
}

// startNATSCluster starts n core-NATS servers routed to each other (a full
// mesh of explicit routes) and waits until every member sees all others.
func startNATSCluster(t testing.TB, n int) *natsCluster {
	t.Helper()
	nc := &natsCluster{t: t, servers: make([]*server.Server, n), urls: make([]string, n)}
	t.Cleanup(nc.shutdownAll)
	// Route ports must be known before the servers start so that each can
	// name the others.
	routePorts := make([]int, n)
	for i := range routePorts {
		routePorts[i] = freePort(t)
	}
	for i := range n {
		var routes []string
		for j, p := range routePorts {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
			}
		}
		opts := &server.Options{
			ServerName: fmt.Sprintf("nats%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			NoLog:      true,
			NoSigs:     true,
			MaxPending: 256 << 20, // as testenv: a slow CI machine is no slow consumer
			Cluster:    server.ClusterOpts{Name: "e2e", Host: "127.0.0.1", Port: routePorts[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("nats member %d: %v", i, err)
		}
		go srv.Start() // the server owns its goroutines; Shutdown waits for them
		if !srv.ReadyForConnections(startTimeout) {
			srv.Shutdown()
			t.Fatalf("nats member %d not ready after %s", i, startTimeout)
		}
		nc.servers[i] = srv
		nc.urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port)
	}
	eventually(t, startTimeout, "NATS cluster formed", func() error {
		for i, s := range nc.servers {
			if r := s.NumRemotes(); r != n-1 {
				return fmt.Errorf("member %d routes to %d of %d others", i, r, n-1)
			}
		}
		return nil
	})
	return nc
}

// allURLs is the comma-separated list of every member's client URL, as
// given to -nats-url.
func (nc *natsCluster) allURLs() string { return strings.Join(nc.urls, ",") }

// kill shuts member i down, closing every client and route connection it
// has, and waits until it has stopped.
func (nc *natsCluster) kill(i int) {
	if s := nc.servers[i]; s != nil {
		nc.servers[i] = nil
		s.Shutdown()
		s.WaitForShutdown()
	}
}

func (nc *natsCluster) shutdownAll() {
	for i := range nc.servers {
		nc.kill(i)
	}
}

// memberOf returns, for each client connection name, the members (running
// ones only) it has an open connection to.
func (nc *natsCluster) memberOf(names []string) (map[string][]int, error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := make(map[string][]int, len(names))
	for i, s := range nc.servers {
		if s == nil {
			continue
		}
		cz, err := s.Connz(&server.ConnzOptions{Limit: 10000})
		if err != nil {
			return nil, fmt.Errorf("connz of member %d: %w", i, err)
		}
		for _, c := range cz.Conns {
			if want[c.Name] {
				out[c.Name] = append(out[c.Name], i)
			}
		}
	}
	return out, nil
}

// natsName is the name an edge gives its NATS connection (internal/app).
func (e *edgeNode) natsName() string { return "switchboard-edge-" + e.nodeID }

// routerNATSName is the name every router gives its NATS connection.
const routerNATSName = "switchboard-router"

// startClusterOnNATS is startCluster for a NATS cluster: Redis, then the
// edges and routers, each given every member's URL. There is no recorder
// yet: the scenario subscribes it through the member it chooses.
func startClusterOnNATS(t testing.TB, nc *natsCluster, edges, routers int) *cluster {
	t.Helper()
	cl := &cluster{t: t, cfg: clusterConfig{edges: edges, routers: routers}, http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second},
	}}
	t.Cleanup(cl.http.CloseIdleConnections)
	cl.redis = testenv.StartRedis(t)
	cl.rdb = redis.NewClient(&redis.Options{Addr: cl.redis.Addr()})
	t.Cleanup(func() { _ = cl.rdb.Close() })

	for i := range edges {
		e := &edgeNode{cl: cl, idx: i, wsPort: freePort(t), apiPort: freePort(t), adminPort: freePort(t)}
		var b [4]byte
		_, _ = rand.Read(b[:])
		e.nodeID = fmt.Sprintf("edge%d-%s", i, hex.EncodeToString(b[:]))
		// The flags of edgeNode.start, but with every member's URL.
		args := append([]string{
			"-listen", fmt.Sprintf("127.0.0.1:%d", e.wsPort),
			"-api-listen", fmt.Sprintf("127.0.0.1:%d", e.apiPort), "-api-insecure",
			"-admin-listen", fmt.Sprintf("127.0.0.1:%d", e.adminPort),
			"-nats-url", nc.allURLs(), "-prefix", prefix, "-redis-key-prefix", prefix,
			"-node-id", e.nodeID, "-lease-ttl", leaseTTL.String(),
			"-drain-window", "1s", "-drain-delay", "0s",
			"-connect-mode", "optional", "-connect-timeout", "2s",
			"-log-format", "json",
		}, cl.redisArgs()...)
		e.p = startProc(t, e.nodeID, "edge", args...)
		cl.edges = append(cl.edges, e)
	}
	for i := range routers {
		r := &routerNode{apiPort: freePort(t), adminPort: freePort(t)}
		args := append([]string{
			"-api-listen", fmt.Sprintf("127.0.0.1:%d", r.apiPort), "-api-insecure",
			"-admin-listen", fmt.Sprintf("127.0.0.1:%d", r.adminPort),
			"-nats-url", nc.allURLs(), "-prefix", prefix, "-redis-key-prefix", prefix,
			"-log-format", "json",
		}, cl.redisArgs()...)
		r.p = startProc(t, fmt.Sprintf("router%d", i), "router", args...)
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

// loggedAt returns when the process last logged msg (its JSON log's time
// field): a more precise clock than polling from the test.
func (p *proc) loggedAt(msg string) (time.Time, error) {
	var at time.Time
	for _, line := range strings.Split(p.log.String(), "\n") {
		if !strings.Contains(line, `"msg":"`+msg+`"`) {
			continue
		}
		var rec struct {
			Time time.Time `json:"time"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return time.Time{}, fmt.Errorf("%s log line %q: %w", p.name, line, err)
		}
		at = rec.Time
	}
	if at.IsZero() {
		return at, fmt.Errorf("%s has not logged %q", p.name, msg)
	}
	return at, nil
}
