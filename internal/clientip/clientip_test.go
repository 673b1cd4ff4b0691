package clientip

import (
	"net/http"
	"net/netip"
	"testing"
)

func resolver(t *testing.T, header string, trusted ...string) *Resolver {
	t.Helper()
	p, err := ParsePrefixes(trusted)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{TrustedProxies: p, Header: header})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// The load balancer is 10.0.0.5 (in 10.0.0.0/8); the ingress proxy 10.1.2.3.
func TestXForwardedFor(t *testing.T) {
	r := resolver(t, "", "10.0.0.0/8", "2001:db8:ffff::/48")
	for _, tc := range []struct {
		name, peer string
		h          http.Header
		want       string
	}{
		{"direct client, no header", "203.0.113.9", nil, "203.0.113.9"},
		{"direct client spoofs XFF", "203.0.113.9", hdr("X-Forwarded-For", "1.1.1.1"), "203.0.113.9"},
		{"one trusted proxy", "10.0.0.5", hdr("X-Forwarded-For", "203.0.113.9"), "203.0.113.9"},
		{"client prepends a fake hop", "10.0.0.5", hdr("X-Forwarded-For", "1.1.1.1, 203.0.113.9"), "203.0.113.9"},
		{"client fakes a trusted hop", "10.0.0.5", hdr("X-Forwarded-For", "10.9.9.9, 203.0.113.9"), "203.0.113.9"},
		{"two trusted proxies", "10.0.0.5", hdr("X-Forwarded-For", "1.1.1.1, 203.0.113.9, 10.1.2.3"), "203.0.113.9"},
		{"header over several lines", "10.0.0.5", hdr("X-Forwarded-For", "1.1.1.1", "X-Forwarded-For", "203.0.113.9, 10.1.2.3"), "203.0.113.9"},
		{"trusted peer without header", "10.0.0.5", nil, "10.0.0.5"},
		{"all hops trusted", "10.0.0.5", hdr("X-Forwarded-For", "10.3.3.3, 10.1.2.3"), "10.3.3.3"},
		{"garbage in the trusted part", "10.0.0.5", hdr("X-Forwarded-For", "203.0.113.9, bogus, 10.1.2.3"), "10.1.2.3"},
		{"garbage from the client is left of the answer", "10.0.0.5", hdr("X-Forwarded-For", "<script>, 203.0.113.9"), "203.0.113.9"},
		{"hop with port", "10.0.0.5", hdr("X-Forwarded-For", "203.0.113.9:51234"), "203.0.113.9"},
		{"IPv6 hop", "10.0.0.5", hdr("X-Forwarded-For", "2001:db8::7"), "2001:db8::7"},
		{"bracketed IPv6 with port", "10.0.0.5", hdr("X-Forwarded-For", "[2001:db8::7]:443"), "2001:db8::7"},
		{"IPv4-mapped peer", "::ffff:10.0.0.5", hdr("X-Forwarded-For", "203.0.113.9"), "203.0.113.9"},
		{"IPv4-mapped hop", "10.0.0.5", hdr("X-Forwarded-For", "::ffff:203.0.113.9"), "203.0.113.9"},
		{"trusted IPv6 proxy", "2001:db8:ffff:1::2", hdr("X-Forwarded-For", "198.51.100.1"), "198.51.100.1"},
		{"Forwarded ignored when XFF configured", "10.0.0.5", hdr("Forwarded", "for=1.1.1.1"), "10.0.0.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := r.ClientIP(netip.MustParseAddr(tc.peer), tc.h)
			if got != netip.MustParseAddr(tc.want) {
				t.Fatalf("ClientIP = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestForwarded(t *testing.T) {
	r := resolver(t, "forwarded", "10.0.0.0/8")
	for _, tc := range []struct {
		name, peer string
		h          http.Header
		want       string
	}{
		{"simple", "10.0.0.5", hdr("Forwarded", "for=203.0.113.9;proto=https"), "203.0.113.9"},
		{"quoted IPv6 with port", "10.0.0.5", hdr("Forwarded", `for="[2001:db8:cafe::17]:4711"`), "2001:db8:cafe::17"},
		{"client spoofs an element", "10.0.0.5", hdr("Forwarded", "for=1.1.1.1, for=203.0.113.9;by=10.0.0.5"), "203.0.113.9"},
		{"unterminated quote from the client", "10.0.0.5", hdr("Forwarded", `for="1.1.1.1, for=203.0.113.9`), "203.0.113.9"},
		{"obfuscated name stops the walk", "10.0.0.5", hdr("Forwarded", "for=_hidden, for=10.1.1.1"), "10.1.1.1"},
		{"untrusted peer", "203.0.113.50", hdr("Forwarded", "for=1.1.1.1"), "203.0.113.50"},
		{"XFF ignored when Forwarded configured", "10.0.0.5", hdr("X-Forwarded-For", "1.1.1.1"), "10.0.0.5"},
		{"case-insensitive parameter", "10.0.0.5", hdr("Forwarded", "proto=http;For=203.0.113.9"), "203.0.113.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := r.ClientIP(netip.MustParseAddr(tc.peer), tc.h)
			if got != netip.MustParseAddr(tc.want) {
				t.Fatalf("ClientIP = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestNoTrustedProxiesIgnoresHeaders(t *testing.T) {
	r := resolver(t, "")
	if got := r.ClientIPString("10.0.0.5", hdr("X-Forwarded-For", "1.1.1.1")); got != "10.0.0.5" {
		t.Fatalf("ClientIPString = %s, want the peer", got)
	}
	if got := r.ClientIPString("not-an-ip", nil); got != "not-an-ip" {
		t.Fatalf("unparsable peer changed to %q", got)
	}
}

func TestConfig(t *testing.T) {
	p, err := ParsePrefixes([]string{"10.0.0.0/8", " 192.0.2.7 ", "::ffff:192.0.2.8", "2001:db8::/32", ""})
	if err != nil || len(p) != 4 || p[1].Bits() != 32 || p[2] != netip.MustParsePrefix("192.0.2.8/32") {
		t.Fatalf("ParsePrefixes = %v, %v", p, err)
	}
	if _, err := ParsePrefixes([]string{"10.0.0.0/33"}); err == nil {
		t.Fatal("bad CIDR accepted")
	}
	if _, err := New(Config{Header: "X-Real-IP"}); err == nil {
		t.Fatal("unsupported header accepted")
	}
	r, err := New(Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}})
	if err != nil || !r.Trusted(netip.MustParseAddr("10.1.1.1")) {
		t.Fatalf("IPv4-mapped trusted prefix not applied to IPv4 peers: %v", err)
	}
}
