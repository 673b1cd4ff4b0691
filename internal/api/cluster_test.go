package api

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// fakeCluster answers the cluster extension from fixed values; Tail emits
// what events holds, then waits for the request to end.
type fakeCluster struct {
	nodes  []NodeStatus
	events []Event

	mu      sync.Mutex
	filters []TailFilter
	busy    bool // Tail answers ErrTooManyViewers
}

func (f *fakeCluster) Nodes(context.Context) ([]NodeStatus, error) { return f.nodes, nil }

func (f *fakeCluster) Node(_ context.Context, id string) (NodeStatus, error) {
	for _, n := range f.nodes {
		if n.ID == id {
			n.History = []Sample{{T: 1, Connections: 1}, {T: 2, Connections: 2}}
			return n, nil
		}
	}
	return NodeStatus{}, ErrNoSuchNode
}

func (f *fakeCluster) Totals(context.Context) (Totals, error) {
	return Totals{Nodes: len(f.nodes), SampleIntervalMs: 5000, HistorySize: 120, History: []Sample{{T: 1, Connections: 5}}}, nil
}

func (f *fakeCluster) Tail(ctx context.Context, tf TailFilter, emit func(Event, uint64) error) error {
	f.mu.Lock()
	f.filters = append(f.filters, tf)
	busy := f.busy
	f.mu.Unlock()
	if busy {
		return ErrTooManyViewers
	}
	if err := emit(Event{Type: "open"}, 0); err != nil {
		return nil
	}
	for i, ev := range f.events {
		if err := emit(ev, uint64(i)); err != nil {
			return nil
		}
	}
	<-ctx.Done()
	return nil
}

func clusterServer(t *testing.T, cfg Config) (*fakeCluster, string) {
	f := &fakeCluster{nodes: []NodeStatus{
		{ID: "edge-a", Role: "edge", Connections: 3, Ready: true, LeaseAgeMs: 120},
		{ID: "edge-b", Role: "edge", Connections: 2, Draining: true, LeaseAgeMs: 80},
	}, events: []Event{
		{Type: "connect", ConnectionID: "AAAAAAAAAAAAAAAA", UserID: "alice", Node: "edge-a"},
		{Type: "message", Route: "chat", ConnectionID: "AAAAAAAAAAAAAAAA", Preview: "hi"},
	}}
	a, _ := newTestAPI(t, cfg, newFake())
	a.EnableCluster(f)
	return f, serve(t, a).URL
}

func TestClusterNodes(t *testing.T) {
	_, url := clusterServer(t, Config{Insecure: true})
	status, _, body := do(t, http.MethodGet, url+"/prod/@nodes", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("GET /@nodes: %d %s", status, body)
	}
	var out struct{ Nodes []NodeStatus }
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Nodes) != 2 || out.Nodes[0].ID != "edge-a" || out.Nodes[0].Connections != 3 || !out.Nodes[1].Draining || out.Nodes[0].History != nil {
		t.Fatalf("nodes = %+v", out.Nodes)
	}

	status, _, body = do(t, http.MethodGet, url+"/%40nodes/edge-b", nil, nil)
	var one NodeStatus
	if status != http.StatusOK || json.Unmarshal(body, &one) != nil || one.ID != "edge-b" || len(one.History) != 2 {
		t.Fatalf("GET /@nodes/edge-b: %d %s", status, body)
	}

	status, _, body = do(t, http.MethodGet, url+"/prod/@stats", nil, nil)
	var tot Totals
	if status != http.StatusOK || json.Unmarshal(body, &tot) != nil || tot.Nodes != 2 || len(tot.History) != 1 || tot.History[0].Connections != 5 {
		t.Fatalf("GET /@stats: %d %s", status, body)
	}

	status, h, body := do(t, http.MethodGet, url+"/@nodes/edge-c", nil, nil)
	wantError(t, status, h, body, http.StatusNotFound, codeNotFound)
	status, h, body = do(t, http.MethodGet, url+"/@nodes/bad.id", nil, nil)
	wantError(t, status, h, body, http.StatusBadRequest, codeBadRequest)
	status, h, body = do(t, http.MethodPost, url+"/@nodes", nil, []byte("x"))
	wantError(t, status, h, body, http.StatusMethodNotAllowed, codeMethodNotAllowed)
	status, h, body = do(t, http.MethodGet, url+"/@nodes/a/b", nil, nil)
	wantError(t, status, h, body, http.StatusForbidden, codeForbidden)
	status, h, body = do(t, http.MethodGet, url+"/@stats/x", nil, nil)
	wantError(t, status, h, body, http.StatusForbidden, codeForbidden)
}

func TestClusterNeedsAuthentication(t *testing.T) {
	_, url := clusterServer(t, Config{Auth: AuthConfig{Tokens: []string{"s3cret-token"}}})
	for _, path := range []string{"/@nodes", "/@nodes/edge-a", "/@stats", "/@events"} {
		for _, hdr := range []map[string]string{nil, {"Authorization": "Bearer wrong"}} {
			status, h, body := do(t, http.MethodGet, url+path, hdr, nil)
			wantError(t, status, h, body, http.StatusForbidden, codeForbidden)
		}
	}
	status, _, body := do(t, http.MethodGet, url+"/@nodes", map[string]string{"Authorization": "Bearer s3cret-token"}, nil)
	if status != http.StatusOK {
		t.Fatalf("with the token: %d %s", status, body)
	}
	// A foreign Origin is refused as on @connections.
	status, h, body := do(t, http.MethodGet, url+"/@nodes", map[string]string{"Authorization": "Bearer s3cret-token", "Origin": "https://evil.example"}, nil)
	wantError(t, status, h, body, http.StatusForbidden, codeForbidden)
}

func TestClusterWithoutExtensionIsForbidden(t *testing.T) {
	_, _, srv := insecureServer(t)
	status, h, body := do(t, http.MethodGet, srv.URL+"/@nodes", nil, nil)
	wantError(t, status, h, body, http.StatusForbidden, codeForbidden)
}

func TestEventTailStreamsServerSentEvents(t *testing.T) {
	f, url := clusterServer(t, Config{Insecure: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/@events?user=alice&connection=AAAAAAAAAAAAAAAA&route=chat&routes=1&rate=5", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /@events: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(res.Body)
	var got []string
	for len(got) < 3 && sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if !strings.HasPrefix(line, "data: ") {
			t.Fatalf("line %q is not an SSE data line", line)
		}
		var ev struct {
			Event
			Dropped uint64
		}
		if err := json.Unmarshal([]byte(line[6:]), &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.Type)
		if ev.Type == "message" && (ev.Route != "chat" || ev.Preview != "hi" || ev.Dropped != 1) {
			t.Fatalf("message event = %+v", ev)
		}
	}
	if strings.Join(got, ",") != "open,connect,message" {
		t.Fatalf("events = %v", got)
	}
	f.mu.Lock()
	tf := f.filters[0]
	f.mu.Unlock()
	if tf != (TailFilter{Route: "chat", UserID: "alice", ConnectionID: "AAAAAAAAAAAAAAAA", Routes: true, Rate: 5}) {
		t.Fatalf("filter = %+v", tf)
	}
}

func TestEventTailRefusals(t *testing.T) {
	f, url := clusterServer(t, Config{Insecure: true})
	for _, q := range []string{"rate=0", "rate=101", "rate=x", "user=" + strings.Repeat("u", 257)} {
		status, h, body := do(t, http.MethodGet, url+"/@events?"+q, nil, nil)
		wantError(t, status, h, body, http.StatusBadRequest, codeBadRequest)
	}
	f.mu.Lock()
	f.busy = true
	f.mu.Unlock()
	status, h, body := do(t, http.MethodGet, url+"/@events", nil, nil)
	wantError(t, status, h, body, http.StatusTooManyRequests, codeLimitExceeded)
}
