package edge

import (
	"net"
	"net/netip"
	"sync"

	"github.com/switchboardgw/switchboard/internal/clientip"
)

// sourceLimit counts handshakes in progress per source (clientip.SourceKey:
// an IPv4 address or an IPv6 /64), so one source cannot take every
// MaxHandshakes slot. An entry exists only while its source has a handshake
// in progress, so the map never holds more than MaxHandshakes entries.
type sourceLimit struct {
	max int // per source; 0: no limit

	mu sync.Mutex
	n  map[netip.Prefix]int
}

func newSourceLimit(max int) *sourceLimit {
	return &sourceLimit{max: max, n: map[netip.Prefix]int{}}
}

// acquire counts one more handshake for key, or reports false when key
// already has its share.
func (l *sourceLimit) acquire(key netip.Prefix) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[key] >= l.max {
		return false
	}
	l.n[key]++
	return true
}

// release ends one of key's handshakes; the entry goes at zero.
func (l *sourceLimit) release(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[key]--; l.n[key] <= 0 {
		delete(l.n, key)
	}
}

// sources is the number of sources with a handshake in progress.
func (l *sourceLimit) sources() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.n)
}

// hsSlot is one handshake's claim on its source's share. A connection from
// a trusted proxy holds none at accept: its source is claimed once the
// PROXY header or the forwarding header names the client.
type hsSlot struct {
	key  netip.Prefix
	held bool
}

// claimSource charges the handshake in slot to addr's source. It reports
// false when that source already has its share. Nothing is charged when
// the slot is already held (the source is final), when there is no limit,
// for an address that is not IP, or for a trusted proxy (its connections
// carry many clients; they are charged when the client is known).
func (s *Server) claimSource(slot *hsSlot, addr netip.Addr) bool {
	if slot.held || s.perSource == nil || !addr.IsValid() || s.trustedPeer != nil && s.trustedPeer(addr) {
		return true
	}
	key := clientip.SourceKey(addr, clientip.DefaultIPv6Prefix)
	if !s.perSource.acquire(key) {
		return false
	}
	*slot = hsSlot{key: key, held: true}
	return true
}

// releaseSource gives back what slot holds; safe on an empty slot.
func (s *Server) releaseSource(slot *hsSlot) {
	if slot.held {
		s.perSource.release(slot.key)
		slot.held = false
	}
}

// remoteAddr is nc's peer as a netip.Addr (invalid if it is not TCP).
func remoteAddr(nc net.Conn) netip.Addr {
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
