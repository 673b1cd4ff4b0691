package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/pkg/connections"
)

// probeBound is the latency a normal client's message may take, post to
// receipt, while hostile clients attack its edge. Loose on purpose: it
// catches a node stalled by an attacker, not a slow CI machine.
const probeBound = 5 * time.Second

// Scenario 6: slow and hostile clients on the same edge as normal ones: a
// reader that never reads while the API floods it, a client flooding
// messages, a client sending an oversized frame, half-open and garbage
// handshakes. The offenders are dealt with (closed as slow consumer, 1009,
// handshake timeout); nobody else is disconnected and normal clients keep
// getting their messages, in order, within bounds.
func TestHostileClients(t *testing.T) {
	cl := startCluster(t, clusterConfig{edgeArgs: func(int) []string {
		return []string{"-handshake-timeout", "2s", "-max-queue-bytes", "262144"}
	}})
	normal := dialMany(t, cl, []int{0, 1, 2}, 60)
	router := cl.api(cl.routers[0].apiURL())
	ctx := context.Background()
	target := cl.edges[0]

	// Half-open and garbage handshakes, held open on the target edge.
	var raws []net.Conn
	rawOpened := time.Now()
	for i := range 120 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", target.wsPort))
		if err != nil {
			t.Fatalf("raw dial: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		switch i % 3 {
		case 0: // a request that never ends
			_, err = io.WriteString(c, "GET /?c=halfopen HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
		case 1: // garbage
			_, err = c.Write([]byte("\x16\x03\x01\x02\x00garbage\r\n\r\n"))
		}
		if err != nil {
			t.Fatalf("raw write: %v", err)
		}
		raws = append(raws, c)
	}

	// A reader that never reads, flooded through the API until the edge
	// gives up on it.
	hold := make(chan struct{})
	slow, err := dialHeld(t, target.wsURL(), 0, hold)
	if err != nil {
		t.Fatal(err)
	}
	oversize, err := dial(t, target.wsURL(), 0)
	if err != nil {
		t.Fatal(err)
	}
	flooder, err := dial(t, target.wsURL(), 0)
	if err != nil {
		t.Fatal(err)
	}
	offenders := []*wsClient{slow, oversize, flooder}
	cl.learnIDs(offenders)

	var wg sync.WaitGroup
	stopFlood := make(chan struct{})
	var floodSent int
	wg.Go(func() {
		for ; ; floodSent++ {
			select {
			case <-stopFlood:
				return
			default:
			}
			if err := flooder.send([]byte(fmt.Sprintf(`{"action":"flood","n":%d}`, floodSent))); err != nil {
				return
			}
		}
	})
	var slowPosts int
	var slowErr error
	wg.Go(func() {
		api := cl.api(target.apiURL())
		chunk := []byte(strings.Repeat("s", 64<<10))
		for slowPosts = 0; slowPosts < 2000; slowPosts++ {
			if slowErr = api.PostText(ctx, slow.id, chunk); slowErr != nil {
				return
			}
		}
	})
	if err := oversize.send([]byte(strings.Repeat("o", 40<<10))); err != nil {
		t.Fatalf("oversized frame: %v", err)
	}

	// Meanwhile normal clients are served: rounds of posts through the
	// router, latency measured post to receipt.
	const rounds = 10
	var lmu sync.Mutex
	sentAt := map[string]time.Time{}
	for r := range rounds {
		if err := forEach(normal, 16, func(c *wsClient) error {
			msg := fmt.Sprintf("probe%d-%s", r, c.key)
			lmu.Lock()
			sentAt[msg] = time.Now()
			lmu.Unlock()
			return router.PostText(ctx, c.id, []byte(msg))
		}); err != nil {
			t.Fatalf("probe posts during the attack: %v", err)
		}
	}
	var lat []time.Duration
	for _, c := range normal {
		want := make([]string, rounds)
		for r := range want {
			want[r] = fmt.Sprintf("probe%d-%s", r, c.key)
		}
		expectMessages(t, c, want)
		for _, m := range c.messages() {
			lat = append(lat, m.at.Sub(sentAt[m.data]))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	if p99 > probeBound {
		t.Fatalf("normal clients' latency p99 %s during the attack, bound %s", p99, probeBound)
	}

	// The slow reader was cut off: the API refused more (429) or found it
	// gone (410), and its DISCONNECT says slow consumer (1008).
	close(stopFlood)
	wg.Wait()
	if !errors.Is(slowErr, connections.ErrLimitExceeded) && !errors.Is(slowErr, connections.ErrGone) {
		t.Fatalf("after %d posts of 64 KiB to a client that never reads: %v, want 429 or 410", slowPosts, slowErr)
	}
	cl.rec.waitDisconnects([]string{slow.id, oversize.id}, waitTimeout)
	if d := cl.rec.get(slow.id).disconnects; d[0].code != 1008 {
		t.Fatalf("slow reader's DISCONNECT %+v, want 1008", d)
	}
	close(hold)
	eventually(t, waitTimeout, "offenders closed", func() error {
		if !slow.isClosed() || !oversize.isClosed() {
			return errors.New("slow reader or oversized sender still open")
		}
		return nil
	})
	if code, reason := oversize.closed(); code != 1009 {
		t.Fatalf("oversized frame: close %d %q, want 1009", code, reason)
	}
	// Every half-open or garbage handshake was closed by the edge.
	eventually(t, waitTimeout, "half-open handshakes closed by the edge", func() error {
		return forEach(raws, 32, func(c net.Conn) error {
			_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			_, err := io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return errors.New("still open")
			}
			return nil // EOF or reset: closed by the edge
		})
	})

	timeouts := time.Since(rawOpened)
	// Nobody else was disconnected.
	for _, c := range normal {
		if c.isClosed() || len(cl.rec.get(c.id).disconnects) > 0 {
			t.Fatalf("normal client %s was disconnected", c.key)
		}
	}
	t.Logf("attack: %d flood messages, slow reader cut off after %d×64 KiB (%v), oversized frame closed 1009, %d half-open or garbage handshakes all closed by the edge (checked %s after opening); normal clients' latency p50 %s p99 %s",
		floodSent, slowPosts, slowErr, len(raws), timeouts.Round(time.Millisecond), p50.Round(time.Microsecond), p99.Round(time.Microsecond))

	all := append(slices.Clone(normal), offenders...)
	codes := map[string]int{slow.id: 1008, oversize.id: 1009}
	for _, c := range normal {
		codes[c.id] = 1000
	}
	cl.finish(all, codes)
}
