package proxyproto

import (
	"bytes"
	"encoding/binary"
	"io"
)

// minPeek is how many bytes are read before deciding whether a header is
// there: as long as the shortest v1 line ("PROXY UNKNOWN\r\n"), shorter than
// the v2 fixed part, and shorter than any HTTP request line, so it can never
// reach past a header into the payload.
const minPeek = len("PROXY UNKNOWN\r\n")

// readHeader reads a PROXY header from r, never reading a byte past it.
// If the connection does not start with a header and !required, it returns
// a nil header and the bytes it read (the start of the payload).
func readHeader(r io.Reader, required bool) (*Header, []byte, error) {
	buf := make([]byte, 1, minPeek)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, nil, err
	}
	// Most non-PROXY connections are told apart by their first byte, in
	// one small read.
	if buf[0] != v1Prefix[0] && buf[0] != v2Sig[0] {
		return notHeader(buf, required)
	}
	buf = buf[:minPeek]
	if _, err := io.ReadFull(r, buf[1:]); err != nil {
		return nil, nil, err
	}
	switch {
	case bytes.HasPrefix(buf, v1Prefix):
		return readV1(r, buf)
	case bytes.Equal(buf[:len(v2Sig)], v2Sig):
		return readV2(r, buf)
	}
	return notHeader(buf, required)
}

func notHeader(read []byte, required bool) (*Header, []byte, error) {
	if required {
		return nil, nil, ErrNoHeader
	}
	return nil, read, nil
}

// readV1 completes a v1 line. Each read asks only for as many bytes as the
// shortest valid line could still have, so it never reaches the payload.
func readV1(r io.Reader, line []byte) (*Header, []byte, error) {
	for !bytes.HasSuffix(line, []byte("\r\n")) {
		need, ok := v1Need(line)
		if !ok || len(line) >= v1MaxLen {
			return nil, nil, malformed("v1 line %q", line)
		}
		need = min(need, v1MaxLen-len(line))
		n := len(line)
		line = append(line, make([]byte, need)...)
		if _, err := io.ReadFull(r, line[n:]); err != nil {
			return nil, nil, err
		}
	}
	h, err := ParseV1(line)
	if err != nil {
		return nil, nil, err
	}
	return &h, nil, nil
}

// v1Need is a lower bound on the bytes still to come in a v1 line that
// starts with line (not yet ending in CRLF); !ok if it cannot be valid.
// A TCP4/TCP6 line has five spaces and six non-empty fields, so each field
// not yet started needs a space and a byte, an empty current field a byte,
// and the line CRLF.
func v1Need(line []byte) (int, bool) {
	cr := bytes.IndexByte(line, '\r')
	switch {
	case bytes.IndexByte(line, '\n') >= 0:
		return 0, false
	case cr == len(line)-1:
		return 1, true
	case cr >= 0:
		return 0, false
	case bytes.HasPrefix(line, v1Unknown):
		return 2, true
	}
	spaces := bytes.Count(line, []byte(" "))
	if spaces > 5 {
		return 0, false
	}
	need := 2 + 2*(5-spaces)
	if line[len(line)-1] == ' ' {
		need++
	}
	return need, true
}

// readV2 completes a v2 header: the fixed 16 bytes, then exactly the
// length they announce.
func readV2(r io.Reader, fixed []byte) (*Header, []byte, error) {
	b := make([]byte, v2HdrLen, v2HdrLen+64)
	copy(b, fixed)
	if _, err := io.ReadFull(r, b[len(fixed):v2HdrLen]); err != nil {
		return nil, nil, err
	}
	n := int(binary.BigEndian.Uint16(b[14:16]))
	b = append(b, make([]byte, n)...)
	if _, err := io.ReadFull(r, b[v2HdrLen:]); err != nil {
		return nil, nil, err
	}
	h, err := ParseV2(b)
	if err != nil {
		return nil, nil, err
	}
	return &h, nil, nil
}
