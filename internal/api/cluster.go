package api

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The cluster extension (GET /@nodes, GET /@nodes/{id}, GET /@stats,
// GET /@events): what
// the web console shows, as API calls anyone can make with curl. Served by
// the same handler and authentication as @connections.

// NodeStatus is one node's view of itself, answered by the node.
type NodeStatus struct {
	ID            string   `json:"nodeId"`
	Role          string   `json:"role"` // "edge" or "router"
	Version       string   `json:"version"`
	Connections   int64    `json:"connections"`
	LeaseAgeMs    int64    `json:"leaseAgeMs"` // since the last successful lease renewal; -1 without a lease
	Ready         bool     `json:"ready"`
	Draining      bool     `json:"draining"`
	EventsQueued  int64    `json:"eventsQueued"`
	EventsDropped int64    `json:"eventsDropped"`
	Counters      Sample   `json:"counters"`
	History       []Sample `json:"history,omitempty"` // GET /@nodes/{id} only
	// With History: how far apart its samples are and how many the node
	// keeps (the charts span their product).
	SampleIntervalMs int64 `json:"sampleIntervalMs,omitempty"`
	HistorySize      int   `json:"historySize,omitempty"`
}

// Sample is one reading of a node's own counters: cumulative totals and the
// connection gauge, at T (Unix milliseconds).
type Sample struct {
	T           int64 `json:"t"`
	Connections int64 `json:"connections"`
	Connects    int64 `json:"connects"` // upgrades completed, total
	Messages    int64 `json:"messages"` // client messages received, total
	Errors      int64 `json:"errors"`   // rejected upgrades, failed and dropped events, total
}

// Totals is the whole cluster's counter history: every node's samples,
// summed per sample interval (GET /@stats).
type Totals struct {
	Nodes            int      `json:"nodes"` // nodes that answered
	SampleIntervalMs int64    `json:"sampleIntervalMs"`
	HistorySize      int      `json:"historySize"`
	History          []Sample `json:"history"`
}

// Event is one entry of the event tail.
type Event struct {
	T            int64  `json:"t"`
	Type         string `json:"type"` // connect, disconnect, resume, message
	Route        string `json:"route,omitempty"`
	ConnectionID string `json:"connectionId,omitempty"`
	UserID       string `json:"userId,omitempty"`
	Node         string `json:"nodeId,omitempty"`
	Bytes        int    `json:"bytes"`
	Preview      string `json:"preview,omitempty"`
	DetachedMs   int64  `json:"detachedMs,omitempty"` // resume: how long the connection was away
}

// TailFilter chooses the events of a tail; empty fields match everything.
type TailFilter struct {
	Route, UserID, ConnectionID string
	Routes                      bool // include route traffic (see docs/api.md)
	Rate                        int  // at most this many events a second
}

// ErrTooManyViewers is returned by Tail when every tail slot is taken.
var ErrTooManyViewers = errors.New("too many event tails open")

// ErrNoSuchNode is returned by Node for a node that did not answer.
var ErrNoSuchNode = errors.New("no such node")

// ClusterInfo answers the cluster extension.
type ClusterInfo interface {
	// Nodes asks every node for its status (without history).
	Nodes(ctx context.Context) ([]NodeStatus, error)
	// Node asks one node for its status with its counter history.
	Node(ctx context.Context, id string) (NodeStatus, error)
	// Totals asks every node for its history and sums them.
	Totals(ctx context.Context) (Totals, error)
	// Tail calls emit for sampled events matching f until ctx ends or emit
	// fails: first an event of type "open" once it is subscribed, then the
	// events, and a "tick" at least every 15s; dropped counts the events
	// skipped (sampling, a slow viewer) since the previous emit. It returns
	// ErrTooManyViewers at once, before any emit, when no slot is free.
	Tail(ctx context.Context, f TailFilter, emit func(ev Event, dropped uint64) error) error
}

const (
	opNodes  = "nodes"
	opNode   = "node"
	opStats  = "stats"
	opEvents = "events"
)

// EnableCluster turns on the cluster extension. Call before serving.
func (a *API) EnableCluster(c ClusterInfo) {
	a.nodes = c
	a.m.addOperations([]string{opNodes, opNode, opStats, opEvents})
}

// clusterRoute recognises the cluster extension's paths: "/@nodes",
// "/@nodes/{id}", "/@stats", "/@events", after any prefix. ok false: not ours.
func clusterRoute(p string) (op, id string, ok bool) {
	if !strings.Contains(p, "nodes") && !strings.Contains(p, "events") && !strings.Contains(p, "stats") {
		return "", "", false // every other call: no split, no allocation
	}
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, s := range segs {
		switch s {
		case "@nodes", "%40nodes":
			switch len(segs) - i {
			case 1:
				return opNodes, "", true
			case 2:
				return opNode, segs[i+1], true
			}
			return "", "", false
		case "@events", "%40events":
			if len(segs)-i == 1 {
				return opEvents, "", true
			}
			return "", "", false
		case "@stats", "%40stats":
			if len(segs)-i == 1 {
				return opStats, "", true
			}
			return "", "", false
		case "@connections", "%40connections", "@groups", "%40groups", "@users", "%40users", "@broadcast", "%40broadcast":
			return "", "", false
		}
	}
	return "", "", false
}

// serveCluster answers a cluster extension request; served reports whether
// the path was one.
func (a *API) serveCluster(w http.ResponseWriter, r *http.Request) (op string, status int, served bool) {
	if a.nodes == nil {
		return "", 0, false
	}
	op, id, ok := clusterRoute(requestPath(r))
	if !ok {
		return "", 0, false
	}
	if r.Method != http.MethodGet {
		return op, writeError(w, r, &apiError{http.StatusMethodNotAllowed, codeMethodNotAllowed, "method " + r.Method + " not allowed"}), true
	}
	auth, aerr := a.authenticate(r, a.now())
	if aerr != nil {
		return op, writeError(w, r, aerr), true
	}
	if auth.sig != nil {
		if err := auth.sig.verify(sha256.Sum256(nil)); err != nil {
			a.logAuthFailure(r, err)
			return op, writeError(w, r, errForbidden()), true
		}
	}
	switch op {
	case opNodes:
		ctx, cancel := context.WithTimeout(r.Context(), a.cfg.CallTimeout)
		defer cancel()
		nodes, err := a.nodes.Nodes(ctx)
		if err != nil {
			return op, writeError(w, r, classify(err)), true
		}
		return op, writeJSONValue(w, r, struct {
			Nodes []NodeStatus `json:"nodes"`
		}{nodes}), true
	case opNode:
		if !validNodeParam(id) {
			return op, writeError(w, r, errBadRequest("invalid node id")), true
		}
		ctx, cancel := context.WithTimeout(r.Context(), a.cfg.CallTimeout)
		defer cancel()
		st, err := a.nodes.Node(ctx, id)
		if errors.Is(err, ErrNoSuchNode) {
			return op, writeError(w, r, &apiError{http.StatusNotFound, codeNotFound, "no such node"}), true
		}
		if err != nil {
			return op, writeError(w, r, classify(err)), true
		}
		return op, writeJSONValue(w, r, st), true
	case opStats:
		ctx, cancel := context.WithTimeout(r.Context(), a.cfg.CallTimeout)
		defer cancel()
		tot, err := a.nodes.Totals(ctx)
		if err != nil {
			return op, writeError(w, r, classify(err)), true
		}
		return op, writeJSONValue(w, r, tot), true
	default:
		return op, a.tail(w, r), true
	}
}

func writeJSONValue(w http.ResponseWriter, r *http.Request, v any) int {
	body, err := json.Marshal(v)
	if err != nil {
		return writeError(w, r, classify(err))
	}
	return writeJSON(w, body)
}

// MaxTailRate bounds ?rate= of GET /@events: the tail is for eyes.
const MaxTailRate = 100

// tail streams GET /@events as Server-Sent Events: one "data:" line of
// Event JSON per event, and a comment line every 15s so that proxies keep
// the stream open. ?route=, ?user=, ?connection= filter; ?routes=1 adds route
// traffic; ?rate=1..100 (default 20) samples. The write deadline lets a
// viewer that stops reading go.
func (a *API) tail(w http.ResponseWriter, r *http.Request) int {
	q := r.URL.Query()
	f := TailFilter{Route: q.Get("route"), UserID: q.Get("user"), ConnectionID: q.Get("connection"),
		Routes: q.Get("routes") == "1" || q.Get("routes") == "true", Rate: 20}
	for _, s := range []string{f.Route, f.UserID, f.ConnectionID} {
		if len(s) > 256 {
			return writeError(w, r, errBadRequest("filter values are at most 256 bytes"))
		}
	}
	if s := q.Get("rate"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxTailRate {
			return writeError(w, r, errBadRequest("rate must be 1 to 100"))
		}
		f.Rate = n
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		return writeError(w, r, classify(errors.New("streaming not supported")))
	}
	started := false
	rc := http.NewResponseController(w)
	emit := func(ev Event, dropped uint64) error {
		if !started {
			started = true
			h := w.Header()
			h.Set(hdrContentType, "text/event-stream")
			h.Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusOK)
		}
		b, err := json.Marshal(struct {
			Event
			Dropped uint64 `json:"dropped,omitempty"`
		}{ev, dropped})
		if err != nil {
			return err
		}
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second)) // a viewer that stops reading is let go
		if _, err := w.Write(append(append([]byte("data: "), b...), '\n', '\n')); err != nil {
			return err
		}
		fl.Flush()
		return nil
	}
	err := a.nodes.Tail(r.Context(), f, emit)
	if !started {
		if errors.Is(err, ErrTooManyViewers) {
			return writeError(w, r, &apiError{http.StatusTooManyRequests, codeLimitExceeded, err.Error()})
		}
		if err == nil {
			err = errors.New("event tail ended")
		}
		return writeError(w, r, classify(err))
	}
	return http.StatusOK
}
