// Package proxyproto reads the PROXY protocol (v1 text and v2 binary, as
// sent by HAProxy and AWS Network Load Balancers) on a net.Listener, so the
// node sees the client's address instead of the load balancer's.
//
// The header is read straight from the socket, exactly its own bytes and
// not one more: the edge hands the socket's file descriptor to its epoll
// reactor after the handshake, and a payload byte held in a user-space
// buffer would be lost to it.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// Errors a connection's first Read can return.
var (
	// ErrMalformed: the header is not valid PROXY protocol.
	ErrMalformed = errors.New("proxyproto: malformed header")
	// ErrNoHeader: Config.Required, and the connection did not start with a header.
	ErrNoHeader = errors.New("proxyproto: no PROXY protocol header")
	// ErrUntrusted: Config.Required, and the peer is not in Config.Trusted.
	ErrUntrusted = errors.New("proxyproto: peer not trusted to send a PROXY header")
)

// Header is a parsed PROXY protocol header.
type Header struct {
	Version int // 1 or 2
	// Local: a v2 LOCAL command (the proxy's own connection, e.g. a health
	// check): the addresses are the socket's.
	Local bool
	// Source and Destination: the client and the address it connected to.
	// Not valid for v1 UNKNOWN, v2 LOCAL, or v2 families other than
	// INET/INET6.
	Source, Destination netip.AddrPort
	// TLVs of a v2 header (e.g. 0xEA: the AWS VPC endpoint ID).
	TLVs []TLV
}

// TLV is one v2 type-length-value extension.
type TLV struct {
	Type  byte
	Value []byte
}

const (
	v1MaxLen = 107 // the spec's bound, CRLF included
	v2HdrLen = 16
)

var (
	v1Prefix  = []byte("PROXY ")
	v2Sig     = []byte("\r\n\r\n\x00\r\nQUIT\n")
	v1Unknown = []byte("PROXY UNKNOWN")
)

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// ParseV1 parses a complete v1 line, CRLF included:
// "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n" or "PROXY UNKNOWN…\r\n".
func ParseV1(line []byte) (Header, error) {
	h := Header{Version: 1}
	if len(line) > v1MaxLen {
		return h, malformed("v1 line longer than %d bytes", v1MaxLen)
	}
	body, ok := bytes.CutSuffix(line, []byte("\r\n"))
	if !ok || !bytes.HasPrefix(body, v1Prefix) || bytes.ContainsAny(body, "\r\n") {
		return h, malformed("v1 line must be \"PROXY …\\r\\n\"")
	}
	if bytes.Equal(body, v1Unknown) || bytes.HasPrefix(body, append(v1Unknown, ' ')) {
		return h, nil // the receiver must ignore what follows UNKNOWN
	}
	f := bytes.Split(body, []byte(" "))
	if len(f) != 6 {
		return h, malformed("v1 line has %d fields, want 6", len(f))
	}
	want4 := false
	switch string(f[1]) {
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return h, malformed("v1 protocol %q", f[1])
	}
	src, err1 := v1Addr(f[2], want4)
	dst, err2 := v1Addr(f[3], want4)
	sp, err3 := v1Port(f[4])
	dp, err4 := v1Port(f[5])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return h, err
	}
	h.Source, h.Destination = netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp)
	return h, nil
}

func v1Addr(b []byte, want4 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(string(b))
	if err != nil || a.Zone() != "" || a.Is4() != want4 {
		return a, malformed("v1 address %q", b)
	}
	return a, nil
}

func v1Port(b []byte) (uint16, error) {
	if len(b) == 0 || len(b) > 5 || len(b) > 1 && b[0] == '0' {
		return 0, malformed("v1 port %q", b)
	}
	n, err := strconv.ParseUint(string(b), 10, 16)
	if err != nil {
		return 0, malformed("v1 port %q", b)
	}
	return uint16(n), nil
}

// ParseV2 parses a complete v2 header: the 16 fixed bytes and exactly the
// length they announce.
func ParseV2(b []byte) (Header, error) {
	h := Header{Version: 2}
	if len(b) < v2HdrLen || !bytes.Equal(b[:12], v2Sig) {
		return h, malformed("v2 signature")
	}
	if b[12]>>4 != 2 {
		return h, malformed("v2 version %d", b[12]>>4)
	}
	n := int(binary.BigEndian.Uint16(b[14:16]))
	if len(b) != v2HdrLen+n {
		return h, malformed("v2 length %d, have %d bytes", n, len(b)-v2HdrLen)
	}
	rest := b[v2HdrLen:]
	switch b[12] & 0xf {
	case 0: // LOCAL: addresses (if any) are meaningless
		h.Local = true
		return h, nil
	case 1: // PROXY
	default:
		return h, malformed("v2 command %d", b[12]&0xf)
	}
	fam, proto := b[13]>>4, b[13]&0xf
	if proto > 2 {
		return h, malformed("v2 transport %d", proto)
	}
	var alen int
	switch fam {
	case 0: // UNSPEC: no address
	case 1: // INET
		alen = 12
	case 2: // INET6
		alen = 36
	case 3: // UNIX
		alen = 216
	default:
		return h, malformed("v2 address family %d", fam)
	}
	if len(rest) < alen {
		return h, malformed("v2 address block of %d bytes for family %d", len(rest), fam)
	}
	switch fam {
	case 1:
		h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(rest[0:4])), binary.BigEndian.Uint16(rest[8:10]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom4([4]byte(rest[4:8])), binary.BigEndian.Uint16(rest[10:12]))
	case 2:
		h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(rest[0:16])), binary.BigEndian.Uint16(rest[32:34]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom16([16]byte(rest[16:32])), binary.BigEndian.Uint16(rest[34:36]))
	}
	for t := rest[alen:]; len(t) > 0; {
		if len(t) < 3 {
			return h, malformed("v2 TLV truncated")
		}
		l := int(binary.BigEndian.Uint16(t[1:3]))
		if len(t) < 3+l {
			return h, malformed("v2 TLV of %d bytes, %d left", l, len(t)-3)
		}
		h.TLVs = append(h.TLVs, TLV{Type: t[0], Value: t[3 : 3+l : 3+l]})
		t = t[3+l:]
	}
	return h, nil
}
