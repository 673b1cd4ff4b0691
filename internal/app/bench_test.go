package app

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/backend"
	"github.com/switchboardgw/switchboard/pkg/connections"
)

// BenchmarkAPIPost measures POST /@connections/{id} end to end over HTTP,
// with real Redis and NATS: through the edge that owns the connection
// (same node), and through a router to another edge (cross node, the
// DESIGN.md target: p99 ≤ 1.5 ms). The client reads every message.
func BenchmarkAPIPost(b *testing.B) {
	rds := testenv.StartRedis(b)
	ns := testenv.StartNATS(b)
	prefix := testenv.UniquePrefix(b)
	common := []string{"-nats-url", ns.URL(), "-redis-url", rds.URL(), "-redis-key-prefix", prefix, "-log-level", "error"}
	e1 := startBenchEdge(b, common...)
	ids := make(chan string, 1)
	nc := ns.Connect(b)
	be, err := backend.New(nc, backend.Options{})
	if err != nil {
		b.Fatal(err)
	}
	be.OnConnect(func(_ context.Context, r *backend.ConnectRequest) backend.ConnectResponse {
		ids <- r.ConnectionID()
		return backend.ConnectResponse{}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := be.Start(ctx); err != nil {
		b.Fatal(err)
	}
	var rc RouterConfig
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	rc.RegisterFlags(fs)
	if err := Parse(fs, append([]string{"-api-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0", "-api-insecure"}, common...), func(string) string { return "" }); err != nil {
		b.Fatal(err)
	}
	r, err := NewRouter(rc, quiet)
	if err != nil {
		b.Fatal(err)
	}
	rdone := make(chan error, 1)
	go func() { rdone <- r.Run(ctx) }()
	defer func() { cancel(); <-rdone }()

	c, _, err := websocket.Dial(ctx, "ws://"+e1.WSAddr()+"/", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.CloseNow()
	id := <-ids
	go func() { // the client reads everything
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	}()
	for _, tc := range []struct{ name, endpoint string }{
		{"same-node", "http://" + e1.APIAddr()},
		{"cross-node-via-router", "http://" + r.APIAddr()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			api, err := connections.New(tc.endpoint, connections.Options{HTTPClient: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}})
			if err != nil {
				b.Fatal(err)
			}
			msg := []byte(strings.Repeat("x", 128))
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if err := api.Post(ctx, id, msg); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
			b.ReportMetric(pct(0.50), "p50-µs")
			b.ReportMetric(pct(0.99), "p99-µs")
			b.ReportMetric(pct(0.999), "p999-µs")
		})
	}
}

func startBenchEdge(b *testing.B, args ...string) *Edge {
	b.Helper()
	var c EdgeConfig
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	c.RegisterFlags(fs)
	base := []string{"-listen", "127.0.0.1:0", "-api-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0",
		"-nats-embedded-listen", "127.0.0.1:0", "-drain-window", "50ms", "-connect-mode", "required"}
	if err := Parse(fs, append(base, args...), func(string) string { return "" }); err != nil {
		b.Fatal(err)
	}
	e, err := NewEdge(c, quiet)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	testenv.Eventually(b, "edge ready", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://%s/readyz", e.AdminAddr()))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return e
}
