package edge

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/proxyproto"
)

// onlyConn waits for the one established connection of e.
func onlyConn(t *testing.T, e *testEdge) *Conn {
	t.Helper()
	var c *Conn
	eventually(t, "connection established", func() bool {
		e.Each(func(x *Conn) {
			if x.Established() && x.phase().reading() {
				c = x
			}
		})
		return c != nil
	})
	return c
}

// An upgraded connection, plain or behind a PROXY protocol balancer, keeps
// its socket as a bare descriptor (no net.TCPConn, no address objects, no
// runtime poller registration) and still carries messages both ways; its
// source IP is the one seen at connect.
func TestUpgradedSocketIsHeldAsABareDescriptor(t *testing.T) {
	lb := netip.MustParsePrefix("127.0.0.1/32")
	for _, tc := range []struct {
		name, header, sourceIP string
		proxy                  bool
	}{
		{name: "plain", sourceIP: "127.0.0.1"},
		{name: "proxy protocol", header: "PROXY TCP4 192.0.2.7 127.0.0.1 40000 80\r\n", sourceIP: "192.0.2.7", proxy: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts Options
			if tc.proxy {
				tcp, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				ln, err := proxyproto.Listen(tcp, proxyproto.Config{Required: true, Trusted: []netip.Prefix{lb}})
				if err != nil {
					t.Fatal(err)
				}
				opts = Options{Listener: ln, TrustedPeer: lb.Contains}
			}
			e := startEdgeOpts(t, Config{}, newRecorder(), opts)
			cl := dial(t, e.url, wsFrom("127.0.0.1", tc.header))
			c := onlyConn(t, e)
			if _, ok := c.nc.(*fdSocket); !ok {
				t.Fatalf("socket held as %T, want the bare descriptor", c.nc)
			}
			if c.SourceIP() != tc.sourceIP {
				t.Fatalf("source IP %q, want %q", c.SourceIP(), tc.sourceIP)
			}
			cl.send(t, ws.NewTextFrame([]byte("ping me")))
			if f := cl.readFrame(t); string(f.Payload) != "ping me" {
				t.Fatalf("echo %q", f.Payload)
			}
		})
	}
}

// A client that stops reading is cut off after WriteTimeout by the writer
// of its backlog, also now that the socket is a bare descriptor: its
// deadline-bound write waits through a borrowed, poller-registered
// duplicate, which the write returns.
func TestWriteTimeoutOnABareSocket(t *testing.T) {
	e := startEdge(t, Config{MaxQueueBytes: 256 << 20, WriteTimeout: 300 * time.Millisecond}, newRecorder())
	_ = dial(t, e.url, ws.Dialer{}) // never reads
	c := onlyConn(t, e)
	if _, ok := c.nc.(*fdSocket); !ok {
		t.Fatalf("socket held as %T, want the bare descriptor", c.nc)
	}
	msg := make([]byte, 64<<10)
	eventually(t, "a backlog the socket cannot take", func() bool {
		if err := c.Send(msg, true); err != nil && !errors.Is(err, conn.ErrGone) {
			t.Fatalf("send: %v", err)
		}
		return backlog(c) > 0 || c.phase() != open
	})
	if ev := e.rec.waitClose(t); ev.why != ReasonWriteTimeout {
		t.Fatalf("reason %v, want write_timeout", ev.why)
	}
}

// Tearing a connection down while its writer is blocked on a backlog wakes
// the writer at once: the close reaches the borrowed duplicate too, so
// the socket is closed now, not when WriteTimeout would have ended the
// write.
func TestTeardownWakesABlockedWriter(t *testing.T) {
	e := startEdge(t, Config{MaxQueueBytes: 256 << 20, WriteTimeout: time.Minute}, newRecorder())
	cl := dial(t, e.url, ws.Dialer{}) // does not read until the end
	c := onlyConn(t, e)
	s, ok := c.nc.(*fdSocket)
	if !ok {
		t.Fatalf("socket held as %T, want the bare descriptor", c.nc)
	}
	msg := make([]byte, 64<<10)
	eventually(t, "a writer waiting on the socket", func() bool {
		if err := c.Send(msg, true); err != nil {
			t.Fatalf("send: %v", err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.waiter != nil
	})
	start := time.Now()
	c.abort(causeSlowConsumer)
	_ = cl.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, cl)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("socket still open %v after the teardown", time.Since(start))
	}
	eventually(t, "the waiter given back", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.waiter == nil && s.state.Load() == sockClosed
	})
}
