package console

import (
	"slices"

	"github.com/switchboardgw/switchboard/internal/api"
)

// sumHistory adds the nodes' histories up into one, slot by slot of
// interval milliseconds (nodes sample on their own clocks and phases), and
// keeps the last size+1 slots. Counters are summed as increments, not
// totals: a node that joins the window brings its traffic since its
// previous sample, not its whole life, and one whose counters went back (a
// restart under a fixed node ID) counts what it has since its restart. Each node's connection
// gauge holds from one sample until its next, so a slot without a sample
// of a node still counts that node's connections.
func sumHistory(nodes []api.NodeStatus, interval int64, size int) []api.Sample {
	if interval <= 0 {
		return nil
	}
	type slot struct {
		t                                       int64 // latest sample in the slot
		connections, connects, messages, errors int64
	}
	slots := map[int64]*slot{}
	at := func(k int64) *slot {
		sl := slots[k]
		if sl == nil {
			sl = &slot{}
			slots[k] = sl
		}
		return sl
	}
	up := func(now, before int64) int64 {
		if now < before {
			return now // reset: all of it is since the restart
		}
		return now - before
	}
	// The window: size+1 slots up to the latest sample of any node.
	var last int64
	for _, n := range nodes {
		if len(n.History) > 0 {
			last = max(last, n.History[len(n.History)-1].T/interval)
		}
	}
	first := last - int64(size)
	for _, n := range nodes {
		h := n.History
		for i, smp := range h {
			k := smp.T / interval
			if k >= first {
				sl := at(k)
				sl.t = max(sl.t, smp.T)
				if i > 0 {
					p := h[i-1]
					sl.connects += up(smp.Connects, p.Connects)
					sl.messages += up(smp.Messages, p.Messages)
					sl.errors += up(smp.Errors, p.Errors)
				}
			}
			// The gauge: the node's last sample in a slot holds for that
			// slot and the ones before its next sample, within the window.
			next := k + 1
			if i+1 < len(h) {
				if h[i+1].T/interval == k {
					continue // a later sample of this node in the same slot
				}
				next = max(k+1, h[i+1].T/interval)
			}
			for j := max(k, first); j < min(next, last+1); j++ {
				at(j).connections += smp.Connections
			}
		}
	}
	keys := make([]int64, 0, len(slots))
	for k := range slots {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	// Cumulative again, from zero at the first slot kept: rates are the
	// differences of consecutive samples, as for one node.
	out := make([]api.Sample, 0, len(keys))
	var connects, messages, errs int64
	for i, k := range keys {
		sl := slots[k]
		if i > 0 {
			connects, messages, errs = connects+sl.connects, messages+sl.messages, errs+sl.errors
		}
		t := sl.t
		if t == 0 {
			t = k * interval // a slot only carried gauges into
		}
		out = append(out, api.Sample{T: t, Connections: sl.connections, Connects: connects, Messages: messages, Errors: errs})
	}
	return out
}
