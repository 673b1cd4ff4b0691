package app

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi"
	"github.com/aws/aws-sdk-go-v2/service/apigatewaymanagementapi/types"
	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/backend"
	"github.com/switchboardgw/switchboard/pkg/connections"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testEdgeConfig is an edge's defaults with every listener on a random
// loopback port.
func testEdgeConfig(t *testing.T, args ...string) EdgeConfig {
	t.Helper()
	var c EdgeConfig
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	c.RegisterFlags(fs)
	base := []string{"-listen", "127.0.0.1:0", "-api-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0",
		"-nats-embedded-listen", "127.0.0.1:0", "-drain-window", "50ms", "-lease-ttl", "3s"}
	if err := Parse(fs, append(base, args...), func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	return c
}

func startTestEdge(t *testing.T, cfg EdgeConfig) *Edge {
	t.Helper()
	e, err := NewEdge(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge run: %v", err)
		}
	})
	waitReady(t, "http://"+e.AdminAddr()+"/readyz")
	return e
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	eventually(t, "ready at "+url, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

var eventually = testenv.Eventually

// events records lifecycle events by type, as a backend sees them.
type events struct {
	mu          sync.Mutex
	connects    map[string]*backend.Event
	disconnects map[string][]*backend.Event
}

func recordEvents(t *testing.T, b *backend.Backend) *events {
	ev := &events{connects: map[string]*backend.Event{}, disconnects: map[string][]*backend.Event{}}
	b.OnConnected(func(_ context.Context, e *backend.Event) {
		ev.mu.Lock()
		ev.connects[e.ConnectionID()] = e
		ev.mu.Unlock()
	})
	b.OnDisconnect(func(_ context.Context, e *backend.Event) {
		ev.mu.Lock()
		ev.disconnects[e.ConnectionID()] = append(ev.disconnects[e.ConnectionID()], e)
		ev.mu.Unlock()
	})
	return ev
}

func (ev *events) connect(id string) *backend.Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.connects[id]
}

func (ev *events) disconnect(id string) []*backend.Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.disconnects[id]
}

func startBackend(t *testing.T, url string, setup func(b *backend.Backend)) *backend.Backend {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := backend.New(nc, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	setup(b)
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = b.Drain() })
	return b
}

func dialWS(t *testing.T, url string, h http.Header) (*websocket.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, ""
}

func readText(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(data)
}

// The README's first command, end to end: no Redis, no NATS server; a
// backend attaches to the embedded NATS, decides $connect, hears events,
// answers a two-way route; the @connections API reaches the client.
func TestSingleNodeDefaultEndToEnd(t *testing.T) {
	e := startTestEdge(t, testEdgeConfig(t, "-two-way-routes", "echo"))
	// The client learns its ID from the backend, as an API Gateway app would.
	ids := make(chan string, 10)
	ev := &events{}
	startBackend(t, e.NATSURL(), func(b *backend.Backend) {
		ev = recordEvents(t, b)
		b.OnConnect(func(_ context.Context, r *backend.ConnectRequest) backend.ConnectResponse {
			if r.QueryStringParameters["token"] != "secret" {
				return backend.Deny(401, "missing token")
			}
			ids <- r.ConnectionID()
			return backend.ConnectResponse{UserID: "alice", PrincipalID: "alice", Context: map[string]any{"plan": "pro"},
				Headers: map[string]string{"X-Welcome": "yes"}}
		})
		b.Route("echo", func(_ context.Context, m *backend.Message) ([]byte, error) {
			return append([]byte("echo:"), m.Data...), nil
		})
	})
	wsURL := "ws://" + e.WSAddr() + "/"

	// Denied: the client gets the backend's status and no connection exists.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, wsURL+"?token=wrong", nil)
	if err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("denied dial: %v %v, want HTTP 401", resp, err)
	}

	c, _ := dialWS(t, wsURL+"?token=secret", nil)
	id := <-ids
	eventually(t, "CONNECT event", func() bool { return ev.connect(id) != nil })
	ce := ev.connect(id)
	if ce.RequestContext.EventType != "CONNECT" || ce.RequestContext.RouteKey != "$connect" || ce.QueryStringParameters["token"] != "secret" {
		t.Fatalf("CONNECT event %+v", ce.RequestContext)
	}

	// Two-way route.
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"action":"echo","x":1}`)); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, c); got != `echo:{"action":"echo","x":1}` {
		t.Fatalf("two-way reply %q", got)
	}

	// @connections API on the edge's own API port.
	api, err := connections.New("http://"+e.APIAddr()+"/prod", connections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Post(ctx, id, []byte("hello from the backend")); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, c); got != "hello from the backend" {
		t.Fatalf("posted message: %q", got)
	}
	info, err := api.Get(ctx, id)
	if err != nil || info.SourceIP != "127.0.0.1" || info.UserID != "alice" {
		t.Fatalf("GET: %+v %v", info, err)
	}
	if err := api.Delete(ctx, id, 4401, "token expired"); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Read(ctx)
	if st := websocket.CloseStatus(err); st != 4401 {
		t.Fatalf("client saw %v, want close 4401", err)
	}
	eventually(t, "DISCONNECT event", func() bool { return len(ev.disconnect(id)) == 1 })
	de := ev.disconnect(id)[0]
	if de.RequestContext.DisconnectStatusCode != 4401 || de.RequestContext.DisconnectReason == nil || *de.RequestContext.DisconnectReason != "token expired" {
		t.Fatalf("DISCONNECT %+v", de.RequestContext)
	}
	if auth, _ := de.RequestContext.Authorizer.(map[string]any); auth["principalId"] != "alice" {
		t.Fatalf("authorizer not carried to DISCONNECT: %#v", de.RequestContext.Authorizer)
	}
	if err := api.Post(ctx, id, []byte("late")); !errors.Is(err, connections.ErrGone) {
		t.Fatalf("post after close: %v, want ErrGone", err)
	}
	lintMetrics(t, e.Registry())
}

// lintMetrics checks what /metrics serves against Prometheus' naming rules.
func lintMetrics(t *testing.T, g prometheus.Gatherer) {
	t.Helper()
	problems, err := testutil.GatherAndLint(g)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}

// A cluster: two edges and a router share a real Redis and NATS. The real
// AWS SDK, pointed at the router, reaches connections on both edges and sees
// GoneException once a client has left; every connection gets exactly one
// CONNECT and one DISCONNECT.
func TestClusterRoutesTheAWSSDKToTheOwningEdge(t *testing.T) {
	rds := testenv.StartRedis(t)
	ns := testenv.StartNATS(t)
	prefix := "sbtest" + strings.ReplaceAll(t.Name(), "/", "")[:8]
	common := []string{"-nats-url", ns.URL(), "-redis-url", rds.URL(), "-redis-key-prefix", prefix}
	e1 := startTestEdge(t, testEdgeConfig(t, common...))
	e2 := startTestEdge(t, testEdgeConfig(t, common...))
	ev := &events{}
	ids := make(chan string, 10)
	startBackend(t, ns.URL(), func(b *backend.Backend) {
		ev = recordEvents(t, b)
		b.OnConnect(func(_ context.Context, r *backend.ConnectRequest) backend.ConnectResponse {
			ids <- r.ConnectionID()
			return backend.ConnectResponse{Groups: []string{"room-1"}, UserID: "u-" + r.QueryStringParameters["u"]}
		})
	})

	var rc RouterConfig
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	rc.RegisterFlags(fs)
	if err := Parse(fs, []string{"-api-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0", "-api-insecure",
		"-nats-url", ns.URL(), "-redis-url", rds.URL(), "-redis-key-prefix", prefix}, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	r, err := NewRouter(rc, quiet)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan error, 1)
	go func() { rdone <- r.Run(rctx) }()
	t.Cleanup(func() { rcancel(); <-rdone })
	waitReady(t, "http://"+r.AdminAddr()+"/readyz")
	t.Cleanup(func() { lintMetrics(t, r.reg); lintMetrics(t, e1.Registry()) })

	c1, _ := dialWS(t, "ws://"+e1.WSAddr()+"/?u=1", nil)
	id1 := <-ids
	c2, _ := dialWS(t, "ws://"+e2.WSAddr()+"/?u=2", nil)
	id2 := <-ids

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sdk := apigatewaymanagementapi.New(apigatewaymanagementapi.Options{
		BaseEndpoint: aws.String("http://" + r.APIAddr() + "/prod"), Region: "us-east-1",
		Credentials: aws.AnonymousCredentials{},
	})
	for _, tc := range []struct {
		id string
		c  *websocket.Conn
	}{{id1, c1}, {id2, c2}} {
		if _, err := sdk.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(tc.id), Data: []byte("via router " + tc.id)}); err != nil {
			t.Fatalf("PostToConnection %s: %v", tc.id, err)
		}
		if got := readText(t, tc.c); got != "via router "+tc.id {
			t.Fatalf("client %s got %q", tc.id, got)
		}
		out, err := sdk.GetConnection(ctx, &apigatewaymanagementapi.GetConnectionInput{ConnectionId: aws.String(tc.id)})
		if err != nil || out.Identity == nil || aws.ToString(out.Identity.SourceIp) != "127.0.0.1" || out.ConnectedAt == nil {
			t.Fatalf("GetConnection %s: %+v %v", tc.id, out, err)
		}
	}
	// One group send through the router reaches the members on both edges;
	// a user send reaches only that user.
	post := func(path, body string) {
		t.Helper()
		resp, err := http.Post("http://"+r.APIAddr()+path, "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST %s: %d", path, resp.StatusCode)
		}
	}
	post("/@groups/room-1", "to the room")
	for _, c := range []*websocket.Conn{c1, c2} {
		if got := readText(t, c); got != "to the room" {
			t.Fatalf("group member got %q", got)
		}
	}
	// Listing and counting (extension): per node and cluster-wide.
	var list struct {
		Count       int `json:"count"`
		Connections []struct {
			ID string `json:"connectionId"`
		} `json:"connections"`
	}
	getJSON(t, "http://"+r.APIAddr()+"/@connections", &list)
	if list.Count != 2 {
		t.Fatalf("cluster count %d, want 2", list.Count)
	}
	getJSON(t, "http://"+r.APIAddr()+"/@connections?node="+e1.NodeID(), &list)
	if list.Count != 1 || len(list.Connections) != 1 || list.Connections[0].ID != id1 {
		t.Fatalf("node listing %+v, want only %s", list, id1)
	}
	post("/@users/u-2", "to user 2")
	if got := readText(t, c2); got != "to user 2" {
		t.Fatalf("user got %q", got)
	}
	// Each edge's own API reaches the other edge's connection too (and c1
	// must not have received the user message: its next frame is this one).
	if err := connectionsPost(ctx, e2, id1, "edge2 to edge1"); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, c1); got != "edge2 to edge1" {
		t.Fatalf("c1 got %q, want only the messages meant for it", got)
	}
	api1, _ := connections.New("http://"+e1.APIAddr(), connections.Options{})
	if err := api1.Post(ctx, id2, []byte("edge1 to edge2")); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, c2); got != "edge1 to edge2" {
		t.Fatalf("cross-edge post: %q", got)
	}

	// Per-connection state (extension): replaced through the router on the
	// owning edge, then carried on the connection's DISCONNECT.
	put := func(id, body string) int {
		req, _ := http.NewRequest(http.MethodPut, "http://"+r.APIAddr()+"/@connections/"+id, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put(id2, `{"principalId":"u-2","plan":"gold"}`); code != http.StatusNoContent {
		t.Fatalf("PUT state: %d, want 204", code)
	}
	if code := put(id2, `["not","an","object"]`); code != http.StatusBadRequest {
		t.Fatalf("PUT bad state: %d, want 400", code)
	}

	if _, err := sdk.DeleteConnection(ctx, &apigatewaymanagementapi.DeleteConnectionInput{ConnectionId: aws.String(id1)}); err != nil {
		t.Fatal(err)
	}
	_, _, err = c1.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("deleted client saw %v, want 1000", err)
	}
	c2.Close(websocket.StatusNormalClosure, "bye")
	for _, id := range []string{id1, id2} {
		eventually(t, "gone "+id, func() bool {
			_, err := sdk.PostToConnection(ctx, &apigatewaymanagementapi.PostToConnectionInput{ConnectionId: aws.String(id), Data: []byte("x")})
			var gone *types.GoneException
			return errors.As(err, &gone)
		})
		eventually(t, "one DISCONNECT for "+id, func() bool { return len(ev.disconnect(id)) == 1 })
		if id == id2 {
			if auth, _ := ev.disconnect(id)[0].RequestContext.Authorizer.(map[string]any); auth["plan"] != "gold" {
				t.Fatalf("DISCONNECT of %s carries %#v, want the state set through the API", id, ev.disconnect(id)[0].RequestContext.Authorizer)
			}
		}
		if ev.connect(id) == nil {
			t.Fatalf("no CONNECT for %s", id)
		}
	}
}

func connectionsPost(ctx context.Context, e *Edge, id, msg string) error {
	api, err := connections.New("http://"+e.APIAddr(), connections.Options{})
	if err != nil {
		return err
	}
	return api.Post(ctx, id, []byte(msg))
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
