package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// Half-open flood: one source opens more idle TCP sockets than the edge has
// handshake slots (-max-handshakes, default 4096) and holds them, sending
// nothing. Before the per-source cap, every slot was the flooder's and
// every other client got 503 until the handshake timeout freed them. Now
// the flooder holds its share (-max-handshakes-per-ip, default
// -max-handshakes/8 = 512), the rest of its sockets are answered 429 at
// accept and counted, and a client from another address connects in under
// a second, again and again, while the flood is held.
func TestHalfOpenFloodFromOneSource(t *testing.T) {
	const (
		flood      = 4500
		slots      = 4096      // -max-handshakes default
		share      = slots / 8 // -max-handshakes-per-ip default
		probes     = 5
		probeBound = time.Second
	)
	// A long handshake timeout so the flood outlives the whole scenario;
	// every other handshake setting is the default.
	cl := startCluster(t, clusterConfig{edges: 1, edgeArgs: func(int) []string {
		return []string{"-handshake-timeout", "60s"}
	}})
	target := cl.edges[0]
	addr := fmt.Sprintf("127.0.0.1:%d", target.wsPort)
	admin := target.adminURL()
	metric := func(name, filter string) float64 {
		t.Helper()
		v, err := cl.metric(admin, name, filter)
		if err != nil {
			t.Fatalf("metric %s: %v", name, err)
		}
		return v
	}

	// The flood: 4,500 idle sockets from 127.0.0.2, held until the end.
	var (
		mu      sync.Mutex
		socks   []net.Conn
		next    atomic.Int64
		dialErr error
		wg      sync.WaitGroup
	)
	t.Cleanup(func() {
		for _, c := range socks {
			_ = c.Close()
		}
	})
	floodStart := time.Now()
	for range 64 {
		wg.Go(func() {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 20 * time.Second}
			for next.Add(1) <= flood {
				c, err := d.Dial("tcp", addr)
				mu.Lock()
				if err != nil {
					dialErr = err
				} else {
					socks = append(socks, c)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if dialErr != nil {
		t.Fatalf("flood dial after %d sockets: %v", len(socks), dialErr)
	}
	floodOpened := time.Since(floodStart)
	// The edge has taken in the flood once more sockets than it has slots
	// were refused (as overload before the cap, per source after).
	eventually(t, waitTimeout, "flood accepted by the edge", func() error {
		refused := metric("switchboard_connections_rejected_total", `reason="ip_handshakes"`) +
			metric("switchboard_connections_rejected_total", `reason="overload"`)
		if refused < flood-slots {
			return fmt.Errorf("%v sockets refused so far, want at least %d", refused, flood-slots)
		}
		return nil
	})

	// Probes from another address while the flood is held.
	var (
		took    []time.Duration
		probers []*wsClient
	)
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	for i := range probes {
		if i > 0 {
			<-tick.C
		}
		c, d, err := probe(t, target.wsURL(), "127.0.0.3")
		if err != nil {
			t.Fatalf("probe %d of %d from 127.0.0.3 during the flood: %v after %s", i+1, probes, err, d.Round(time.Millisecond))
		}
		if d >= probeBound {
			t.Fatalf("probe %d of %d from 127.0.0.3 took %s to connect during the flood, bound %s", i+1, probes, d, probeBound)
		}
		took = append(took, d)
		probers = append(probers, c)
	}
	cl.learnIDs(probers)

	// Each flood socket was either held (no answer yet) or answered 429 at
	// once, before sending a byte; the edge counted exactly the refused.
	var held, refused, other atomic.Int64
	_ = forEach(socks, 64, func(c net.Conn) error {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		b, err := io.ReadAll(c)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout() && len(b) == 0:
			held.Add(1)
		case bytes.HasPrefix(b, []byte("HTTP/1.1 429 ")):
			refused.Add(1)
		default:
			other.Add(1)
		}
		return nil
	})
	if held.Load() != share || refused.Load() != flood-share || other.Load() != 0 {
		t.Fatalf("flood sockets: %d held, %d answered 429, %d otherwise; want %d held (the source's share), %d answered 429",
			held.Load(), refused.Load(), other.Load(), share, flood-share)
	}
	if n := metric("switchboard_connections_rejected_total", `reason="ip_handshakes"`); n != float64(refused.Load()) {
		t.Fatalf("switchboard_connections_rejected_total{reason=\"ip_handshakes\"} = %v, want %d (the refused sockets)", n, refused.Load())
	}
	if n := metric("switchboard_connections_rejected_total", `reason="overload"`); n != 0 {
		t.Fatalf("switchboard_connections_rejected_total{reason=\"overload\"} = %v: the node ran out of slots", n)
	}
	// The flood was still held when the last probe connected.
	if n := metric("switchboard_handshakes_in_progress", ""); n != share {
		t.Fatalf("switchboard_handshakes_in_progress = %v after the probes, want %d (the flood's share)", n, share)
	}

	// The flood goes; so does its state.
	for _, c := range socks {
		_ = c.Close()
	}
	eventually(t, waitTimeout, "flood's handshake state released", func() error {
		if n, s := metric("switchboard_handshakes_in_progress", ""), metric("switchboard_handshake_sources", ""); n != 0 || s != 0 {
			return fmt.Errorf("%v handshakes in progress from %v sources", n, s)
		}
		return nil
	})
	codes := map[string]int{}
	for _, c := range probers {
		codes[c.id] = 1000
	}
	cl.finish(probers, codes)
	t.Logf("flood of %d idle sockets from one source opened in %s: %d held, %d answered 429 at accept; probes from another source connected in %v (bound %s)",
		flood, floodOpened.Round(time.Millisecond), held.Load(), refused.Load(), took, probeBound)
}

// probe opens a WebSocket client to url from the loopback address src,
// returning how long the connect took.
func probe(t testing.TB, url, src string) (*wsClient, time.Duration, error) {
	d := ws.Dialer{Timeout: 15 * time.Second, NetDial: func(ctx context.Context, network, a string) (net.Conn, error) {
		nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		return nd.DialContext(ctx, network, a)
	}}
	start := time.Now()
	c, err := dialWith(t, d, url, 0, nil)
	return c, time.Since(start), err
}
