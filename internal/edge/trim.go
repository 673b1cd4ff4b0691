package edge

import "runtime/debug"

// A connect burst (a deploy's reconnect storm, a load test) leaves memory
// mapped after it: its handshakes' garbage and goroutine stacks were at
// their high-water mark, and the Go runtime keeps freed pages up to about
// 1.1 times its heap goal (1.65 times the live heap at the default
// -gc-percent 50), so resident memory stays at the burst's peak long after
// the burst. Once a burst is over, the sweeper gives that memory back
// (debug.FreeOSMemory: one forced GC, then the free pages to the OS).
//
// Bursts only: at least trimMinUpgrades upgrades, and a quarter of the
// open connections, since the last trim — so the forced GC, whose cost
// grows with the connections, stays a few microseconds per connect — and
// then a sweeper tick without one.
const trimMinUpgrades = 1000

// burstTrim is the sweeper's state for that; only the sweeper uses it.
type burstTrim struct {
	min        uint64 // trimMinUpgrades (tests lower it)
	seen, mark uint64 // upgrades at the previous tick, and at the last trim
}

// due reports whether to trim now, given the upgrades so far and the open
// connections.
func (t *burstTrim) due(upgrades uint64, open int) bool {
	quiet := upgrades == t.seen
	t.seen = upgrades
	if !quiet || upgrades-t.mark < max(t.min, uint64(open)/4) {
		return false
	}
	t.mark = upgrades
	return true
}

// trimAfterBurst runs on the sweeper's tick.
func (s *Server) trimAfterBurst(t *burstTrim) {
	if t.due(s.upgrades.Load(), s.hub.count()) {
		debug.FreeOSMemory()
		s.metrics.trims.Inc()
	}
}
