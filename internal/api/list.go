package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

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
	// returned "" means the last page.
	List(ctx context.Context, node, cursor string, limit int) ([]conn.Info, string, error)
}

const opList = "list"

// EnableListing turns on GET {prefix}/@connections. Call before serving.
func (a *API) EnableListing(l Lister) {
	a.lister = l
	a.m.addOperations([]string{opList})
}

type listJSON struct {
	Node        string           `json:"nodeId,omitempty"`
	Count       int64            `json:"count"`
	Connections []connectionJSON `json:"connections,omitempty"`
	Cursor      string           `json:"cursor,omitempty"`
}

// list answers GET /@connections: {"count":N} for the cluster, or with
// ?node=ID that node's count and one page of its connections
// (?limit=1..1000, default 100; ?cursor= from the previous page).
func (a *API) list(ctx context.Context, w http.ResponseWriter, r *http.Request) int {
	if a.lister == nil {
		return writeError(w, r, errForbidden())
	}
	q := r.URL.Query()
	node := q.Get("node")
	if node != "" && !validNodeParam(node) {
		return writeError(w, r, errBadRequest("invalid node id"))
	}
	out := listJSON{Node: node}
	var err error
	if out.Count, err = a.lister.Count(ctx, node); err != nil {
		return writeError(w, r, classify(err))
	}
	if node != "" {
		limit := 100
		if s := q.Get("limit"); s != "" {
			if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 1000 {
				return writeError(w, r, errBadRequest("limit must be 1 to 1000"))
			}
		}
		cursor := q.Get("cursor")
		if len(cursor) > 256 {
			return writeError(w, r, errBadRequest("invalid cursor"))
		}
		infos, next, err := a.lister.List(ctx, node, cursor, limit)
		if err != nil {
			return writeError(w, r, classify(err))
		}
		out.Cursor = next
		out.Connections = make([]connectionJSON, 0, len(infos))
		for _, in := range infos {
			out.Connections = append(out.Connections, connectionJSON{
				ConnectedAt: in.ConnectedAt.UTC().Format(isoMillis), LastActiveAt: in.ConnectedAt.UTC().Format(isoMillis),
				Identity:     identityJSON{SourceIP: in.SourceIP, UserAgent: in.UserAgent},
				ConnectionID: in.ID, NodeID: in.Node, UserID: in.UserID,
			})
		}
	}
	body, err := json.Marshal(out)
	if err != nil {
		return writeError(w, r, classify(err))
	}
	return writeJSON(w, body)
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
