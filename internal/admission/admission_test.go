package admission

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeClock drives A.now so rate tests do not depend on the machine's speed.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *fakeClock               { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }
func rejected(a *Controller, reason string) float64 {
	return testutil.ToFloat64(a.rejected.WithLabelValues(reason))
}
func mustNew(t *testing.T, cfg Config) *Controller {
	t.Helper()
	a, err := New(cfg, nil)
	must(t, err)
	return a
}
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
func wantErr(t *testing.T, err error, r string, status int) {
	t.Helper()
	e, ok := err.(*Error)
	if !ok || e.Reason != r || e.Status != status || StatusOf(err) != status {
		t.Fatalf("err = %v, want %s (%d)", err, r, status)
	}
}

func TestNodeConnectionRate(t *testing.T) {
	clk := newClock()
	a := mustNew(t, Config{ConnRate: 10, ConnBurst: 5})
	a.now = clk.now
	for i := 0; i < 5; i++ {
		_, err := a.Admit(fmt.Sprintf("192.0.2.%d", i), "")
		must(t, err)
	}
	_, err := a.Admit("192.0.2.99", "")
	wantErr(t, err, ReasonNodeRate, http.StatusTooManyRequests)
	clk.add(100 * time.Millisecond) // one interval at 10/s: one more token
	_, err = a.Admit("192.0.2.99", "")
	must(t, err)
	_, err = a.Admit("192.0.2.99", "")
	wantErr(t, err, ReasonNodeRate, http.StatusTooManyRequests)
	if got := rejected(a, ReasonNodeRate); got != 2 {
		t.Fatalf("rejected{node_rate} = %v, want 2", got)
	}
}

func TestPerIPRateLeavesOtherSourcesAlone(t *testing.T) {
	clk := newClock()
	a := mustNew(t, Config{ConnRatePerIP: 1, ConnBurstPerIP: 2})
	a.now = clk.now
	for i := 0; i < 2; i++ {
		_, err := a.Admit("198.51.100.7", "")
		must(t, err)
	}
	_, err := a.Admit("198.51.100.7", "")
	wantErr(t, err, ReasonIPRate, http.StatusTooManyRequests)
	_, err = a.Admit("::ffff:198.51.100.7", "") // the same address, IPv4-mapped
	wantErr(t, err, ReasonIPRate, http.StatusTooManyRequests)
	if _, err := a.Admit("198.51.100.8", ""); err != nil {
		t.Fatalf("another source was limited: %v", err)
	}
	clk.add(time.Second)
	_, err = a.Admit("198.51.100.7", "")
	must(t, err)
}

func TestIPv6LimitedPerPrefix(t *testing.T) {
	clk := newClock()
	a := mustNew(t, Config{ConnRatePerIP: 1, ConnBurstPerIP: 1})
	a.now = clk.now
	_, err := a.Admit("2001:db8:1:2::1", "")
	must(t, err)
	_, err = a.Admit("2001:db8:1:2:ffff::9", "") // same /64
	wantErr(t, err, ReasonIPRate, http.StatusTooManyRequests)
	_, err = a.Admit("2001:db8:1:3::1", "") // next /64
	must(t, err)
}

func TestMaxConnsPerNode(t *testing.T) {
	a := mustNew(t, Config{MaxConns: 2})
	r1, err := a.Admit("192.0.2.1", "")
	must(t, err)
	_, err = a.Admit("192.0.2.2", "")
	must(t, err)
	_, err = a.Admit("192.0.2.3", "")
	wantErr(t, err, ReasonNodeConns, http.StatusServiceUnavailable)
	r1()
	r1() // a second release must not free a second slot
	_, err = a.Admit("192.0.2.3", "")
	must(t, err)
	_, err = a.Admit("192.0.2.4", "")
	wantErr(t, err, ReasonNodeConns, http.StatusServiceUnavailable)
	if a.Conns() != 2 {
		t.Fatalf("Conns = %d, want 2", a.Conns())
	}
}

func TestMaxConnsPerUser(t *testing.T) {
	a := mustNew(t, Config{MaxConnsPerUser: 2, MaxConns: 10})
	r1, err := a.Admit("192.0.2.1", "alice")
	must(t, err)
	r2, err := a.AdmitUser("alice") // user learnt after Admit
	must(t, err)
	_, err = a.Admit("192.0.2.1", "alice")
	wantErr(t, err, ReasonUserConns, http.StatusTooManyRequests)
	if a.Conns() != 1 {
		t.Fatalf("a refused user still holds a node slot: Conns = %d", a.Conns())
	}
	_, err = a.Admit("192.0.2.1", "bob")
	must(t, err)
	r1()
	r3, err := a.Admit("192.0.2.1", "alice")
	must(t, err)
	r2()
	r3()
	a.mu.Lock()
	_, left := a.users["alice"]
	a.mu.Unlock()
	if left {
		t.Fatal("a user with no connections is still tracked")
	}
}

// An IP flood (every attempt from a new address) must not grow the per-IP
// state past MaxTrackedIPs.
func TestIPFloodBounded(t *testing.T) {
	a := mustNew(t, Config{ConnRatePerIP: 1, MaxTrackedIPs: 1000})
	for i := 0; i < 100_000; i++ {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff)
		if _, err := a.Admit(ip, ""); err != nil {
			t.Fatalf("first attempt from %s refused: %v", ip, err)
		}
	}
	if n := a.TrackedSources(); n != 1000 {
		t.Fatalf("tracked sources = %d after a flood, want the bound 1000", n)
	}
	a.mu.Lock()
	if len(a.ips) != a.lru.Len() {
		t.Errorf("map (%d) and LRU (%d) disagree", len(a.ips), a.lru.Len())
	}
	a.mu.Unlock()
	// A recently seen source is still limited.
	_, err := a.Admit("10.1.134.159", "") // i = 99999
	wantErr(t, err, ReasonIPRate, http.StatusTooManyRequests)
}

func TestConcurrentAdmitNeverExceedsMax(t *testing.T) {
	const max = 50
	a := mustNew(t, Config{MaxConns: max, MaxConnsPerUser: 5, ConnRatePerIP: 1e6})
	var open, peak atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				rel, err := a.Admit(fmt.Sprintf("192.0.2.%d", i%200), fmt.Sprintf("u%d", i%20))
				if err != nil {
					continue
				}
				n := open.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				open.Add(-1)
				rel()
			}
		}()
	}
	wg.Wait()
	if peak.Load() > max {
		t.Fatalf("peak open %d > MaxConns %d", peak.Load(), max)
	}
	if a.Conns() != 0 {
		t.Fatalf("Conns = %d after every release, want 0", a.Conns())
	}
}

func TestMessageLimiter(t *testing.T) {
	if s := unsafe.Sizeof(MessageLimiter{}); s > 16 {
		t.Fatalf("MessageLimiter is %d bytes, want ≤ 16", s)
	}
	var unlimited MessageLimiter
	now := time.Unix(1_700_000_000, 0)
	for i := 0; i < 1000; i++ {
		if !unlimited.Allow(now) {
			t.Fatal("zero MessageLimiter refused a message")
		}
	}
	m := NewMessageLimiter(10, 3)
	for i := 0; i < 3; i++ {
		if !m.Allow(now) {
			t.Fatalf("message %d of the burst refused", i)
		}
	}
	if m.Allow(now) {
		t.Fatal("message past the burst allowed")
	}
	if !m.Allow(now.Add(100*time.Millisecond)) || m.Allow(now.Add(100*time.Millisecond)) {
		t.Fatal("refill after one interval should allow exactly one message")
	}
	// A steady 10/s is sustained indefinitely.
	for i := 2; i < 100; i++ {
		if !m.Allow(now.Add(time.Duration(i) * 100 * time.Millisecond)) {
			t.Fatalf("steady message %d at the configured rate refused", i)
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := New(Config{MaxConns: 1}, reg)
	must(t, err)
	_, err = a.Admit("192.0.2.1", "")
	must(t, err)
	_, err = a.Admit("192.0.2.1", "")
	wantErr(t, err, ReasonNodeConns, http.StatusServiceUnavailable)
	a.MessageRejected()
	if got := rejected(a, ReasonNodeConns); got != 1 {
		t.Fatalf("rejected{node_conns} = %v", got)
	}
	if got := rejected(a, ReasonMsgRate); got != 1 {
		t.Fatalf("rejected{msg_rate} = %v", got)
	}
	if probs, err := testutil.GatherAndLint(reg); err != nil || len(probs) > 0 {
		t.Fatalf("lint: %v %v", probs, err)
	}
	if _, err := New(Config{}, reg); err == nil {
		t.Fatal("registering twice on one registry should fail")
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{{ConnRate: -1}, {MaxConns: -1}, {IPv6Prefix: 129}, {MsgBurst: -2}} {
		if _, err := New(c, nil); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
