package edge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboardgw/switchboard/internal/clientip"
	"github.com/switchboardgw/switchboard/internal/proxyproto"
)

// startEdgeOpts is startEdge with the Options a test sets itself (a
// listener, a trusted peer, a client IP resolver).
func startEdgeOpts(t *testing.T, cfg Config, rec *recorder, opts Options) *testEdge {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.TickInterval = 20 * time.Millisecond
	cfg.DrainWindow = 50 * time.Millisecond
	reg := prometheus.NewRegistry()
	opts.NodeID, opts.Handler, opts.Registerer = "test-node", rec, reg
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Errorf("Run returned %v, want ErrClosed", err)
		}
	})
	return &testEdge{Server: s, rec: rec, reg: reg, url: "ws://" + s.Addr().String() + "/"}
}

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// wsFrom is a ws.Dialer whose connections come from src and start with
// prefix (a PROXY header) when it is set.
func wsFrom(src, prefix string) ws.Dialer {
	return ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		nc, err := d.DialContext(ctx, network, addr)
		if err == nil && prefix != "" {
			if _, err = io.WriteString(nc, prefix); err != nil {
				nc.Close()
			}
		}
		return nc, err
	}}
}

// statusOf reads the HTTP status the edge answers on nc without sending
// anything more.
func statusOf(t *testing.T, nc net.Conn) int {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("read the edge's answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestSourceLimitCountsPerSourceAndForgetsAtZero(t *testing.T) {
	l := newSourceLimit(2)
	key := func(s string) netip.Prefix {
		return clientip.SourceKey(netip.MustParseAddr(s), clientip.DefaultIPv6Prefix)
	}
	a, mapped := key("192.0.2.1"), key("::ffff:192.0.2.1")
	v6a, v6b, v6other := key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"), key("2001:db8:1:3::1")
	if a != mapped {
		t.Fatalf("IPv4-mapped %v keyed apart from %v", mapped, a)
	}
	if v6a != v6b || v6a == v6other {
		t.Fatalf("IPv6 keys %v %v %v: want one per /64", v6a, v6b, v6other)
	}
	if !l.acquire(a) || !l.acquire(mapped) {
		t.Fatal("refused within the share")
	}
	if l.acquire(a) {
		t.Fatal("a third handshake from one source was let in with a share of 2")
	}
	if !l.acquire(v6a) || !l.acquire(v6b) || l.acquire(v6b) || !l.acquire(v6other) {
		t.Fatal("IPv6 /64s not counted as one source each")
	}
	if n := l.sources(); n != 3 {
		t.Fatalf("%d sources tracked, want 3", n)
	}
	for _, k := range []netip.Prefix{a, a, v6a, v6a, v6other} {
		l.release(k)
	}
	if n := l.sources(); n != 0 || len(l.n) != 0 {
		t.Fatalf("%d sources left after every handshake ended, want 0 (entries removed at zero)", n)
	}
	if !l.acquire(a) {
		t.Fatal("a source is refused after its handshakes ended")
	}
}

// One source's idle sockets take its share and no more: the next socket
// from it is answered 429 before it sends a byte, another source connects,
// and once the idle sockets go the state is empty again.
func TestHandshakesPerIPAreCappedAtAccept(t *testing.T) {
	const share = 4
	e := startEdgeOpts(t, Config{MaxHandshakes: 16, MaxHandshakesPerIP: share, HandshakeTimeout: 20 * time.Second}, newRecorder(), Options{})
	addr := e.Addr().String()
	var idle []net.Conn
	for range share {
		idle = append(idle, dialFrom(t, "127.0.0.2", addr))
	}
	eventually(t, "idle sockets accepted", func() bool {
		return gauge(t, e.reg, "switchboard_handshakes_in_progress") == share
	})
	if n := gauge(t, e.reg, "switchboard_handshake_sources"); n != 1 {
		t.Fatalf("switchboard_handshake_sources = %v, want 1", n)
	}
	const over = 3
	for range over {
		if st := statusOf(t, dialFrom(t, "127.0.0.2", addr)); st != http.StatusTooManyRequests {
			t.Fatalf("socket over the share answered %d, want 429", st)
		}
	}
	if n := metric(t, e.metrics.rejected.WithLabelValues(rejectIPHandshakes)); n != over {
		t.Fatalf("rejected{ip_handshakes} = %v, want %d", n, over)
	}
	if n := metric(t, e.metrics.rejected.WithLabelValues(rejectOverload)); n != 0 {
		t.Fatalf("rejected{overload} = %v: a refused source took node-wide slots", n)
	}
	dial(t, e.url, wsFrom("127.0.0.3", "")).Close()

	for _, c := range idle {
		c.Close()
	}
	eventually(t, "idle sockets' slots given back", func() bool {
		return gauge(t, e.reg, "switchboard_handshakes_in_progress") == 0 && e.perSource.sources() == 0
	})
	dial(t, e.url, wsFrom("127.0.0.2", "")).Close()
}

// Behind a PROXY protocol load balancer every socket comes from the
// balancer: it is exempt, and each client is charged once the header names
// it, before its request is read.
func TestHandshakesPerIPBehindProxyProtocol(t *testing.T) {
	const share = 2
	lb := netip.MustParsePrefix("127.0.0.1/32")
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := proxyproto.Listen(tcp, proxyproto.Config{Required: true, Trusted: []netip.Prefix{lb}})
	if err != nil {
		t.Fatal(err)
	}
	e := startEdgeOpts(t, Config{MaxHandshakes: 16, MaxHandshakesPerIP: share, HandshakeTimeout: 20 * time.Second}, newRecorder(),
		Options{Listener: ln, TrustedPeer: lb.Contains})
	addr := e.Addr().String()
	header := func(src string) string { return fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 40000 80\r\n", src) }
	for range share {
		c := dialFrom(t, "127.0.0.1", addr)
		if _, err := io.WriteString(c, header("192.0.2.1")); err != nil {
			t.Fatal(err)
		}
	}
	// Both charged before the next one comes: else it could take the
	// second's place and never be answered.
	relayed := clientip.SourceKey(netip.MustParseAddr("192.0.2.1"), 0)
	eventually(t, "the relayed client charged with its whole share", func() bool {
		return e.perSource.sources() == 1 && e.perSource.inProgress(relayed) == share
	})
	c := dialFrom(t, "127.0.0.1", addr)
	if _, err := io.WriteString(c, header("192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, c); st != http.StatusTooManyRequests {
		t.Fatalf("relayed client over its share answered %d, want 429", st)
	}
	// The balancer itself has more than the share in progress; another
	// client through it still connects.
	dial(t, e.url, wsFrom("127.0.0.1", header("192.0.2.2"))).Close()
	if n := metric(t, e.metrics.rejected.WithLabelValues(rejectIPHandshakes)); n != 1 {
		t.Fatalf("rejected{ip_handshakes} = %v, want 1", n)
	}
}

// With only X-Forwarded-For naming the client, it is charged after its
// request is read and before $connect runs.
func TestHandshakesPerIPByForwardedFor(t *testing.T) {
	const share = 2
	lb := netip.MustParsePrefix("127.0.0.1/32")
	res, err := clientip.New(clientip.Config{TrustedProxies: []netip.Prefix{lb}})
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	release := make(chan struct{})
	var connects atomic.Int32
	rec.connect = func(ctx context.Context, c *Conn, r *Request) (*Accept, error) {
		connects.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &Accept{}, nil
	}
	e := startEdgeOpts(t, Config{MaxHandshakes: 16, MaxHandshakesPerIP: share, HandshakeTimeout: 20 * time.Second}, rec,
		Options{TrustedPeer: res.Trusted, ClientIP: res.ClientIPString})
	d := wsFrom("127.0.0.1", "")
	d.Header = ws.HandshakeHeaderHTTP(http.Header{"X-Forwarded-For": {"198.51.100.7"}})
	errs := make(chan error, share)
	for range share {
		go func() {
			c, err := tryDial(e.url, d)
			if err == nil {
				c.Close()
			}
			errs <- err
		}()
	}
	eventually(t, "two $connect calls waiting", func() bool { return connects.Load() == share })
	_, err = tryDial(e.url, d)
	var rej ws.StatusError
	if !errors.As(err, &rej) || int(rej) != http.StatusTooManyRequests {
		t.Fatalf("third handshake for one forwarded client: %v, want 429", err)
	}
	if n := connects.Load(); n != share {
		t.Fatalf("$connect ran %d times, want %d: the refused one reached the backend", n, share)
	}
	close(release)
	for range share {
		if err := <-errs; err != nil {
			t.Fatalf("handshake within the share: %v", err)
		}
	}
	eventually(t, "forwarded client forgotten", func() bool { return e.perSource.sources() == 0 })
}

func TestDuplicateWebSocketKeyIs400(t *testing.T) {
	e := startEdge(t, Config{}, newRecorder())
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\r\n"
	resp := rawRequest(t, e.Addr().String(), req)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("two Sec-WebSocket-Key headers answered %d, want 400", resp.StatusCode)
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != "" || e.Count() != 0 {
		t.Fatal("upgraded a request with two keys")
	}
	// Counted once the refusal is written: the client may read it first.
	eventually(t, "rejected{bad_request} = 1", func() bool { return testutil.ToFloat64(e.metrics.rejected.WithLabelValues("bad_request")) == 1 })
	// One key (the same request otherwise) still upgrades.
	one := strings.Replace(req, "sec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n", "", 1)
	if resp := rawRequest(t, e.Addr().String(), one); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("one key answered %d, want 101", resp.StatusCode)
	}
}
