package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// floodFor is how long a ping flooder sends.
const floodFor = 10 * time.Second

// heapBound is how much an edge's heap in use may grow over its baseline
// while a client floods it with pings (the attack grew it by 2.2 GiB): the
// peak, garbage included, sampled every 100 ms.
const heapBound = 16 << 20

// retainedBound is how much of that growth may still be live after the
// flood, with the rate-off flooder still connected (measured after a GC).
const retainedBound = 8 << 20

// pingFlooder is a raw TCP client that completes the WebSocket handshake,
// then only ever sends pings: it never reads a byte after the 101.
type pingFlooder struct {
	key  string
	conn net.Conn
	id   string

	pings  int           // pings written
	cutOff time.Duration // when a write failed (the edge closed it), 0 if never
	err    error         // that write's error
}

func dialFlooder(t *testing.T, addr string) *pingFlooder {
	t.Helper()
	f := &pingFlooder{key: fmt.Sprintf("k%d", clientSeq.Add(1))}
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("flooder dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	f.conn = conn
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	req := "GET /?c=" + f.key + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(nonce[:]) + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatalf("flooder handshake: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("flooder upgrade: %v %v", resp, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return f
}

// flood writes masked 125-byte pings, as many as the edge takes, until
// floodFor has passed or a write fails.
func (f *pingFlooder) flood() {
	ping, _ := ws.CompileFrame(ws.MaskFrame(ws.NewPingFrame(make([]byte, 125))))
	var batch []byte
	for range 64 << 10 / len(ping) {
		batch = append(batch, ping...)
	}
	start := time.Now()
	for time.Since(start) < floodFor {
		// A deadline so that a flood the edge stops reading cannot hang
		// the test; the edge reading nothing for a second is a failure the
		// neighbours' latency shows.
		_ = f.conn.SetWriteDeadline(time.Now().Add(time.Second))
		n, err := f.conn.Write(batch)
		f.pings += n / len(ping)
		if err != nil {
			f.cutOff, f.err = time.Since(start), err
			return
		}
	}
}

// Issue #14 item 1: one client floods pings as fast as it can for 10 s and
// never reads. On edge 1 the control-frame rate is off, so only the queue
// bound and pong coalescing stand between the flood and the heap; on edge
// 0 (default flags) the flooder is closed for its control-frame rate. On
// both the heap stays within a few MiB of its baseline and a neighbour on
// the same edge keeps getting API posts, in order, within probeBound.
func TestPingFlood(t *testing.T) {
	cl := startCluster(t, clusterConfig{edges: 2, edgeArgs: func(i int) []string {
		args := []string{"-pprof"} // for a GC on demand: /debug/pprof/heap?gc=1
		if i == 1 {
			// Rate off, and time enough for a client that does not read
			// to stay connected for the whole flood.
			args = append(args, "-control-rate", "-1", "-write-timeout", "60s")
		}
		return args
	}})
	ctx := context.Background()
	router := cl.api(cl.routers[0].apiURL())
	neighbours := dialMany(t, cl, []int{0, 1}, 2)
	flooders := []*pingFlooder{
		dialFlooder(t, fmt.Sprintf("127.0.0.1:%d", cl.edges[0].wsPort)),
		dialFlooder(t, fmt.Sprintf("127.0.0.1:%d", cl.edges[1].wsPort)),
	}
	eventually(t, waitTimeout, "CONNECT of both flooders", func() error {
		for _, f := range flooders {
			id, ok := cl.rec.idOf(f.key)
			if !ok {
				return fmt.Errorf("flooder %s not announced", f.key)
			}
			f.id = id
		}
		return nil
	})

	heap := func(e *edgeNode) float64 {
		v, err := cl.metric(e.adminURL(), "go_memstats_heap_inuse_bytes", "")
		if err != nil {
			t.Fatalf("heap of %s: %v", e.nodeID, err)
		}
		return v
	}
	// live is the heap in use right after a collection.
	live := func(e *edgeNode) float64 {
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := httpGet(gctx, e.adminURL()+"/debug/pprof/heap?gc=1"); err != nil {
			t.Fatalf("GC in %s: %v", e.nodeID, err)
		}
		return heap(e)
	}
	base := []float64{live(cl.edges[0]), live(cl.edges[1])}
	peak := slices.Clone(base)

	var wg sync.WaitGroup
	for _, f := range flooders {
		wg.Go(f.flood)
	}
	done := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				for i, e := range cl.edges {
					peak[i] = max(peak[i], heap(e))
				}
			}
		}
	})

	// The neighbours get a post every 50 ms during the flood.
	var lmu sync.Mutex
	sentAt := map[string]time.Time{}
	want := map[*wsClient][]string{}
	for r, start := 0, time.Now(); time.Since(start) < floodFor; r++ {
		if err := forEach(neighbours, 2, func(c *wsClient) error {
			msg := fmt.Sprintf("post%d-%s", r, c.key)
			lmu.Lock()
			sentAt[msg] = time.Now()
			want[c] = append(want[c], msg)
			lmu.Unlock()
			return router.PostText(ctx, c.id, []byte(msg))
		}); err != nil {
			t.Fatalf("posts to the neighbours during the flood: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // pacing, not waiting for a condition
	}
	wg.Wait()
	close(done)
	sampler.Wait()

	var lat []time.Duration
	for _, c := range neighbours {
		expectMessages(t, c, want[c])
		for _, m := range c.messages() {
			lat = append(lat, m.at.Sub(sentAt[m.data]))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	if p99 > probeBound {
		t.Fatalf("neighbours' latency p99 %s during the flood, bound %s", p99, probeBound)
	}
	retained := make([]float64, len(cl.edges))
	for i, e := range cl.edges {
		if grew := peak[i] - base[i]; grew > heapBound {
			t.Fatalf("%s: heap in use grew by %.1f MiB under a ping flood (%d pings), bound %d MiB",
				e.nodeID, grew/(1<<20), flooders[i].pings, heapBound>>20)
		}
		retained[i] = live(e) - base[i]
		if retained[i] > retainedBound {
			t.Fatalf("%s: %.1f MiB more live heap after a ping flood (%d pings), bound %d MiB",
				e.nodeID, retained[i]/(1<<20), flooders[i].pings, retainedBound>>20)
		}
	}

	// Edge 0 closed its flooder for the rate, 1008, with a named reason.
	if flooders[0].cutOff == 0 {
		t.Fatalf("edge 0 took %d pings for %s without closing the flooder", flooders[0].pings, floodFor)
	}
	cl.rec.waitDisconnects([]string{flooders[0].id}, waitTimeout)
	if d := cl.rec.get(flooders[0].id).disconnects; d[0].code != 1008 {
		t.Fatalf("flooder's DISCONNECT %+v, want 1008", d)
	}
	if n, err := cl.metric(cl.edges[0].adminURL(), "switchboard_connections_closed_total", `reason="control_rate"`); err != nil || n != 1 {
		t.Fatalf("edge 0 closed{reason=control_rate} = %v (%v), want 1", n, err)
	}
	// Edge 1 (rate off) kept its flooder for the whole flood, answering
	// with one pong at a time behind the backlog.
	if flooders[1].cutOff != 0 {
		t.Fatalf("edge 1 (control rate off) cut the flooder after %s: %v", flooders[1].cutOff, flooders[1].err)
	}
	coalesced, err := cl.metric(cl.edges[1].adminURL(), "switchboard_pongs_coalesced_total", "")
	if err != nil || coalesced == 0 {
		t.Fatalf("edge 1 coalesced %v pongs (%v): the flood never built a backlog", coalesced, err)
	}
	// Nobody else noticed.
	for _, c := range neighbours {
		if c.isClosed() || len(cl.rec.get(c.id).disconnects) > 0 {
			t.Fatalf("neighbour %s was disconnected", c.key)
		}
	}
	for i, what := range []string{
		fmt.Sprintf("edge 0 (default -control-rate): flooder closed 1008 after %d pings in %s (%v)", flooders[0].pings, flooders[0].cutOff.Round(time.Microsecond), flooders[0].err),
		fmt.Sprintf("edge 1 (-control-rate -1): %d pings in %s, %.0f pongs coalesced", flooders[1].pings, floodFor, coalesced),
	} {
		t.Logf("%s; heap in use %.1f MiB after a GC, peak %.1f MiB (+%.1f), %+.2f MiB live after the flood",
			what, base[i]/(1<<20), peak[i]/(1<<20), (peak[i]-base[i])/(1<<20), retained[i]/(1<<20))
	}
	t.Logf("neighbours: %d posts, latency p50 %s p99 %s", len(lat), p50.Round(time.Microsecond), p99.Round(time.Microsecond))

	// The end: the rate-off flooder goes away (its edge sees the reset:
	// 1006), the neighbours close normally, and every connection has
	// exactly one CONNECT and one DISCONNECT.
	_ = flooders[1].conn.Close()
	closeAll(t, neighbours)
	established := append(ids(neighbours), flooders[0].id, flooders[1].id)
	cl.rec.waitDisconnects(established, waitTimeout)
	cl.waitRegistryEmpty()
	codes := map[string]int{flooders[0].id: 1008, flooders[1].id: codeAbnormal}
	for _, c := range neighbours {
		codes[c.id] = 1000
	}
	cl.rec.checkInvariant(established, codes)
}
