package cluster

import (
	"errors"
	"fmt"
	"strings"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// The node command protocol on P.node.<nodeID> (request/reply). Parameters
// travel in NATS headers and a post's payload is the message data as is, so
// the hot path has no JSON and no base64. docs/cluster.md describes it.
const (
	hdrCommand = "Sb-Cmd"    // post | info | close | state
	hdrID      = "Sb-Id"     // connection ID
	hdrBinary  = "Sb-Binary" // "1": post as a binary frame
	hdrCode    = "Sb-Code"   // close code; the reason is the data
	hdrStatus  = "Sb-Status" // reply: ok | gone | buffer_full | too_large | invalid_id | invalid_close_code | unavailable | error
	hdrError   = "Sb-Error"  // reply: message when the status is error

	cmdPost  = "post"
	cmdInfo  = "info"
	cmdClose = "close"
	cmdState = "state" // the data is the new state (JSON object)
)

// errRemote is an owner-side failure without a conn error of its own.
var errRemote = errors.New("owner node failed")

// statusError maps a reply status back to the error the owner returned.
func statusError(status, msg string) error {
	switch status {
	case "ok":
		return nil
	case "gone":
		return conn.ErrGone
	case "buffer_full":
		return conn.ErrBufferFull
	case "too_large":
		return conn.ErrTooLarge
	case "invalid_id":
		return conn.ErrInvalidID
	case "invalid_close_code":
		return conn.ErrInvalidCloseCode
	case "unavailable":
		return conn.ErrUnavailable
	case "invalid_state":
		return conn.ErrInvalidState
	}
	if msg == "" {
		msg = status
	}
	return fmt.Errorf("%w: %s", errRemote, msg)
}

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
