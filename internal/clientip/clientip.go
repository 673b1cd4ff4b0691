// Package clientip finds a request's real source address behind reverse
// proxies. Forwarding headers are believed only as far as they were written
// by trusted proxies: the answer is the right-most address that is not a
// trusted proxy, so a client cannot spoof its address by sending the header
// itself (whatever it sends ends up to the left of what the proxies append).
package clientip

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// Header names the resolver can read.
const (
	XForwardedFor = "X-Forwarded-For"
	Forwarded     = "Forwarded" // RFC 7239
)

// Config configures a Resolver.
type Config struct {
	// TrustedProxies are the networks of the proxies in front of the node
	// (load balancers, ingress). Default: none, so forwarding headers are
	// ignored and the peer address is the client.
	TrustedProxies []netip.Prefix
	// Header is the forwarding header the proxies write: X-Forwarded-For or
	// Forwarded. Only one is read, because a header the proxies do not
	// write is entirely client-controlled. Default: X-Forwarded-For.
	Header string
}

// Validate reports whether c is usable.
func (c Config) Validate() error {
	switch http.CanonicalHeaderKey(c.Header) {
	case "", XForwardedFor, Forwarded:
	default:
		return fmt.Errorf("clientip: header %q (want %s or %s)", c.Header, XForwardedFor, Forwarded)
	}
	for _, p := range c.TrustedProxies {
		if !p.IsValid() {
			return errors.New("clientip: invalid trusted proxy prefix")
		}
	}
	return nil
}

// ParsePrefixes parses a list of CIDRs or bare addresses (a single host),
// as given to -trusted-proxies.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("clientip: %q is not an address or CIDR", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Resolver finds client addresses. Safe for concurrent use.
type Resolver struct {
	trusted []netip.Prefix
	header  string
}

// New builds a Resolver.
func New(cfg Config) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Resolver{header: http.CanonicalHeaderKey(cfg.Header)}
	if r.header == "" {
		r.header = XForwardedFor
	}
	for _, p := range cfg.TrustedProxies {
		// Compare IPv4-mapped IPv6 peers as IPv4.
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		r.trusted = append(r.trusted, p.Masked())
	}
	return r, nil
}

// Trusted reports whether a is a trusted proxy.
func (r *Resolver) Trusted(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the client's address for a request that arrived from
// peer with headers h. When peer is not a trusted proxy, or no header was
// written, the answer is peer. Otherwise the header's entries are walked from
// the right (nearest hop) and the first one that is not a trusted proxy is
// the client. If an entry cannot be parsed (garbage, "unknown", an
// obfuscated Forwarded name), the walk stops and the last good hop is
// returned: nothing left of it can be believed. If every entry is trusted,
// the left-most is returned.
func (r *Resolver) ClientIP(peer netip.Addr, h http.Header) netip.Addr {
	peer = peer.Unmap().WithZone("")
	if len(r.trusted) == 0 || !r.Trusted(peer) {
		return peer
	}
	values := h.Values(r.header)
	last := peer
	// Later header lines were appended later: walk them last to first.
	for i := len(values) - 1; i >= 0; i-- {
		entries := strings.Split(values[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			var a netip.Addr
			var ok bool
			if r.header == Forwarded {
				a, ok = parseForwardedFor(entries[j])
			} else {
				a, ok = parseHop(entries[j])
			}
			if !ok {
				return last
			}
			if !r.Trusted(a) {
				return a
			}
			last = a
		}
	}
	return last
}

// ClientIPString is ClientIP for the edge's string addresses: peer as
// edge.Request.SourceIP. An unparsable peer is returned unchanged.
func (r *Resolver) ClientIPString(peer string, h http.Header) string {
	a, err := netip.ParseAddr(peer)
	if err != nil {
		return peer
	}
	return r.ClientIP(a, h).String()
}

// parseHop reads one X-Forwarded-For entry: an address, optionally with a
// port ("192.0.2.1:443", "[2001:db8::1]:443") as some proxies write it.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), true
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		return parseHop(s[1 : len(s)-1])
	}
	return netip.Addr{}, false
}

// parseForwardedFor reads the for= parameter of one Forwarded element
// (`for=192.0.2.60;proto=https`, `for="[2001:db8::17]:4711"`).
func parseForwardedFor(elem string) (netip.Addr, bool) {
	for _, pair := range strings.Split(elem, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "for") {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		if strings.HasPrefix(v, "[") && !strings.HasSuffix(v, "]") {
			// [v6]:port
			if i := strings.LastIndex(v, "]:"); i > 0 {
				v = v[:i+1]
			}
		}
		return parseHop(v)
	}
	return netip.Addr{}, false
}

// DefaultIPv6Prefix is the prefix length IPv6 sources are grouped by for
// per-source limits: one subscriber usually holds a whole /64, so counting
// single IPv6 addresses would let one client use 2^64 of them.
const DefaultIPv6Prefix = 64

// SourceKey is the unit a per-source limit applies to: the IPv4 address
// (IPv4-mapped IPv6 counts as IPv4), or the IPv6 address's prefix of
// ipv6Bits (DefaultIPv6Prefix when 0). Zones are dropped. Every per-source
// limit (admission's rate, the edge's handshakes in progress) keys on it, so
// they agree on what one source is.
func SourceKey(a netip.Addr, ipv6Bits int) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = ipv6Bits
		if bits == 0 {
			bits = DefaultIPv6Prefix
		}
	}
	p, _ := a.Prefix(bits)
	return p
}
