package cluster

import (
	"errors"
	"fmt"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// The error ↔ status codec of the node command protocol: an owner encodes
// the error of a command as the Sb-Status of its reply, the router decodes it
// back into the same conn error; the same words label the command metrics.
// One table, so the two directions cannot disagree. docs/cluster.md lists
// the statuses.
var statuses = []struct {
	status string
	err    error
}{
	{"gone", conn.ErrGone},
	{"buffer_full", conn.ErrBufferFull},
	{"too_large", conn.ErrTooLarge},
	{"invalid_id", conn.ErrInvalidID},
	{"invalid_close_code", conn.ErrInvalidCloseCode},
	{"unavailable", conn.ErrUnavailable},
	{"invalid_state", conn.ErrInvalidState},
}

const (
	statusOK     = "ok"
	statusFailed = "error" // any other failure; Sb-Error carries its message
)

// errRemote is an owner-side failure without a conn error of its own.
var errRemote = errors.New("owner node failed")

// resultLabel maps a command error to its status: a bounded label value.
func resultLabel(err error) string {
	if err == nil {
		return statusOK
	}
	for _, s := range statuses {
		if errors.Is(err, s.err) {
			return s.status
		}
	}
	return statusFailed
}

// statusError maps a reply status back to the error the owner returned; msg
// is the reply's Sb-Error.
func statusError(status, msg string) error {
	if status == statusOK {
		return nil
	}
	for _, s := range statuses {
		if status == s.status {
			return s.err
		}
	}
	if msg == "" {
		msg = status
	}
	return fmt.Errorf("%w: %s", errRemote, msg)
}
