package nodecmd

import (
	"errors"
	"fmt"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// The error ↔ status codec: an owner encodes the error of a command as the
// Sb-Status of its reply, the caller decodes it back into the same conn
// error; the same words label the command metrics. One table, so the two
// directions cannot disagree. docs/cluster.md lists the statuses.
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
	{"invalid_name", conn.ErrInvalidName},
	{"too_many_groups", conn.ErrTooManyGroups},
}

const (
	// StatusOK is the status of a command that succeeded.
	StatusOK     = "ok"
	statusFailed = "error" // any other failure; Sb-Error carries its message
)

// ErrRemote is an owner-side failure without a conn error of its own.
var ErrRemote = errors.New("owner node failed")

// Status maps a command error to its status: a bounded label value.
func Status(err error) string {
	if err == nil {
		return StatusOK
	}
	for _, s := range statuses {
		if errors.Is(err, s.err) {
			return s.status
		}
	}
	return statusFailed
}

// StatusError maps a reply status back to the error the owner returned; msg
// is the reply's Sb-Error (the owner's own wording, kept as the error's
// text: "connection is in too many groups (max 3)").
func StatusError(status, msg string) error {
	if status == StatusOK {
		return nil
	}
	for _, s := range statuses {
		if status == s.status {
			if msg == "" {
				return s.err
			}
			return &ownerError{err: s.err, msg: msg}
		}
	}
	if msg == "" {
		msg = status
	}
	return fmt.Errorf("%w: %s", ErrRemote, msg)
}

// ownerError is a known error in the owner's words.
type ownerError struct {
	err error
	msg string
}

func (e *ownerError) Error() string { return e.msg }
func (e *ownerError) Unwrap() error { return e.err }

// OwnerError returns the owner's own error out of what Call returned
// (without the "on <node>" context Call adds), or err itself.
func OwnerError(err error) error {
	var oe *ownerError
	if errors.As(err, &oe) {
		return oe
	}
	return err
}
