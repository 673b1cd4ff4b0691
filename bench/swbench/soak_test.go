package swbench

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// The ledger is fed the orders of events the soak can see; each case names
// the count that must move and the violation it must report.
func TestEventLedgerFindsEveryBreachOfTheInvariant(t *testing.T) {
	type ev struct{ kind, id string }
	cases := []struct {
		name   string
		events []ev
		want   LedgerCounts
		breach string // substring of the one violation; "" = none
	}{
		{"clean lives", []ev{{"C", "a"}, {"M", "a"}, {"C", "b"}, {"D", "a"}, {"M", "b"}, {"D", "b"}},
			LedgerCounts{Connects: 2, Disconnects: 2, Messages: 2}, ""},
		{"no DISCONNECT", []ev{{"C", "a"}, {"M", "a"}},
			LedgerCounts{Connects: 1, Messages: 1, Open: 1}, "1 connections with a CONNECT and no DISCONNECT"},
		{"second DISCONNECT (janitor after a live node)", []ev{{"C", "a"}, {"D", "a"}, {"D", "a"}},
			LedgerCounts{Connects: 1, Disconnects: 2, DuplicateDisconnects: 1}, "1 duplicate DISCONNECTs"},
		{"MESSAGE after DISCONNECT", []ev{{"C", "a"}, {"D", "a"}, {"M", "a"}},
			LedgerCounts{Connects: 1, Disconnects: 1, Messages: 1, EventsAfterDisconnect: 1}, "1 events after a DISCONNECT"},
		{"CONNECT after DISCONNECT", []ev{{"C", "a"}, {"D", "a"}, {"C", "a"}},
			LedgerCounts{Connects: 1, Disconnects: 1, EventsAfterDisconnect: 1}, "1 events after a DISCONNECT"},
		{"DISCONNECT without CONNECT", []ev{{"D", "a"}},
			LedgerCounts{Disconnects: 1, OrphanDisconnects: 1}, "1 DISCONNECTs without a CONNECT"},
		{"two CONNECTs", []ev{{"C", "a"}, {"C", "a"}, {"D", "a"}},
			LedgerCounts{Connects: 1, Disconnects: 1, DuplicateConnects: 1}, "1 duplicate CONNECTs"},
		{"MESSAGE before CONNECT", []ev{{"M", "a"}, {"C", "a"}, {"D", "a"}},
			LedgerCounts{Connects: 1, Disconnects: 1, Messages: 1, OrphanMessages: 1}, "1 MESSAGE events without a CONNECT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := NewEventLedger()
			for _, e := range tc.events {
				switch e.kind {
				case "C":
					l.Connect(e.id)
				case "M":
					l.Message(e.id)
				case "D":
					l.Disconnect(e.id)
				}
			}
			got := l.Counts()
			if got != tc.want {
				t.Fatalf("counts = %+v, want %+v", got, tc.want)
			}
			v := got.Violations()
			switch {
			case tc.breach == "" && len(v) != 0:
				t.Fatalf("violations %q on a clean run", v)
			case tc.breach != "" && (len(v) != 1 || !strings.Contains(v[0], tc.breach)):
				t.Fatalf("violations %q, want exactly one with %q", v, tc.breach)
			}
		})
	}
}

// Pick draws only from connections between their CONNECT and DISCONNECT,
// whatever order they leave in (the live set is a swap-removed slice).
func TestEventLedgerPicksOnlyLiveConnections(t *testing.T) {
	l := NewEventLedger()
	if id := l.Pick(); id != "" {
		t.Fatalf("Pick on an empty ledger = %q", id)
	}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		l.Connect(id)
	}
	for _, id := range []string{"a", "e", "c"} {
		l.Disconnect(id)
	}
	seen := map[string]int{}
	for range 1000 {
		seen[l.Pick()]++
	}
	if len(seen) != 2 || seen["b"] == 0 || seen["d"] == 0 {
		t.Fatalf("picked %v, want only b and d (both)", seen)
	}
	if open := l.Counts().Open; open != 2 {
		t.Fatalf("open = %d, want 2", open)
	}
	l.Disconnect("b")
	l.Disconnect("d")
	if id := l.Pick(); id != "" || l.Counts().Open != 0 {
		t.Fatalf("after every DISCONNECT: Pick %q, open %d", id, l.Counts().Open)
	}
}

func TestFlatRuleFailsGrowthOnly(t *testing.T) {
	rule := FlatRule{Tolerance: 0.2, Slack: 1}
	cases := []struct {
		name   string
		values []float64
		flat   bool
		first  float64
		last   float64
	}{
		// Noise around 100: medians 100 and 101, limit 121.
		{"steady with noise", []float64{100, 90, 110, 99, 130, 101, 100, 102, 101}, true, 100, 101},
		// A restarted process that comes back smaller is not a leak.
		{"shrinks", []float64{100, 100, 100, 60, 60, 60, 60, 60, 60}, true, 100, 60},
		// Exactly at the limit passes: 100*1.2+1.
		{"at the limit", []float64{100, 100, 100, 110, 110, 110, 121, 121, 121}, true, 100, 121},
		{"leaks", []float64{100, 100, 100, 110, 110, 110, 122, 122, 122}, false, 100, 122},
		// One spike in the last third does not move its median.
		{"one spike", []float64{100, 100, 100, 100, 100, 100, 100, 500, 100}, true, 100, 100},
		// Ten samples: thirds of 3, the middle four are ignored.
		{"ten samples", []float64{10, 10, 10, 99, 99, 99, 99, 10, 11, 12}, false, 10, 11},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rule
			if tc.name == "ten samples" {
				r = FlatRule{Tolerance: 0.05, Slack: 0.4} // limit 10.9
			}
			got := r.Judge("x", tc.values)
			if got.Flat != tc.flat || got.First != tc.first || got.Last != tc.last || got.Reason != "" {
				t.Fatalf("Judge = %+v, want flat %v, first %v, last %v", got, tc.flat, tc.first, tc.last)
			}
		})
	}
	if got := rule.Judge("short", []float64{1, 1, 1, 1, 1}); got.Flat || got.Reason == "" {
		t.Fatalf("5 samples judged %+v; want not flat with a reason (too few to judge is not a pass)", got)
	}
}

func TestSoakConfigValidation(t *testing.T) {
	ok := SoakConfig{Edge: Command{Argv: []string{"e"}}, Router: Command{Argv: []string{"r"}}, Swload: Command{Argv: []string{"s"}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if n := ok.withDefaults().perWave(); n != 500 {
		t.Fatalf("per wave = %d, want 500 (2000 connections, a wave every 5s living 20s)", n)
	}
	bad := map[string]func(*SoakConfig){
		"no edge":                func(c *SoakConfig) { c.Edge = Command{} },
		"restart sideways":       func(c *SoakConfig) { c.Restart = "sideways" },
		"warm-up over a quarter": func(c *SoakConfig) { c.Duration, c.Warmup = 90*time.Second, 30*time.Second },
		"too few samples": func(c *SoakConfig) {
			c.Duration, c.Warmup, c.SampleEvery = 60*time.Second, 10*time.Second, 10*time.Second
		},
		"lifetime within a wave":  func(c *SoakConfig) { c.Lifetime, c.WaveEvery = 5*time.Second, 5*time.Second },
		"more than one swload fd": func(c *SoakConfig) { c.Conns = 100000 },
	}
	for name, mut := range bad {
		c := ok
		mut(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Validate = %v, want ErrConfig", name, err)
		}
	}
}

// The printed report gives the verdict the exit status is based on, and
// marks what the flatness rule left out.
func TestSoakReportSaysWhatFailed(t *testing.T) {
	c := SoakConfig{Warmup: 10 * time.Second}.withDefaults()
	rep := SoakReport{
		Duration: time.Minute, Restart: "term", RestartAt: 30 * time.Second, Processes: []string{"edge0"},
		Samples: []SoakSample{
			{At: 0, Procs: []ProcSample{{OK: true, RSS: 20 << 20, Goroutines: 50}}},
			{At: 30 * time.Second, Procs: []ProcSample{{}}},
			{At: 40 * time.Second, Procs: []ProcSample{{OK: true, RSS: 40 << 20, Goroutines: 50}}},
		},
		Flat:       []FlatResult{{Series: "edge0 RSS", N: 9, First: 20 << 20, Last: 40 << 20, Limit: 32 << 20}},
		Violations: []string{"2 duplicate DISCONNECTs"},
	}
	var buf bytes.Buffer
	WriteSoakReport(&buf, rep, c)
	out := buf.String()
	for _, want := range []string{"0s (warm-up)", "30s (after restart)", "GREW", "BROKEN: 2 duplicate DISCONNECTs", "Verdict: FAIL"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	got := judgeSoak(c, rep.Processes, rep.Samples)
	var names []string
	for _, f := range got {
		names = append(names, f.Series)
	}
	if !slices.Equal(names, []string{"edge0 RSS", "edge0 heap", "edge0 goroutines"}) || got[0].N != 1 {
		t.Fatalf("judgeSoak = %+v; want RSS, heap and goroutines of edge0 from the one sample after warm-up that was read", got)
	}
}
