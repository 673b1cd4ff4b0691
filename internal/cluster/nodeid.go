package cluster

import (
	"crypto/rand"
	"encoding/base32"
	"os"
	"strings"
)

// maxNodeID bounds node IDs: they appear in every Redis record and in NATS
// subjects.
const maxNodeID = 128

// NewNodeID returns an ID unique to this process start: prefix (or, when
// empty, the host name, which is the pod name on Kubernetes) cleaned to
// [A-Za-z0-9_-], a dash, and 8 random lowercase base32 characters. It is safe
// as a NATS subject token and inside a Redis key.
func NewNodeID(prefix string) string {
	if prefix == "" {
		prefix, _ = os.Hostname()
	}
	var b strings.Builder
	for _, c := range prefix {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= maxNodeID-9 {
			break
		}
	}
	if b.Len() == 0 {
		b.WriteString("node")
	}
	var r [5]byte
	if _, err := rand.Read(r[:]); err != nil {
		panic("cluster: crypto/rand failed: " + err.Error()) // cannot happen on Linux
	}
	b.WriteByte('-')
	b.WriteString(strings.ToLower(base32.StdEncoding.EncodeToString(r[:])))
	return b.String()
}

// ValidNodeID reports whether s can be a node ID: 1–128 characters of
// [A-Za-z0-9_-]. Anything else could break a NATS subject or a Redis hash tag.
func ValidNodeID(s string) bool {
	if s == "" || len(s) > maxNodeID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// NewIncarnation returns a token unique to this process start (16 random
// lowercase base32 characters): stored with the lease, it tells a restarted
// process with a fixed node ID from its predecessor.
func NewIncarnation() string {
	var r [10]byte
	if _, err := rand.Read(r[:]); err != nil {
		panic("cluster: crypto/rand failed: " + err.Error()) // cannot happen on Linux
	}
	return strings.ToLower(base32.StdEncoding.EncodeToString(r[:]))
}
