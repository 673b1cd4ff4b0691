// Package nodecmd is the one node-to-node command protocol: request/reply on
// <prefix>.node.<nodeID>, parameters in NATS headers, the payload as is (no
// JSON or base64 on the hot path), the outcome as a status header decoded
// back into the error the owner returned, and one rule for an owner that
// does not answer (Client.Call). Connection commands (internal/cluster) and
// group membership commands (internal/groups) both travel this way; a
// node's Server dispatches them to the handlers registered for them.
// docs/cluster.md has the spec table.
package nodecmd

import (
	"strings"

	"github.com/nats-io/nats.go"
)

// Headers every command carries; a command's own parameters are headers of
// its own (the commands' packages define them).
const (
	HdrCommand = "Sb-Cmd"    // the command name
	HdrID      = "Sb-Id"     // the connection the command is about
	HdrStatus  = "Sb-Status" // reply: a status of status.go
	HdrError   = "Sb-Error"  // reply: the owner's one-line message when the status is not ok
)

// Subject is the subject a node serves its commands on.
func Subject(prefix, node string) string { return prefix + ".node." + node }

// NewRequest starts a command about connection id; Call sets the subject.
func NewRequest(cmd, id string) *nats.Msg {
	m := nats.NewMsg("")
	m.Header.Set(HdrCommand, cmd)
	m.Header.Set(HdrID, id)
	return m
}

// HeaderSafe makes s fit in a NATS header value: one line, bounded.
func HeaderSafe(s string) string {
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
