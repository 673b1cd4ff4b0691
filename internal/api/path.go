package api

import (
	"net/url"

	"github.com/switchboardgw/switchboard/internal/conn"
)

type routeKind uint8

const (
	routeNone  routeKind = iota // not an @connections path: 403 like API Gateway
	routeConn                   // {prefix}/@connections/{id}
	routeBatch                  // {prefix}/@connections (batch extension)
	// The groups extension (groups.go); keep these last: extension() relies on it.
	routeGroup       // {prefix}/@groups/{group}
	routeGroupConns  // {prefix}/@groups/{group}/connections
	routeGroupMember // {prefix}/@groups/{group}/connections/{id}
	routeUser        // {prefix}/@users/{user}
	routeUserConns   // {prefix}/@users/{user}/connections
	routeBroadcast   // {prefix}/@broadcast
)

// route is a parsed request path. For routeConn, bad is non-empty when the
// ID is malformed (400) and id is the decoded, valid ID otherwise.
type route struct {
	kind routeKind
	id   string
	name string // group or user name (extension routes), decoded and valid
	bad  string
}

// maxEscapedID bounds the ID segment before it is decoded: every character
// of a valid ID escaped is 3 bytes.
const maxEscapedID = 3 * conn.IDLen

// parsePath finds the @connections route in an escaped (raw, as sent) path.
// Working on the escaped form means an ID that decodes to something with a
// '/' is still one segment, and so cannot change the route. Any number of
// segments may precede "@connections" (the stage the SDK appends to its
// endpoint, or more); they are ignored. The first "@connections" segment
// ("%40connections" too) decides: after it comes nothing (batch) or exactly
// one segment (the ID).
func parsePath(p string) route {
	if p == "" || p[0] != '/' {
		return route{}
	}
	start := 1
	for start <= len(p) {
		end := start
		for end < len(p) && p[end] != '/' {
			end++
		}
		if isConnectionsSegment(p[start:end]) {
			return parseAfterConnections(p[end:])
		}
		if kind, ok := extensionSegment(p[start:end]); ok {
			return parseExtension(kind, p[end:])
		}
		start = end + 1
	}
	return route{}
}

// parseAfterConnections handles rest, the path after the "@connections"
// segment: "" or "/..." .
func parseAfterConnections(rest string) route {
	if rest == "" {
		return route{kind: routeBatch}
	}
	seg := rest[1:]
	for i := 0; i < len(seg); i++ {
		if seg[i] == '/' {
			return route{} // more segments or a trailing slash: no such route
		}
	}
	if seg == "" {
		return route{kind: routeConn, bad: "missing connection id"}
	}
	if len(seg) > maxEscapedID {
		return route{kind: routeConn, bad: "invalid connection id"}
	}
	id, err := url.PathUnescape(seg)
	if err != nil || !conn.ValidID(id) {
		return route{kind: routeConn, bad: "invalid connection id"}
	}
	return route{kind: routeConn, id: id}
}

func isConnectionsSegment(s string) bool {
	const word = "connections"
	switch {
	case len(s) == 1+len(word) && s[0] == '@':
		return s[1:] == word
	case len(s) == 3+len(word) && s[0] == '%' && s[1] == '4' && s[3:] == word:
		return s[2] == '0'
	}
	return false
}
