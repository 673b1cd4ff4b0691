package swbench

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
)

// The soak scenario's two verdicts: the lifecycle event invariant
// (EventLedger) and whether a resource series stayed flat (Flatness). Both
// are pure so that they are tested without a cluster.

// EventLedger checks, by connection ID, the invariant docs/protocol.md
// promises: every connection that got a CONNECT gets exactly one
// DISCONNECT, no event (MESSAGE, another CONNECT or DISCONNECT) follows its
// DISCONNECT, and no DISCONNECT arrives for a connection without a CONNECT.
// Events must be fed in the order one NATS subscription delivered them. It
// is safe for concurrent use.
type EventLedger struct {
	mu    sync.Mutex
	conns map[string]*ledgerConn
	// live holds the connections between CONNECT and DISCONNECT, as a slice
	// for a uniform random pick (the soak posts to them).
	live []string

	v LedgerCounts
}

type ledgerConn struct {
	connected   bool
	disconnects int
	liveIdx     int // index in live; -1 when not live
}

// LedgerCounts are the ledger's tallies; the Violation fields must all be 0.
type LedgerCounts struct {
	Connects    int `json:"connects"`    // distinct connections with a CONNECT
	Disconnects int `json:"disconnects"` // DISCONNECT events in all
	Messages    int `json:"messages"`    // MESSAGE events in all
	Open        int `json:"open"`        // CONNECT seen, DISCONNECT not (yet)

	DuplicateConnects     int `json:"duplicateConnects"`     // a second CONNECT for one ID
	DuplicateDisconnects  int `json:"duplicateDisconnects"`  // a second (third, …) DISCONNECT
	EventsAfterDisconnect int `json:"eventsAfterDisconnect"` // MESSAGE or CONNECT after the DISCONNECT
	OrphanDisconnects     int `json:"orphanDisconnects"`     // DISCONNECT with no CONNECT before it
	OrphanMessages        int `json:"orphanMessages"`        // MESSAGE with no CONNECT before it
}

// NewEventLedger returns an empty ledger.
func NewEventLedger() *EventLedger {
	return &EventLedger{conns: map[string]*ledgerConn{}}
}

func (l *EventLedger) get(id string) *ledgerConn {
	c := l.conns[id]
	if c == nil {
		c = &ledgerConn{liveIdx: -1}
		l.conns[id] = c
	}
	return c
}

// Connect records a CONNECT event.
func (l *EventLedger) Connect(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.get(id)
	switch {
	case c.disconnects > 0:
		l.v.EventsAfterDisconnect++
	case c.connected:
		l.v.DuplicateConnects++
	default:
		c.connected = true
		l.v.Connects++
		c.liveIdx = len(l.live)
		l.live = append(l.live, id)
	}
}

// Message records a MESSAGE event.
func (l *EventLedger) Message(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.v.Messages++
	c := l.get(id)
	switch {
	case c.disconnects > 0:
		l.v.EventsAfterDisconnect++
	case !c.connected:
		l.v.OrphanMessages++
	}
}

// Disconnect records a DISCONNECT event.
func (l *EventLedger) Disconnect(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.v.Disconnects++
	c := l.get(id)
	c.disconnects++
	switch {
	case c.disconnects > 1:
		l.v.DuplicateDisconnects++
	case !c.connected:
		l.v.OrphanDisconnects++
	default:
		l.dropLive(c)
	}
}

func (l *EventLedger) dropLive(c *ledgerConn) {
	i := c.liveIdx
	if i < 0 {
		return
	}
	last := len(l.live) - 1
	if i != last {
		moved := l.live[last]
		l.live[i] = moved
		l.conns[moved].liveIdx = i
	}
	l.live = l.live[:last]
	c.liveIdx = -1
}

// Pick returns a random live connection ID, or "" if there is none.
func (l *EventLedger) Pick() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.live) == 0 {
		return ""
	}
	return l.live[rand.IntN(len(l.live))]
}

// Counts returns the tallies so far.
func (l *EventLedger) Counts() LedgerCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.v
	v.Open = len(l.live)
	return v
}

// Violations lists, in words, what broke the invariant; empty means it
// held. Connections still open count as violations: call it once every
// client has gone.
func (v LedgerCounts) Violations() []string {
	var out []string
	add := func(n int, what string) {
		if n != 0 {
			out = append(out, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(v.Open, "connections with a CONNECT and no DISCONNECT")
	add(v.DuplicateDisconnects, "duplicate DISCONNECTs")
	add(v.EventsAfterDisconnect, "events after a DISCONNECT")
	add(v.OrphanDisconnects, "DISCONNECTs without a CONNECT")
	add(v.DuplicateConnects, "duplicate CONNECTs")
	add(v.OrphanMessages, "MESSAGE events without a CONNECT")
	return out
}

// FlatRule decides whether a resource series stayed flat: after the
// warm-up samples are dropped, the rest is cut into thirds, and the series
// is flat when the median of the last third is at most the median of the
// first third times (1 + Tolerance) plus Slack. Only growth fails: a series
// that shrinks (a restarted process starts smaller) is flat.
type FlatRule struct {
	Tolerance float64 // relative growth allowed, e.g. 0.2 for +20%
	Slack     float64 // absolute growth allowed on top, in the series' unit
}

// FlatResult is the verdict on one series.
type FlatResult struct {
	Series string  `json:"series"`
	First  float64 `json:"firstThirdMedian"`
	Last   float64 `json:"lastThirdMedian"`
	Limit  float64 `json:"limit"`
	N      int     `json:"samples"`
	Flat   bool    `json:"flat"`
	// Reason is set when there were too few samples to judge (then Flat is
	// false: a check that could not be made is not a pass).
	Reason string `json:"reason,omitempty"`
}

// minFlatSamples is the fewest samples (after warm-up) the rule judges:
// two per third.
const minFlatSamples = 6

// Judge applies the rule to values (in time order, warm-up removed).
func (r FlatRule) Judge(series string, values []float64) FlatResult {
	res := FlatResult{Series: series, N: len(values)}
	if len(values) < minFlatSamples {
		res.Reason = fmt.Sprintf("%d samples after warm-up, need %d", len(values), minFlatSamples)
		return res
	}
	third := len(values) / 3
	res.First = median(values[:third])
	res.Last = median(values[len(values)-third:])
	res.Limit = res.First*(1+r.Tolerance) + r.Slack
	res.Flat = res.Last <= res.Limit
	return res
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
