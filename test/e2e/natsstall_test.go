package e2e

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Issue 14, item 7: the NATS server freezes (SIGSTOP: its sockets stay
// open, nothing is read) while a client floods messages, so the edge's
// writes to NATS block in the kernel and, inside nats.go, every caller of
// the connection waits for its lock. 20 clients then connect with
// -connect-timeout 1s: every handshake ends within ~1.5 s, accepted as
// -connect-mode optional says when no backend answers. After SIGCONT the
// events held meanwhile (the 20 CONNECTs among them) reach the backend and
// the invariant holds.
func TestNATSStalled(t *testing.T) {
	const (
		connectTimeout = time.Second
		bound          = 1500 * time.Millisecond
		arrivals       = 20
	)
	np := startNATSProc(t)
	cl := startCluster(t, clusterConfig{natsURL: np.url(), edges: 1, edgeArgs: func(int) []string {
		return []string{"-connect-timeout", connectTimeout.String()}
	}})
	e := cl.edges[0]
	before := dialMany(t, cl, []int{0}, 4)
	flooder := before[0]

	np.stop()
	stopped := time.Now()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	stopFlood := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopFlood()
	pad := strings.Repeat("s", 16<<10)
	wg.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := flooder.send([]byte(fmt.Sprintf(`{"action":"flood","n":%d,"pad":"%s"}`, n, pad))); err != nil {
				t.Errorf("flooder: %v", err)
				return
			}
		}
	})
	// The edge's NATS writes are stuck once it publishes nothing more for
	// a while although the flood goes on.
	var last float64
	lastChange := time.Now()
	eventually(t, waitTimeout, "the edge's writes to the frozen NATS stuck", func() error {
		v, err := cl.metric(e.adminURL(), "switchboard_events_published_total", `type="message"`)
		if err != nil {
			return err
		}
		if v != last {
			last, lastChange = v, time.Now()
			return fmt.Errorf("still publishing (%v)", v)
		}
		if time.Since(lastChange) < 500*time.Millisecond {
			return errors.New("not stuck long enough")
		}
		return nil
	})
	stuckAfter := time.Since(stopped)

	// 20 handshakes with NATS frozen, all at once.
	arriving := make([]*wsClient, arrivals)
	took := make([]time.Duration, arrivals)
	idx := make([]int, arrivals)
	for i := range idx {
		idx[i] = i
	}
	err := forEach(idx, arrivals, func(i int) error {
		start := time.Now()
		c, err := dial(t, e.wsURL(), 0)
		took[i] = time.Since(start)
		arriving[i] = c
		if err != nil {
			return fmt.Errorf("client %d after %s: %w", i, took[i].Round(time.Millisecond), err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("handshakes with NATS frozen: %v", err)
	}
	slowest := slices.Max(took)
	if slowest > bound {
		t.Fatalf("handshakes with NATS frozen took up to %s (all: %v), bound %s", slowest.Round(time.Millisecond), took, bound)
	}

	np.cont()
	resumed := time.Now()
	stopFlood()
	// Events flow again: the CONNECTs held while NATS was frozen arrive.
	cl.learnIDs(arriving)
	flowing := time.Since(resumed)
	eventually(t, waitTimeout, "messages published again", func() error {
		v, err := cl.metric(e.adminURL(), "switchboard_events_published_total", `type="message"`)
		if err != nil {
			return err
		}
		if v <= last {
			return fmt.Errorf("published %v, %v before SIGCONT", v, last)
		}
		return nil
	})
	if err := cl.noLifecycleDrops(); err != nil {
		t.Fatal(err)
	}
	t.Logf("NATS frozen %s; the edge's writes stuck %s after SIGSTOP; %d handshakes with -connect-timeout %s took at most %s; after SIGCONT their CONNECTs arrived within %s",
		resumed.Sub(stopped).Round(time.Millisecond), stuckAfter.Round(time.Millisecond), arrivals, connectTimeout, slowest.Round(time.Millisecond), flowing.Round(time.Millisecond))

	all := append(slices.Clone(before), arriving...)
	codes := map[string]int{}
	for _, c := range all {
		codes[c.id] = 1000
	}
	cl.finish(all, codes)
}
