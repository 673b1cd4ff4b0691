package swload

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"strconv"
)

// WebSocket opcodes (RFC 6455 §5.2).
const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// appendFrame appends one final, masked client frame (clients must mask,
// RFC 6455 §5.3).
func appendFrame(dst []byte, op byte, payload []byte, mask uint32) []byte {
	dst = append(dst, 0x80|op)
	n := len(payload)
	switch {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xFFFF:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	var key [4]byte
	binary.BigEndian.PutUint32(key[:], mask)
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	for i := range payload {
		dst[start+i] ^= key[i&3]
	}
	return dst
}

// frameHeader is a parsed frame header.
type frameHeader struct {
	fin     bool
	op      byte
	masked  bool
	key     [4]byte
	length  int
	hdrSize int
}

// maxFrame bounds a frame the client accepts from a server; a run never
// expects more than its own message size back.
const maxFrame = 16 << 20

// parseHeader parses the frame header at the start of b. ok is false when b
// holds too few bytes yet; err is set for a frame the client refuses.
func parseHeader(b []byte) (h frameHeader, ok bool, err error) {
	if len(b) < 2 {
		return h, false, nil
	}
	h.fin = b[0]&0x80 != 0
	if b[0]&0x70 != 0 {
		return h, false, errProtocol("reserved bits set")
	}
	h.op = b[0] & 0x0F
	h.masked = b[1]&0x80 != 0
	n := int(b[1] & 0x7F)
	off := 2
	switch n {
	case 126:
		if len(b) < 4 {
			return h, false, nil
		}
		n = int(binary.BigEndian.Uint16(b[2:4]))
		off = 4
	case 127:
		if len(b) < 10 {
			return h, false, nil
		}
		v := binary.BigEndian.Uint64(b[2:10])
		if v > maxFrame {
			return h, false, errProtocol("frame too large")
		}
		n = int(v)
		off = 10
	}
	if n > maxFrame {
		return h, false, errProtocol("frame too large")
	}
	if h.op >= opClose && (n > 125 || !h.fin) {
		return h, false, errProtocol("bad control frame")
	}
	if h.masked {
		if len(b) < off+4 {
			return h, false, nil
		}
		copy(h.key[:], b[off:off+4])
		off += 4
	}
	h.length = n
	h.hdrSize = off
	return h, true, nil
}

type errProtocol string

func (e errProtocol) Error() string { return "websocket protocol error: " + string(e) }

// Echo message layout: a JSON object a route selection expression can read
// ("action"), carrying the send time in ns since the run began ("t"), padded
// ("p") to the configured size. A backend that replies with the same body
// works as well as an echo server.
const (
	msgPrefix = `{"action":"echo","t":`
	msgMid    = `,"p":"`
	msgSuffix = `"}`
	tDigits   = 19
)

// msgOverhead is the envelope's size with the longest "t" (19 digits).
const msgOverhead = len(msgPrefix) + tDigits + len(msgMid) + len(msgSuffix)

func appendMessage(dst []byte, t int64, size int) []byte {
	start := len(dst)
	dst = append(dst, msgPrefix...)
	// No zero padding: a number with leading zeros is not JSON, and the
	// edge only selects a route from a valid JSON body. "p" pads instead.
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, msgMid...)
	for used := len(dst) - start + len(msgSuffix); used < size; used++ {
		dst = append(dst, 'x')
	}
	return append(dst, msgSuffix...)
}

var tKey = []byte(`"t":`)

// sendTime extracts the "t" value of an echoed message.
func sendTime(msg []byte) (int64, bool) {
	i := bytes.Index(msg, tKey)
	if i < 0 {
		return 0, false
	}
	msg = msg[i+len(tKey):]
	var v int64
	n := 0
	for n < len(msg) && n < tDigits && msg[n] >= '0' && msg[n] <= '9' {
		v = v*10 + int64(msg[n]-'0')
		n++
	}
	return v, n > 0
}
