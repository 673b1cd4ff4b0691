package groups

import (
	"encoding/binary"
	"errors"
)

// Fan-out messages on <prefix>.group.<token>, <prefix>.user.<token> and
// <prefix>.broadcast carry a small binary envelope, so the hot path parses no
// headers and copies nothing (docs/groups.md):
//
//	send:  op ('T' text | 'B' binary), 1 byte length n of the excluded
//	       connection ID (0 or 16), n bytes of it, then the payload
//	close: op 'C', 2 bytes close code (big endian), then the reason
const (
	opText   = 'T'
	opBinary = 'B'
	opClose  = 'C'
)

var errBadEnvelope = errors.New("groups: malformed fan-out message")

func encodeSend(data []byte, binary bool, excluded string) []byte {
	b := make([]byte, 0, 2+len(excluded)+len(data))
	op := byte(opText)
	if binary {
		op = opBinary
	}
	b = append(b, op, byte(len(excluded)))
	b = append(b, excluded...)
	return append(b, data...)
}

func encodeClose(code int, reason string) []byte {
	b := make([]byte, 3, 3+len(reason))
	b[0] = opClose
	binary.BigEndian.PutUint16(b[1:], uint16(code))
	return append(b, reason...)
}

// envelope is a decoded fan-out message; its slices alias the NATS message.
type envelope struct {
	op       byte
	excluded []byte
	payload  []byte // send: the message; close: the reason
	code     int
}

func decodeEnvelope(b []byte) (envelope, error) {
	if len(b) < 2 {
		return envelope{}, errBadEnvelope
	}
	switch b[0] {
	case opText, opBinary:
		n := int(b[1])
		if len(b) < 2+n {
			return envelope{}, errBadEnvelope
		}
		return envelope{op: b[0], excluded: b[2 : 2+n], payload: b[2+n:]}, nil
	case opClose:
		if len(b) < 3 {
			return envelope{}, errBadEnvelope
		}
		return envelope{op: opClose, code: int(binary.BigEndian.Uint16(b[1:3])), payload: b[3:]}, nil
	}
	return envelope{}, errBadEnvelope
}

// Membership commands to the node owning a connection travel the node
// command protocol (internal/nodecmd, <prefix>.node.<node>): Sb-Cmd one of
// these, Sb-Id the connection, the group name as the data; the reply's
// Sb-Status is the codec's (gone, too_many_groups, invalid_name, …).
const (
	cmdAdd    = "group_add"
	cmdRemove = "group_remove"
)
