package cluster

import (
	"crypto/rand"
	"encoding/base32"
	"os"
	"strings"

	"github.com/switchboardgw/switchboard/internal/rules"
)

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
		if c < 0x80 && rules.IdentByte(byte(c)) {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
		if b.Len() >= rules.MaxNodeID-9 {
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

// ValidNodeID reports whether s can be a node ID (rules.ValidNodeID: 1–128
// bytes of [A-Za-z0-9_-]). Anything else could break a NATS subject or a
// Redis hash tag.
func ValidNodeID(s string) bool { return rules.ValidNodeID(s) }

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
