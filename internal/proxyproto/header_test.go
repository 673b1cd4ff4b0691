package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"testing"
	"testing/iotest"
)

// v2 builds a v2 header: command (0 LOCAL, 1 PROXY), family/transport byte,
// and the address block plus TLVs.
func v2(cmd, famProto byte, body []byte) []byte {
	b := append([]byte{}, v2Sig...)
	b = append(b, 0x20|cmd, famProto, 0, 0)
	binary.BigEndian.PutUint16(b[14:], uint16(len(body)))
	return append(b, body...)
}

func v2inet(src, dst string, sp, dp uint16, tlvs ...byte) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	body := append(append([]byte{}, s[:]...), d[:]...)
	body = binary.BigEndian.AppendUint16(body, sp)
	body = binary.BigEndian.AppendUint16(body, dp)
	return v2(1, 0x11, append(body, tlvs...))
}

func v2inet6(src, dst string, sp, dp uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	body := append(append([]byte{}, s[:]...), d[:]...)
	body = binary.BigEndian.AppendUint16(body, sp)
	body = binary.BigEndian.AppendUint16(body, dp)
	return v2(1, 0x21, body)
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestParseValidHeaders(t *testing.T) {
	vpce := []byte{0xEA, 0, 5, 0x01, 'v', 'p', 'c', 'e'}
	for _, tc := range []struct {
		name     string
		raw      []byte
		src, dst netip.AddrPort
		local    bool
		tlvs     int
	}{
		{"v1 TCP4", []byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"), ap("192.0.2.1:56324"), ap("198.51.100.2:443"), false, 0},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n"), ap("[2001:db8::1]:65535"), ap("[2001:db8::2]:0"), false, 0},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), netip.AddrPort{}, netip.AddrPort{}, false, 0},
		{"v1 UNKNOWN with addresses", []byte("PROXY UNKNOWN ffff:f...f ffff:f...f 65535 65535\r\n"), netip.AddrPort{}, netip.AddrPort{}, false, 0},
		{"v2 TCP4", v2inet("192.0.2.1", "198.51.100.2", 56324, 443), ap("192.0.2.1:56324"), ap("198.51.100.2:443"), false, 0},
		{"v2 TCP4 with AWS VPC endpoint TLV", v2inet("192.0.2.1", "198.51.100.2", 1, 2, vpce...), ap("192.0.2.1:1"), ap("198.51.100.2:2"), false, 1},
		{"v2 TCP6", v2inet6("2001:db8::1", "2001:db8::2", 1000, 443), ap("[2001:db8::1]:1000"), ap("[2001:db8::2]:443"), false, 0},
		{"v2 LOCAL", v2(0, 0x00, nil), netip.AddrPort{}, netip.AddrPort{}, true, 0},
		{"v2 LOCAL with ignored addresses", v2(0, 0x11, make([]byte, 12)), netip.AddrPort{}, netip.AddrPort{}, true, 0},
		{"v2 UNSPEC", v2(1, 0x00, nil), netip.AddrPort{}, netip.AddrPort{}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Header
			var err error
			if tc.raw[0] == 'P' {
				h, err = ParseV1(tc.raw)
			} else {
				h, err = ParseV2(tc.raw)
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if h.Source != tc.src || h.Destination != tc.dst || h.Local != tc.local || len(h.TLVs) != tc.tlvs {
				t.Fatalf("header = %+v", h)
			}
			// Reading from a stream consumes the header and nothing else,
			// even one byte at a time.
			payload := []byte("GET / HTTP/1.1\r\n")
			for name, r := range map[string]io.Reader{
				"whole":    bytes.NewReader(append(bytes.Clone(tc.raw), payload...)),
				"one byte": iotest.OneByteReader(bytes.NewReader(append(bytes.Clone(tc.raw), payload...))),
			} {
				got, pending, err := readHeader(r, true)
				if err != nil || got == nil || len(pending) != 0 {
					t.Fatalf("%s: readHeader = %+v, %q, %v", name, got, pending, err)
				}
				rest, _ := io.ReadAll(r)
				if !bytes.Equal(rest, payload) {
					t.Fatalf("%s: payload after the header = %q, want %q", name, rest, payload)
				}
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	for name, raw := range map[string][]byte{
		"v1 no CRLF":             []byte("PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n"),
		"v1 bad protocol":        []byte("PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n"),
		"v1 TCP4 with IPv6":      []byte("PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n"),
		"v1 TCP6 with IPv4":      []byte("PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n"),
		"v1 port too big":        []byte("PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n"),
		"v1 port leading zero":   []byte("PROXY TCP4 192.0.2.1 198.51.100.2 080 2\r\n"),
		"v1 negative port":       []byte("PROXY TCP4 192.0.2.1 198.51.100.2 -1 2\r\n"),
		"v1 missing field":       []byte("PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n"),
		"v1 double space":        []byte("PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n"),
		"v1 zone":                []byte("PROXY TCP6 fe80::1%eth0 2001:db8::2 1 2\r\n"),
		"v1 CR inside":           []byte("PROXY TCP4 192.0.2.1\r198.51.100.2 1 2\r\n"),
		"v1 too long":            append(append([]byte("PROXY UNKNOWN "), bytes.Repeat([]byte("x"), 100)...), "\r\n"...),
		"v2 version 1":           func() []byte { b := v2inet("192.0.2.1", "192.0.2.2", 1, 2); b[12] = 0x11; return b }(),
		"v2 command 2":           func() []byte { b := v2inet("192.0.2.1", "192.0.2.2", 1, 2); b[12] = 0x22; return b }(),
		"v2 family 4":            v2(1, 0x41, make([]byte, 12)),
		"v2 transport 3":         v2(1, 0x13, make([]byte, 12)),
		"v2 short INET block":    v2(1, 0x11, make([]byte, 11)),
		"v2 short INET6 block":   v2(1, 0x21, make([]byte, 35)),
		"v2 truncated TLV":       v2inet("192.0.2.1", "192.0.2.2", 1, 2, 0xEA, 0, 9, 1),
		"v2 TLV header cut":      v2inet("192.0.2.1", "192.0.2.2", 1, 2, 0xEA, 0),
		"v2 length beyond bytes": v2inet("192.0.2.1", "192.0.2.2", 1, 2)[:20],
	} {
		t.Run(name, func(t *testing.T) {
			var err error
			if raw[0] == 'P' {
				_, err = ParseV1(raw)
			} else {
				_, err = ParseV2(raw)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			// The stream reader refuses it too (or runs out of input).
			_, _, err = readHeader(bytes.NewReader(raw), true)
			if err == nil {
				t.Fatal("readHeader accepted it")
			}
		})
	}
}

func TestReadWithoutHeader(t *testing.T) {
	for _, req := range []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "PUT /x HTTP/1.1\r\n\r\n", "\r\nGET / HTTP/1.1\r\n"} {
		r := bytes.NewReader([]byte(req))
		h, pending, err := readHeader(r, false)
		if err != nil || h != nil {
			t.Fatalf("%q: header %+v, err %v", req, h, err)
		}
		rest, _ := io.ReadAll(r)
		if got := string(pending) + string(rest); got != req {
			t.Fatalf("bytes lost: got %q, want %q", got, req)
		}
		if _, _, err := readHeader(bytes.NewReader([]byte(req)), true); !errors.Is(err, ErrNoHeader) {
			t.Fatalf("%q with Required: err = %v, want ErrNoHeader", req, err)
		}
	}
}
