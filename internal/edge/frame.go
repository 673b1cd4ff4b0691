package edge

import (
	"encoding/binary"
	"errors"

	"github.com/switchboardgw/switchboard/internal/rules"
)

// Frame opcodes (RFC 6455 §5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// frameHeader is a parsed client frame header.
type frameHeader struct {
	fin     bool
	rsv     byte
	op      byte
	masked  bool
	mask    [4]byte
	length  int64
	hdrSize int
}

var (
	errIncomplete = errors.New("incomplete frame header")
	errBadLength  = errors.New("non-minimal or oversized length")
)

// parseHeader parses a frame header at the start of b without copying. It
// returns errIncomplete when b does not yet hold the whole header: the reactor
// parses whatever bytes have arrived and keeps the rest for the next read.
// A length in a longer form than needed, or with the 64-bit form's top bit
// set, is errBadLength: the connection is closed 1002.
func parseHeader(b []byte) (h frameHeader, err error) {
	if len(b) < 2 {
		return h, errIncomplete
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = (b[0] >> 4) & 0x7
	h.op = b[0] & 0x0f
	h.masked = b[1]&0x80 != 0
	n := 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, errIncomplete
		}
		h.length = int64(binary.BigEndian.Uint16(b[2:4]))
		if h.length < 126 {
			// RFC 6455 §5.2: "the minimal number of bytes MUST be used".
			return h, errBadLength
		}
		n = 4
	case 127:
		if len(b) < 10 {
			return h, errIncomplete
		}
		v := binary.BigEndian.Uint64(b[2:10])
		if v>>63 != 0 || v <= 0xffff {
			// The top bit must be 0, and a length that fits in 16 bits
			// must use the 16-bit form (RFC 6455 §5.2).
			return h, errBadLength
		}
		h.length = int64(v)
		n = 10
	default:
		h.length = int64(l)
	}
	if h.masked {
		if len(b) < n+4 {
			return h, errIncomplete
		}
		copy(h.mask[:], b[n:n+4])
		n += 4
	}
	h.hdrSize = n
	return h, nil
}

// appendHeader appends an unmasked server frame header to dst.
func appendHeader(dst []byte, fin bool, op byte, length int) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	switch {
	case length <= 125:
		return append(dst, b0, byte(length))
	case length <= 0xffff:
		return append(dst, b0, 126, byte(length>>8), byte(length))
	default:
		var l [8]byte
		binary.BigEndian.PutUint64(l[:], uint64(length))
		return append(append(dst, b0, 127), l[:]...)
	}
}

// closePayload builds a close frame's payload: code and a reason cut to fit.
func closePayload(code int, reason string) []byte {
	if code == CodeNoStatus || code == CodeAbnormal || code == 0 {
		return nil // reserved codes are never sent: an empty close frame
	}
	if len(reason) > rules.MaxCloseReason {
		reason = reason[:rules.MaxCloseReason]
	}
	p := make([]byte, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	copy(p[2:], reason)
	return p
}
