package api

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// Lister counts and lists connections from the ownership registry (an
// extension: API Gateway has no way to list or count connections). Counts
// come from per-node counters, never from scanning a keyspace.
type Lister interface {
	// Count is the number of connections on node, or in the whole cluster
	// when node is "".
	Count(ctx context.Context, node string) (int64, error)
	// List pages through node's connections; cursor "" starts, and a
	// returned "" means the last page. limit is a hint: a page may hold a
	// few more or fewer, or none before the end.
	List(ctx context.Context, node, cursor string, limit int) ([]conn.Info, string, error)
	// Nodes lists the nodes that own connections, sorted (a short list:
	// one per edge).
	Nodes(ctx context.Context) ([]string, error)
}

const opList = "list"

// maxListCalls bounds the Lister.List calls one cluster-wide page makes
// (empty pages and nodes with few connections are skipped within it).
const maxListCalls = 32

// EnableListing turns on GET {prefix}/@connections. Call before serving.
func (a *API) EnableListing(l Lister) {
	a.lister = l
	a.m.addOperations([]string{opList})
}

type listJSON struct {
	Node        string           `json:"nodeId,omitempty"`
	Count       int64            `json:"count"`
	Connections []connectionJSON `json:"connections"`
	Cursor      string           `json:"cursor,omitempty"`
}

// list answers GET /@connections: the count and one page of connections
// (?limit=1..1000, default 100; ?cursor= from the previous page) of the
// whole cluster, or with ?node=ID of that node.
func (a *API) list(ctx context.Context, w http.ResponseWriter, r *http.Request) int {
	if a.lister == nil {
		return writeError(w, r, errForbidden())
	}
	q := r.URL.Query()
	node := q.Get("node")
	if node != "" && !validNodeParam(node) {
		return writeError(w, r, errBadRequest("invalid node id"))
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		var err error
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 1000 {
			return writeError(w, r, errBadRequest("limit must be 1 to 1000"))
		}
	}
	cursor := q.Get("cursor")
	if len(cursor) > 256 {
		return writeError(w, r, errBadRequest("invalid cursor"))
	}
	out := listJSON{Node: node}
	var err error
	if out.Count, err = a.lister.Count(ctx, node); err != nil {
		return writeError(w, r, classify(err))
	}
	var infos []conn.Info
	if node != "" {
		infos, out.Cursor, err = a.lister.List(ctx, node, cursor, limit)
	} else {
		infos, out.Cursor, err = a.listAll(ctx, cursor, limit)
	}
	if err != nil {
		return writeError(w, r, classify(err))
	}
	out.Connections = make([]connectionJSON, 0, len(infos))
	for _, in := range infos {
		out.Connections = append(out.Connections, connectionJSON{
			ConnectedAt: in.ConnectedAt.UTC().Format(isoMillis), LastActiveAt: in.ConnectedAt.UTC().Format(isoMillis),
			Identity:     identityJSON{SourceIP: in.SourceIP, UserAgent: in.UserAgent},
			ConnectionID: in.ID, NodeID: in.Node, UserID: in.UserID,
		})
	}
	body, err := json.Marshal(out)
	if err != nil {
		return writeError(w, r, classify(err))
	}
	return writeJSON(w, body)
}

// listAll pages through every node's connections, node by node in sorted
// order. Its cursor is "<node>.<that node's cursor>": a node that is gone
// by the next call is skipped, a node added before the cursor's is not
// listed (a connection present during the whole walk is listed at least
// once, as with one node).
func (a *API) listAll(ctx context.Context, cursor string, limit int) ([]conn.Info, string, error) {
	var at, sub string
	if cursor != "" {
		var ok bool
		if at, sub, ok = strings.Cut(cursor, "."); !ok || !validNodeParam(at) {
			return nil, "", errBadRequest("invalid cursor")
		}
	}
	nodes, err := a.lister.Nodes(ctx)
	if err != nil {
		return nil, "", err
	}
	i, found := slices.BinarySearch(nodes, at)
	if !found {
		sub = "" // that node is gone: start the next one from its beginning
	}
	var out []conn.Info
	for calls := 0; i < len(nodes) && len(out) < limit && calls < maxListCalls; calls++ {
		page, next, err := a.lister.List(ctx, nodes[i], sub, limit-len(out))
		if err != nil {
			return nil, "", err
		}
		out = append(out, page...)
		if sub = next; next == "" {
			i++
		}
	}
	if i == len(nodes) {
		return out, "", nil
	}
	return out, nodes[i] + "." + sub, nil
}

// validNodeParam accepts node IDs' alphabet ([A-Za-z0-9_-], 1–128).
func validNodeParam(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
