package api

import (
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"
)

// requestIDs makes UUID-shaped request IDs: 8 random bytes fixed per
// process, then a counter. Unique per process start without a random read
// per request.
type requestIDs struct {
	prefix [16]byte // hex of 8 random bytes
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("api: crypto/rand failed: " + err.Error()) // cannot happen on Linux
	}
	g := &requestIDs{}
	hex.Encode(g.prefix[:], b[:])
	return g
}

// next returns e.g. "1f3a9c0e-77d2-41b8-0000-00000000002a".
func (g *requestIDs) next() string {
	const hexDigits = "0123456789abcdef"
	n := g.n.Add(1)
	var out [36]byte
	copy(out[0:8], g.prefix[0:8])
	out[8] = '-'
	copy(out[9:13], g.prefix[8:12])
	out[13] = '-'
	copy(out[14:18], g.prefix[12:16])
	out[18] = '-'
	// 16 hex digits of the counter, split 4-12.
	var c [16]byte
	for i := 15; i >= 0; i-- {
		c[i] = hexDigits[n&15]
		n >>= 4
	}
	copy(out[19:23], c[0:4])
	out[23] = '-'
	copy(out[24:36], c[4:16])
	return string(out[:])
}
