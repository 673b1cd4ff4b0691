package swload

import (
	"github.com/switchboardgw/switchboard/internal/testenv"

	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/bench/baseline"
)

var waitFor = testenv.Eventually

func startBaseline(t *testing.T) (*baseline.Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := baseline.New(baseline.Config{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0"},
		baseline.Deps{Logger: slog.New(slog.DiscardHandler), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("baseline Run: %v", err)
		}
	})
	// Serving once the admin port answers: its goroutines have started.
	waitFor(t, "the baseline to serve", func() bool {
		resp, err := http.Get("http://" + s.AdminAddr().String() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	http.DefaultClient.CloseIdleConnections()
	return s, reg
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
	t.Fatalf("metric %s not found", name)
	return 0
}

func addrPort(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func TestEchoAgainstBaselineOpensMeasuresAndClosesEverything(t *testing.T) {
	srv, reg := startBaseline(t)
	before := runtime.NumGoroutine()

	var readyOpen atomic.Int64
	res, err := Run(context.Background(), Config{
		Mode:     ModeEcho,
		Targets:  []netip.AddrPort{addrPort(t, srv.Addr())},
		Sources:  []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")},
		Conns:    200,
		Rate:     -1,
		Messages: 1000,
		MsgRate:  20000,
		MsgSize:  100,
		Duration: 2 * time.Minute, // a bound only: the run ends when the 1000 replies are in
		OnOpen:   func(open, _ int) { readyOpen.Store(int64(open)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 200 || res.Failed != 0 || res.PeakOpen != 200 {
		t.Fatalf("opened %d failed %d %v peak %d, want 200 0 200", res.Opened, res.Failed, res.FailReasons, res.PeakOpen)
	}
	if readyOpen.Load() != 200 {
		t.Errorf("OnOpen reported %d open, want 200", readyOpen.Load())
	}
	if res.Sent != 1000 || res.Received != 1000 || res.RTT.Count != 1000 {
		t.Errorf("sent %d received %d rtt samples %d, want 1000 each", res.Sent, res.Received, res.RTT.Count)
	}
	if res.RTT.P50 <= 0 || res.RTT.P50 > res.RTT.P99 || res.RTT.P99 > res.RTT.Max {
		t.Errorf("rtt quantiles out of order: %+v", res.RTT)
	}
	if res.Connect.Count != 200 || res.ConnectRate <= 0 {
		t.Errorf("connect latency samples %d rate %f", res.Connect.Count, res.ConnectRate)
	}
	if res.ClosedClean != 200 || res.ClosedForced != 0 || res.ClosedByServer != 0 || res.Interrupted {
		t.Errorf("closed clean/forced/by server %d/%d/%d interrupted %v, want 200/0/0 false",
			res.ClosedClean, res.ClosedForced, res.ClosedByServer, res.Interrupted)
	}
	waitFor(t, "the server to see every connection closed", func() bool {
		return gauge(t, reg, "baseline_connections_open") == 0
	})
	waitFor(t, "goroutines to return to their count before the run", func() bool {
		return runtime.NumGoroutine() <= before
	})
}

func TestIdleHoldsUntilCancelledAndReportsInterrupted(t *testing.T) {
	srv, reg := startBaseline(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type out struct {
		res Result
		err error
	}
	done := make(chan out, 1)
	// The client's own word that every handshake finished: the server's
	// gauge reaches 300 before the client has read the last 101 responses,
	// and a cancel in that gap leaves those connections unopened.
	opened := make(chan int, 1)
	go func() {
		r, err := Run(ctx, Config{
			Targets: []netip.AddrPort{addrPort(t, srv.Addr())},
			Conns:   300, Rate: -1, Hold: time.Hour,
			OnOpen: func(open, _ int) { opened <- open },
		})
		done <- out{r, err}
	}()
	select {
	case n := <-opened:
		if n != 300 {
			t.Fatalf("%d connections open, want 300", n)
		}
	case o := <-done:
		t.Fatalf("run ended before its connections were open: %+v, %v", o.res, o.err)
	}
	waitFor(t, "300 connections open at the server", func() bool {
		return gauge(t, reg, "baseline_connections_open") == 300
	})
	cancel()
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if !o.res.Interrupted || o.res.Opened != 300 || o.res.ClosedClean != 300 {
		t.Errorf("interrupted %v opened %d clean %d, want true 300 300", o.res.Interrupted, o.res.Opened, o.res.ClosedClean)
	}
	waitFor(t, "the server to see every connection closed", func() bool {
		return gauge(t, reg, "baseline_connections_open") == 0
	})
}

// A server that pings every client, then closes it with 1001: the clients
// answer each ping with a pong and echo the server's close code.
func TestAnswersServerPingsAndServerClose(t *testing.T) {
	const n = 50
	var upgraded, pongs atomic.Int64
	var echoed1001 atomic.Int64
	ping, closeAll := make(chan struct{}), make(chan struct{})
	var handlers sync.WaitGroup
	up := websocket.Upgrader{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		upgraded.Add(1)
		c.SetPongHandler(func(string) error { pongs.Add(1); return nil })
		stop := make(chan struct{})
		defer close(stop)
		handlers.Go(func() {
			for _, ch := range []chan struct{}{ping, closeAll} {
				select {
				case <-ch:
				case <-stop:
					return
				}
				dl := time.Now().Add(10 * time.Second)
				if ch == ping {
					_ = c.WriteControl(websocket.PingMessage, []byte("hi"), dl)
				} else {
					_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye"), dl)
				}
			}
		})
		for {
			if _, _, err := c.NextReader(); err != nil {
				if websocket.IsCloseError(err, websocket.CloseGoingAway) {
					echoed1001.Add(1)
				}
				return
			}
		}
	})
	ln := serveHTTP(t, h, &handlers)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Result, 1)
	go func() {
		r, err := Run(ctx, Config{Targets: []netip.AddrPort{addrPort(t, ln.Addr())}, Conns: n, Rate: -1, Hold: time.Hour})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	waitFor(t, "every connection to open", func() bool { return upgraded.Load() == n })
	close(ping)
	waitFor(t, "a pong for every ping", func() bool { return pongs.Load() == n })
	close(closeAll)
	waitFor(t, "every client to echo the 1001 close", func() bool { return echoed1001.Load() == n })
	cancel()
	res := <-done
	if res.PingsAnswer != n || res.ClosedByServer != n || res.ClosedClean != 0 {
		t.Errorf("pings answered %d, closed by server %d, clean %d; want %d %d 0",
			res.PingsAnswer, res.ClosedByServer, res.ClosedClean, n, n)
	}
}

// A server that never replies: the run still ends, soon after the last
// message is sent, and reports the replies missing.
func TestEchoAgainstASilentServerEndsAfterTheReplyWait(t *testing.T) {
	up := websocket.Upgrader{}
	var handlers sync.WaitGroup
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			if _, _, err := c.NextReader(); err != nil {
				return
			}
		}
	})
	ln := serveHTTP(t, h, &handlers)
	res, err := Run(context.Background(), Config{
		Mode:     ModeEcho,
		Targets:  []netip.AddrPort{addrPort(t, ln.Addr())},
		Conns:    10,
		Rate:     -1,
		Messages: 50,
		MsgRate:  5000,
		Duration: time.Hour, // must not be waited for
		// The reply wait is HandshakeTimeout.
		HandshakeTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 50 || res.Received != 0 || res.ClosedClean != 10 {
		t.Errorf("sent %d received %d clean %d, want 50 0 10", res.Sent, res.Received, res.ClosedClean)
	}
}

// serveHTTP serves h on a loopback port until the test ends, then closes the
// server and waits for the handlers counted in handlers.
func serveHTTP(t *testing.T, h http.Handler, handlers *sync.WaitGroup) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln) //nolint:errcheck // ends with hs.Close below
	t.Cleanup(func() {
		hs.Close()
		handlers.Wait()
	})
	return ln
}

// With Deflate the upgrade offers permessage-deflate and compressed frames
// from the server are taken (counted, not inflated), not a protocol error.
func TestDeflateOffersTheExtensionAndTakesCompressedFrames(t *testing.T) {
	const n = 20
	var offered, closedOK atomic.Int64
	closeAll := make(chan struct{})
	var handlers sync.WaitGroup
	up := websocket.Upgrader{EnableCompression: true}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		if strings.HasPrefix(r.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
			offered.Add(1)
		}
		c.EnableWriteCompression(true)
		if c.WriteMessage(websocket.TextMessage, []byte(strings.Repeat(`{"hello":"world"},`, 100))) != nil {
			return
		}
		<-closeAll
		dl := time.Now().Add(10 * time.Second)
		if c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye"), dl) == nil {
			if _, _, err := c.NextReader(); websocket.IsCloseError(err, websocket.CloseGoingAway) {
				closedOK.Add(1) // the client echoed the close: it was still in good standing
			}
		}
	})
	ln := serveHTTP(t, h, &handlers)
	if err := (&Config{Targets: []netip.AddrPort{addrPort(t, ln.Addr())}, Mode: ModeEcho, Deflate: true}).Validate(); err == nil {
		t.Fatal("Deflate accepted in echo mode, whose replies it cannot read")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Result, 1)
	go func() {
		r, err := Run(ctx, Config{Targets: []netip.AddrPort{addrPort(t, ln.Addr())}, Conns: n, Rate: -1, Hold: time.Hour, Deflate: true})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	waitFor(t, "every connection to offer the extension", func() bool { return offered.Load() == n })
	close(closeAll)
	waitFor(t, "every client to echo the close after a compressed message", func() bool { return closedOK.Load() == n })
	cancel()
	if res := <-done; res.ClosedByServer != n || res.Opened != n {
		t.Errorf("opened %d, closed by server %d; want %d %d", res.Opened, res.ClosedByServer, n, n)
	}
}
