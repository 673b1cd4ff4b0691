package cluster

import "strings"

// The node command protocol on P.node.<nodeID> (request/reply). Parameters
// travel in NATS headers and a post's payload is the message data as is, so
// the hot path has no JSON and no base64. docs/cluster.md describes it.
const (
	hdrCommand = "Sb-Cmd"    // post | info | close | state
	hdrID      = "Sb-Id"     // connection ID
	hdrBinary  = "Sb-Binary" // "1": post as a binary frame
	hdrCode    = "Sb-Code"   // close code; the reason is the data
	hdrStatus  = "Sb-Status" // reply: a status of status.go
	hdrError   = "Sb-Error"  // reply: message when the status is error

	cmdPost  = "post"
	cmdInfo  = "info"
	cmdClose = "close"
	cmdState = "state" // the data is the new state (JSON object)
)

// headerSafe makes s fit in a NATS header value: one line, bounded.
func headerSafe(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

func nodeSubject(prefix, node string) string { return prefix + ".node." + node }
