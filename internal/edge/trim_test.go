package edge

import (
	"testing"

	"github.com/gobwas/ws"
)

// The sweeper trims once a burst is over: enough upgrades since the last
// trim (at least trimMinUpgrades and a quarter of the open connections),
// then a tick with none. A steady trickle of connects never trims, and a
// burst trims once.
func TestTrimFollowsBurstsOnly(t *testing.T) {
	tr := burstTrim{min: trimMinUpgrades}
	steps := []struct {
		upgrades uint64
		open     int
		want     bool
	}{
		{0, 0, false},
		{600, 600, false},   // connects still arriving
		{1200, 1200, false}, // still arriving
		{1200, 1200, true},  // a quiet tick after 1,200 upgrades: trim
		{1200, 1200, false}, // once
		{1300, 1300, false}, // a trickle …
		{1300, 1300, false}, // … is no burst
		{2400, 2400, false},
		{2400, 2400, true}, // 1,200 more, then quiet
		{2400, 2400, false},
		// With 100,000 open, a burst must be a quarter of them.
		{4400, 100000, false},
		{4400, 100000, false}, // 2,000 since the last trim: not enough
		{30000, 100000, false},
		{30000, 100000, true}, // 27,600 since: trim
	}
	for i, s := range steps {
		if got := tr.due(s.upgrades, s.open); got != s.want {
			t.Fatalf("step %d (%d upgrades, %d open): due %v, want %v", i, s.upgrades, s.open, got, s.want)
		}
	}
}

// The sweeper trims after a burst of upgrades (its size lowered to 3 for
// the test); when not to is TestTrimFollowsBurstsOnly's.
func TestSweeperTrimsAfterABurst(t *testing.T) {
	e := startEdge(t, Config{trimMin: 3}, newRecorder())
	for range 3 {
		dial(t, e.url, ws.Dialer{})
	}
	eventually(t, "a trim after the burst", func() bool { return metric(t, e.metrics.trims) == 1 })
	if n := e.upgrades.Load(); n != 3 {
		t.Fatalf("%d upgrades counted, want 3", n)
	}
}
