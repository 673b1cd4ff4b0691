package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/rules"
)

// GroupsController performs the groups, users and broadcast extension (not
// part of API Gateway; see docs/groups.md). internal/groups.Service is one.
type GroupsController interface {
	// SendGroup sends one message to every connection in group on every
	// node, except excluded ("" for none).
	SendGroup(ctx context.Context, group string, data []byte, binary bool, excluded string) error
	// SendUser sends one message to every connection of user.
	SendUser(ctx context.Context, user string, data []byte, binary bool) error
	// Broadcast sends one message to every connection.
	Broadcast(ctx context.Context, data []byte, binary bool) error
	// AddToGroup and RemoveFromGroup change a connection's groups wherever
	// it lives; conn.ErrGone if it does not exist.
	AddToGroup(ctx context.Context, group, id string) error
	RemoveFromGroup(ctx context.Context, group, id string) error
	// GroupConnections and UserConnections page through connection IDs:
	// start with cursor "", stop when the returned cursor is "".
	GroupConnections(ctx context.Context, group, cursor string, limit int) ([]string, string, error)
	UserConnections(ctx context.Context, user, cursor string, limit int) ([]string, string, error)
	// GroupCount and UserCount count connections across the cluster.
	GroupCount(ctx context.Context, group string) (int64, error)
	UserCount(ctx context.Context, user string) (int64, error)
	// CloseUser closes every connection of user with code and reason.
	CloseUser(ctx context.Context, user string, code int, reason string) error
}

// Errors a GroupsController returns for the statuses only the extension has.
var (
	// ErrInvalidName: not a legal group or user name (400 BadRequestException).
	ErrInvalidName = conn.ErrInvalidName
	// ErrTooManyGroups: the connection is in the maximum number of groups
	// (409 ConflictException).
	ErrTooManyGroups = conn.ErrTooManyGroups
	// ErrInvalidCursor: a listing cursor that was not handed out (400).
	ErrInvalidCursor = errors.New("invalid cursor")
)

// EnableGroups serves the groups extension's paths (/@groups, /@users,
// /@broadcast, after any stage prefix) through g. Call it before serving;
// without it those paths answer 403 like any unknown path.
func (a *API) EnableGroups(g GroupsController) {
	a.groups = g
	a.m.addOperations(groupOperations)
}

const (
	codeNotFound = "NotFoundException"
	codeConflict = "ConflictException"

	maxListLimit     = 1000
	defaultListLimit = 100
	// maxEscapedName bounds a name segment before decoding: 128 bytes, each
	// escaped as 3.
	maxEscapedName = 3 * 128
)

// Operation label values of the extension.
const (
	opGroupSend   = "group_send"
	opGroupCount  = "group_count"
	opGroupHead   = "group_head"
	opGroupList   = "group_list"
	opGroupAdd    = "group_add"
	opGroupRemove = "group_remove"
	opUserSend    = "user_send"
	opUserCount   = "user_count"
	opUserHead    = "user_head"
	opUserList    = "user_list"
	opUserClose   = "user_close"
	opBroadcast   = "broadcast"
)

var groupOperations = []string{opGroupSend, opGroupCount, opGroupHead, opGroupList, opGroupAdd, opGroupRemove,
	opUserSend, opUserCount, opUserHead, opUserList, opUserClose, opBroadcast}

func (k routeKind) extension() bool { return k >= routeGroup }

// extensionSegment reports which extension a path segment starts ("@" may
// arrive as "%40").
func extensionSegment(s string) (routeKind, bool) {
	if len(s) > 3 && s[0] == '%' && s[1] == '4' && s[2] == '0' {
		s = "@" + s[3:]
	}
	switch s {
	case "@groups":
		return routeGroup, true
	case "@users":
		return routeUser, true
	case "@broadcast":
		return routeBroadcast, true
	}
	return routeNone, false
}

// parseExtension parses what follows an extension segment: rest is "" or
// "/...", still escaped, so a name containing '/' stays one segment.
func parseExtension(kind routeKind, rest string) route {
	if kind == routeBroadcast {
		if rest != "" {
			return route{}
		}
		return route{kind: routeBroadcast}
	}
	if rest == "" {
		return route{}
	}
	segs := splitSegments(rest[1:])
	if len(segs) == 0 || len(segs) > 3 || (len(segs) >= 2 && segs[1] != "connections") {
		return route{}
	}
	rt := route{kind: kind}
	switch {
	case len(segs) == 2 && kind == routeGroup:
		rt.kind = routeGroupConns
	case len(segs) == 2:
		rt.kind = routeUserConns
	case len(segs) == 3 && kind == routeGroup:
		rt.kind = routeGroupMember
		id, err := url.PathUnescape(segs[2])
		if len(segs[2]) > maxEscapedID || err != nil || !conn.ValidID(id) {
			rt.bad = "invalid connection id"
		}
		rt.id = id
	case len(segs) == 3:
		return route{}
	}
	name, err := url.PathUnescape(segs[0])
	if len(segs[0]) > maxEscapedName || err != nil || !rules.ValidName(name) {
		// Checked before the name reaches a subject or a key.
		rt.bad = "invalid name: 1-128 bytes of printable ASCII without space . * > \" \\"
		return rt
	}
	rt.name = name
	return rt
}

func splitSegments(p string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return out
}

func groupOperation(kind routeKind, method string) string {
	switch kind {
	case routeGroup:
		switch method {
		case http.MethodPost:
			return opGroupSend
		case http.MethodGet:
			return opGroupCount
		case http.MethodHead:
			return opGroupHead
		}
	case routeGroupConns:
		if method == http.MethodGet {
			return opGroupList
		}
	case routeGroupMember:
		switch method {
		case http.MethodPut:
			return opGroupAdd
		case http.MethodDelete:
			return opGroupRemove
		}
	case routeUser:
		switch method {
		case http.MethodPost:
			return opUserSend
		case http.MethodGet:
			return opUserCount
		case http.MethodHead:
			return opUserHead
		case http.MethodDelete:
			return opUserClose
		}
	case routeUserConns:
		if method == http.MethodGet {
			return opUserList
		}
	case routeBroadcast:
		if method == http.MethodPost {
			return opBroadcast
		}
	}
	return opUnknown
}

func classifyGroups(err error) *apiError {
	switch {
	case errors.Is(err, ErrInvalidName):
		return errBadRequest("invalid group or user name")
	case errors.Is(err, ErrInvalidCursor):
		return errBadRequest("invalid cursor")
	case errors.Is(err, ErrTooManyGroups):
		return &apiError{http.StatusConflict, codeConflict, err.Error()}
	}
	return classify(err)
}

func (a *API) serveGroups(ctx context.Context, w http.ResponseWriter, r *http.Request, rt route, op string, body []byte) int {
	g := a.groups
	fail := func(err error) int { return writeError(w, r, classifyGroups(err)) }
	switch op {
	case opGroupSend, opUserSend, opBroadcast:
		if len(body) == 0 {
			return writeError(w, r, errBadRequest("empty message"))
		}
		binary, e := a.frameType(r, body)
		if e != nil {
			return writeError(w, r, e)
		}
		var err error
		switch op {
		case opGroupSend:
			excluded := r.URL.Query().Get("excluded")
			if excluded != "" && !conn.ValidID(excluded) {
				return writeError(w, r, errBadRequest("invalid excluded connection id"))
			}
			err = g.SendGroup(ctx, rt.name, body, binary, excluded)
		case opUserSend:
			err = g.SendUser(ctx, rt.name, body, binary)
		default:
			err = g.Broadcast(ctx, body, binary)
		}
		if err != nil {
			return fail(err)
		}
		return writeJSON(w, bodyEmpty)
	case opGroupCount, opUserCount, opGroupHead, opUserHead:
		count := g.GroupCount
		key := "group"
		if op == opUserCount || op == opUserHead {
			count, key = g.UserCount, "user"
		}
		n, err := count(ctx, rt.name)
		if err != nil {
			return fail(err)
		}
		if op == opGroupHead || op == opUserHead {
			if n == 0 {
				return writeError(w, r, &apiError{http.StatusNotFound, codeNotFound, "no connections"})
			}
			w.WriteHeader(http.StatusOK)
			return http.StatusOK
		}
		out, _ := json.Marshal(map[string]any{key: rt.name, "connections": n})
		return writeJSON(w, out)
	case opGroupList, opUserList:
		q := r.URL.Query()
		limit := defaultListLimit
		if s := q.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > maxListLimit {
				return writeError(w, r, errBadRequest("limit must be 1-1000"))
			}
			limit = n
		}
		list := g.GroupConnections
		if op == opUserList {
			list = g.UserConnections
		}
		ids, next, err := list(ctx, rt.name, q.Get("cursor"), limit)
		if err != nil {
			return fail(err)
		}
		if ids == nil {
			ids = []string{}
		}
		out, _ := json.Marshal(struct {
			Connections []string `json:"connections"`
			Cursor      string   `json:"cursor,omitempty"`
		}{ids, next})
		return writeJSON(w, out)
	case opGroupAdd, opGroupRemove:
		change := g.AddToGroup
		if op == opGroupRemove {
			change = g.RemoveFromGroup
		}
		if err := change(ctx, rt.name, rt.id); err != nil {
			return fail(err)
		}
		w.WriteHeader(http.StatusNoContent)
		return http.StatusNoContent
	case opUserClose:
		code, reason, perr := closeParams(r)
		if perr != nil {
			return writeError(w, r, perr)
		}
		if err := g.CloseUser(ctx, rt.name, code, reason); err != nil {
			return fail(err)
		}
		w.WriteHeader(http.StatusNoContent)
		return http.StatusNoContent
	}
	return writeError(w, r, &apiError{http.StatusMethodNotAllowed, codeMethodNotAllowed, "method " + r.Method + " not allowed"})
}
