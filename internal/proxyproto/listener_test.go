package proxyproto

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

func listen(t *testing.T, cfg Config) *Listener {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen(inner, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// dialAndSend connects and writes each chunk as its own write (TCP_NODELAY,
// so they usually leave as separate segments).
func dialAndSend(t *testing.T, l *Listener, chunks ...[]byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for _, ch := range chunks {
		if _, err := c.Write(ch); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func accept(t *testing.T, l *Listener) *Conn {
	t.Helper()
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	return nc.(*Conn)
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

func TestRemoteAddrFromHeader(t *testing.T) {
	payload := []byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n")
	for _, tc := range []struct {
		name string
		hdr  []byte
		want string // "" = the socket's own address
	}{
		{"v1 TCP4", []byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"), "192.0.2.1:56324"},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n"), "[2001:db8::1]:4000"},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), ""},
		{"v2 TCP4", v2inet("192.0.2.1", "198.51.100.2", 56324, 443), "192.0.2.1:56324"},
		{"v2 TCP6", v2inet6("2001:db8::1", "2001:db8::2", 4000, 443), "[2001:db8::1]:4000"},
		{"v2 LOCAL", v2(0, 0, nil), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := listen(t, Config{Required: true, TrustAll: true})
			// The header split over several writes, the payload right behind it.
			half := len(tc.hdr) / 2
			cl := dialAndSend(t, l, tc.hdr[:1], tc.hdr[1:half], append(bytes.Clone(tc.hdr[half:]), payload...))
			c := accept(t, l)
			if got := readN(t, c, len(payload)); !bytes.Equal(got, payload) {
				t.Fatalf("payload = %q, want %q", got, payload)
			}
			want := tc.want
			if want == "" {
				want = cl.LocalAddr().String()
			}
			ra, ok := c.RemoteAddr().(*net.TCPAddr)
			if !ok || ra.String() != want {
				t.Fatalf("RemoteAddr = %#v, want *net.TCPAddr %s", c.RemoteAddr(), want)
			}
		})
	}
}

// After the first Read, the socket holds every payload byte: the edge's
// reactor reads the file descriptor directly.
func TestNoPayloadBytesHeldBack(t *testing.T) {
	l := listen(t, Config{Required: true, TrustAll: true})
	hdr := []byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n")
	cl := dialAndSend(t, l, append(bytes.Clone(hdr), "GET"...))
	c := accept(t, l)
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if c.Buffered() != 0 {
		t.Fatalf("Buffered = %d after a header", c.Buffered())
	}
	if _, err := cl.Write([]byte(" / HTTP/1.1")); err != nil {
		t.Fatal(err)
	}
	// Read the rest straight from the fd, as the edge's reactor does.
	var sc interface {
		SyscallConn() (syscall.RawConn, error)
	} = c
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < len("GET / HTTP/1.1") && time.Now().Before(deadline) {
		buf := make([]byte, 64)
		var n int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			n, rerr = syscall.Read(int(fd), buf)
			return rerr != syscall.EAGAIN
		}); err != nil {
			t.Fatal(err)
		}
		if rerr != nil {
			t.Fatal(rerr)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "GET / HTTP/1.1" {
		t.Fatalf("fd read %q, want the whole payload", got)
	}
}

func TestOptionalHeader(t *testing.T) {
	l := listen(t, Config{TrustAll: true})
	payload := []byte("GET / HTTP/1.1\r\n\r\n")
	cl := dialAndSend(t, l, payload)
	c := accept(t, l)
	if got := readN(t, c, len(payload)); !bytes.Equal(got, payload) {
		t.Fatalf("payload = %q", got)
	}
	if c.RemoteAddr().String() != cl.LocalAddr().String() || c.Header() != nil {
		t.Fatalf("RemoteAddr = %s header %+v, want the socket's peer", c.RemoteAddr(), c.Header())
	}
}

func TestRequiredHeaderMissing(t *testing.T) {
	l := listen(t, Config{Required: true, TrustAll: true})
	dialAndSend(t, l, []byte("GET / HTTP/1.1\r\n\r\n"))
	c := accept(t, l)
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, ErrNoHeader) {
		t.Fatalf("Read err = %v, want ErrNoHeader", err)
	}
}

func TestMalformedHeaderRefused(t *testing.T) {
	l := listen(t, Config{TrustAll: true})
	dialAndSend(t, l, []byte("PROXY TCP4 192.0.2.1 nope 1 2\r\nGET / HTTP/1.1\r\n\r\n"))
	c := accept(t, l)
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Read err = %v, want ErrMalformed", err)
	}
}

func TestUntrustedPeer(t *testing.T) {
	elsewhere := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} // not loopback
	spoof := []byte("PROXY TCP4 6.6.6.6 198.51.100.2 1 2\r\n")

	t.Run("refused when required", func(t *testing.T) {
		l := listen(t, Config{Required: true, Trusted: elsewhere})
		dialAndSend(t, l, spoof)
		c := accept(t, l)
		if _, err := c.Read(make([]byte, 10)); !errors.Is(err, ErrUntrusted) {
			t.Fatalf("Read err = %v, want ErrUntrusted", err)
		}
	})
	t.Run("passed through when optional", func(t *testing.T) {
		l := listen(t, Config{Trusted: elsewhere})
		cl := dialAndSend(t, l, spoof)
		c := accept(t, l)
		if got := readN(t, c, len(spoof)); !bytes.Equal(got, spoof) {
			t.Fatalf("bytes = %q, want the header as payload", got)
		}
		if c.RemoteAddr().String() != cl.LocalAddr().String() {
			t.Fatalf("RemoteAddr = %s: an untrusted header was believed", c.RemoteAddr())
		}
	})
	t.Run("trusted peer believed", func(t *testing.T) {
		l := listen(t, Config{Required: true, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
		dialAndSend(t, l, spoof)
		c := accept(t, l)
		if err := c.Handshake(); err != nil || c.RemoteAddr().String() != "6.6.6.6:1" {
			t.Fatalf("RemoteAddr = %s, err %v", c.RemoteAddr(), err)
		}
	})
}

// A client that never sends its header holds up neither Accept nor other
// connections, and its own Read ends at HeaderTimeout.
func TestSlowClientDoesNotBlockAccept(t *testing.T) {
	l := listen(t, Config{Required: true, TrustAll: true, HeaderTimeout: 200 * time.Millisecond})
	dialAndSend(t, l) // silent
	silent := accept(t, l)
	dialAndSend(t, l, []byte("PROXY TCP4 192.0.2.9 198.51.100.2 7 443\r\nhi"))
	fast := accept(t, l)
	if got := readN(t, fast, 2); string(got) != "hi" || fast.RemoteAddr().String() != "192.0.2.9:7" {
		t.Fatalf("second connection: %q from %s", got, fast.RemoteAddr())
	}
	_, err := silent.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("silent client's Read err = %v, want a timeout", err)
	}
}

// The header timeout does not outlive the header: the application's own
// deadline is put back.
func TestDeadlineRestored(t *testing.T) {
	l := listen(t, Config{Required: true, TrustAll: true, HeaderTimeout: 100 * time.Millisecond})
	cl := dialAndSend(t, l, []byte("PROXY UNKNOWN\r\n"))
	c := accept(t, l) // deadline 20s from now
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(300*time.Millisecond, func() { cl.Write([]byte("x")) })
	if got := readN(t, c, 1); string(got) != "x" {
		t.Fatalf("read %q", got)
	}
}

func TestListenNeedsTCP(t *testing.T) {
	ul, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	if _, err := Listen(ul, Config{TrustAll: true}); err == nil {
		t.Fatal("unix listener accepted")
	}
}

// Without a list of trusted peers, a header from anyone would be believed:
// every client could choose its source address. Listen refuses unless
// TrustAll says so explicitly.
func TestListenNeedsTrustedPeers(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	for _, cfg := range []Config{{}, {Required: true}} {
		if _, err := Listen(inner, cfg); !errors.Is(err, ErrNoTrustedPeers) {
			t.Fatalf("Listen(%+v) err = %v, want ErrNoTrustedPeers", cfg, err)
		}
	}
}
