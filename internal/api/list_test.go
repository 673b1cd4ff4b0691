package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/conn"
)

type fakeLister struct{ nodes map[string][]conn.Info }

func (f fakeLister) Count(_ context.Context, node string) (int64, error) {
	if node != "" {
		return int64(len(f.nodes[node])), nil
	}
	n := 0
	for _, c := range f.nodes {
		n += len(c)
	}
	return int64(n), nil
}

func (f fakeLister) List(_ context.Context, node, cursor string, limit int) ([]conn.Info, string, error) {
	all := f.nodes[node]
	start := 0
	if cursor != "" {
		start = int(cursor[0] - '0')
	}
	end := min(start+limit, len(all))
	next := ""
	if end < len(all) {
		next = string(rune('0' + end))
	}
	return all[start:end], next, nil
}

func (f fakeLister) Nodes(context.Context) ([]string, error) {
	out := make([]string, 0, len(f.nodes))
	for n := range f.nodes {
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

func TestListingAndCountingConnections(t *testing.T) {
	a, err := New(Config{Insecure: true}, newFake(), prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a.EnableListing(fakeLister{nodes: map[string][]conn.Info{
		"n1": {{ID: conn.NewID(), Node: "n1", ConnectedAt: now}, {ID: conn.NewID(), Node: "n1", ConnectedAt: now}, {ID: conn.NewID(), Node: "n1", ConnectedAt: now}},
		"n2": {{ID: conn.NewID(), Node: "n2", ConnectedAt: now}},
	}})
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	get := func(path string) (int, listJSON) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out listJSON
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	// Without ?node=: the cluster's count and its connections, node by
	// node, in pages that cross node boundaries.
	if code, out := get("/prod/@connections"); code != 200 || out.Count != 4 || len(out.Connections) != 4 || out.Cursor != "" {
		t.Fatalf("cluster listing: %d %+v", code, out)
	}
	seen := map[string]bool{}
	cursor, pages := "", 0
	for {
		path := "/@connections?limit=3"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		code, out := get(path)
		if code != 200 || out.Count != 4 || len(out.Connections) > 3 {
			t.Fatalf("cluster page %d: %d %+v", pages, code, out)
		}
		for _, c := range out.Connections {
			if seen[c.ConnectionID] {
				t.Fatalf("%s listed twice", c.ConnectionID)
			}
			seen[c.ConnectionID] = true
		}
		pages++
		if cursor = out.Cursor; cursor == "" {
			break
		}
	}
	if len(seen) != 4 || pages != 2 {
		t.Fatalf("cluster pages of 3: %d connections in %d pages, want 4 in 2", len(seen), pages)
	}
	// A cursor naming a node that has gone since: the walk goes on with the
	// next node.
	if code, out := get("/@connections?cursor=n1zz.5"); code != 200 || len(out.Connections) != 1 || out.Connections[0].NodeID != "n2" {
		t.Fatalf("cursor of a gone node: %d %+v", code, out)
	}
	code, page1 := get("/@connections?node=n1&limit=2")
	if code != 200 || page1.Count != 3 || len(page1.Connections) != 2 || page1.Cursor == "" {
		t.Fatalf("first page: %d %+v", code, page1)
	}
	code, page2 := get("/@connections?node=n1&limit=2&cursor=" + page1.Cursor)
	if code != 200 || len(page2.Connections) != 1 || page2.Cursor != "" {
		t.Fatalf("last page: %d %+v", code, page2)
	}
	for _, bad := range []string{"/@connections?node=a.b", "/@connections?node=n1&limit=0", "/@connections?node=n1&limit=5000",
		"/@connections?limit=0", "/@connections?cursor=nodot", "/@connections?cursor=bad%20node.1"} {
		if code, _ := get(bad); code != 400 {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
}
