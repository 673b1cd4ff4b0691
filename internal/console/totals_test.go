package console

import (
	"fmt"
	"testing"

	"github.com/switchboardgw/switchboard/internal/api"
)

func TestSumHistoryAddsNodesUpSlotBySlot(t *testing.T) {
	smp := func(t, conns, connects int64) api.Sample {
		return api.Sample{T: t, Connections: conns, Connects: connects}
	}
	nodes := []api.NodeStatus{
		// Samples every second; the last one is the reading of now, in the
		// same slot as the sample before it.
		{ID: "a", History: []api.Sample{smp(1000, 1, 10), smp(2000, 2, 11), smp(3000, 2, 13), smp(4000, 3, 14), smp(4500, 3, 15)}},
		// Joined later, with 100 connects of its past: they are not this
		// window's traffic.
		{ID: "b", History: []api.Sample{smp(2500, 5, 100), smp(3500, 5, 102), smp(4400, 4, 103)}},
		// Restarted under the same ID: its counters start again.
		{ID: "c", History: []api.Sample{smp(3100, 0, 50), smp(4100, 0, 2)}},
	}
	got := sumHistory(nodes, 1000, 4)
	want := []api.Sample{smp(1000, 1, 0), smp(2500, 7, 1), smp(3500, 7, 5), smp(4500, 7, 10)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("sum = %v\nwant  %v", got, want)
	}
	// A window of 2 slots + now: the older slots go.
	if got := sumHistory(nodes, 1000, 2); len(got) != 3 || got[0].T != 2500 || got[0].Connections != 7 || got[2].Connects != 9 {
		t.Fatalf("last 3 slots = %v", got)
	}
}

func TestSumHistoryCarriesAGaugeOverASkippedSlot(t *testing.T) {
	// b's sampler ran late: nothing of it in slot 2, its 4 connections
	// still count there.
	nodes := []api.NodeStatus{
		{ID: "a", History: []api.Sample{{T: 1000, Connections: 1}, {T: 2000, Connections: 1}, {T: 3000, Connections: 1}}},
		{ID: "b", History: []api.Sample{{T: 1900, Connections: 4}, {T: 3050, Connections: 4}}},
	}
	got := sumHistory(nodes, 1000, 10)
	if len(got) != 3 || got[0].Connections != 5 || got[1].Connections != 5 || got[2].Connections != 5 {
		t.Fatalf("sum = %v, want 5 connections in every slot", got)
	}
}
