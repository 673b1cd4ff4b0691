package swload

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Phases of a run, advanced by Run and read by every reactor.
const (
	phaseOpen  int32 = iota // opening connections
	phaseHold               // all tried; holding (idle) or waiting (after echo)
	phaseSend               // sending echo messages
	phaseClose              // closing everything
)

// run is the state reactors share; everything mutable is atomic.
type run struct {
	cfg      Config
	epoch    time.Time
	phase    atomic.Int32
	sent     atomic.Int64
	received atomic.Int64
	open     atomic.Int64
	peak     atomic.Int64
	openDone chan struct{}

	errOnce sync.Once
	err     error
}

// now is nanoseconds since the run began, on the monotonic clock.
func (rn *run) now() int64 { return int64(time.Since(rn.epoch)) }

func (rn *run) noteOpen(delta int64) {
	n := rn.open.Add(delta)
	for {
		p := rn.peak.Load()
		if n <= p || rn.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

func (rn *run) setErr(err error) { rn.errOnce.Do(func() { rn.err = err }) }

// Result is what a run measured.
type Result struct {
	Mode      Mode   `json:"mode"`
	Target    string `json:"target"`
	Requested int    `json:"requested"`
	// Opened counts completed handshakes; Failed counts attempts that never
	// opened, by reason.
	Opened      int            `json:"opened"`
	Failed      int            `json:"failed"`
	FailReasons map[string]int `json:"failReasons,omitempty"`
	PeakOpen    int            `json:"peakOpen"`
	// OpenTime is from the first attempt to the last handshake finished;
	// ConnectRate is Opened divided by it.
	OpenTime    time.Duration `json:"openTimeNs"`
	ConnectRate float64       `json:"connectsPerSec"`
	Connect     Summary       `json:"connectLatency"`
	// Echo mode.
	Sent        int64   `json:"sent"`
	Received    int64   `json:"received"`
	RTT         Summary `json:"rtt"`
	MsgsPerSec  float64 `json:"msgsPerSec"`
	PingsAnswer int     `json:"pingsAnswered"`
	// Listen mode: each message's delay from the send time it carries to
	// its receipt, and the Unix ns times of the first and last message.
	Latency   Summary `json:"latency"`
	FirstRecv int64   `json:"firstRecvUnixNs"`
	LastRecv  int64   `json:"lastRecvUnixNs"`
	// BySend counts the receipts of each message by the send time it
	// carries (at most maxSendTimes distinct times, ordered by send time):
	// when a burst's last receipt was tells how long the system took to
	// deliver it to every member, whatever the pace between bursts.
	BySend []SendReceipt `json:"bySend,omitempty"`
	// What arrived, every mode: bytes, read(2) calls that returned data,
	// and WebSocket data messages (Received counts the messages of the
	// load itself: in Centrifugo's protocol a WebSocket message may carry
	// several publications, each counted).
	ReceivedBytes int64 `json:"receivedBytes"`
	Reads         int64 `json:"reads"`
	WSMessages    int64 `json:"wsMessages"`
	// How connections ended: the server closed (or dropped) them before the
	// run's end, the closing handshake completed, or they were cut off.
	ClosedByServer int           `json:"closedByServer"`
	ClosedClean    int           `json:"closedClean"`
	ClosedForced   int           `json:"closedForced"`
	Interrupted    bool          `json:"interrupted"`
	Elapsed        time.Duration `json:"elapsedNs"`
}

// SendReceipt is what one process received of the messages sent at Sent
// (Unix ns): how many, and the Unix ns times of the first and last.
type SendReceipt struct {
	Sent     int64 `json:"sentUnixNs"`
	Received int64 `json:"received"`
	First    int64 `json:"firstUnixNs"`
	Last     int64 `json:"lastUnixNs"`
}

// maxSendTimes bounds the distinct send times a listen run tracks.
const maxSendTimes = 4096

// Run opens the connections, runs the mode's phase, closes everything and
// reports. It returns when the run is over, when ctx is done (the result
// then says Interrupted), or after Config.MaxDuration; every socket it opened
// is closed and every goroutine it started has exited when it returns.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	c := cfg.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, c.MaxDuration)
	defer cancel()

	rn := &run{cfg: c, openDone: make(chan struct{}, c.Reactors)}
	reactors := make([]*reactor, 0, c.Reactors)
	for i := 0; i < c.Reactors; i++ {
		r, err := newReactor(rn, i)
		if err != nil {
			for _, r := range reactors {
				r.teardown()
			}
			return Result{}, err
		}
		reactors = append(reactors, r)
	}
	rn.epoch = time.Now()
	var wg sync.WaitGroup
	for _, r := range reactors {
		wg.Go(r.loop)
	}
	setPhase := func(p int32) {
		rn.phase.Store(p)
		for _, r := range reactors {
			r.wake()
		}
	}

	interrupted := false
	// Every reactor reports once: when its share has been tried, or when it
	// stopped early.
	for range reactors {
		select {
		case <-rn.openDone:
		case <-ctx.Done():
			interrupted = true
		}
		if interrupted {
			break
		}
	}
	var sendStart, sendEnd time.Time
	if !interrupted {
		setPhase(phaseHold)
		if c.OnOpen != nil {
			c.OnOpen(int(rn.open.Load()), int(int64(c.Conns)-rn.open.Load()))
		}
		switch c.Mode {
		case ModeIdle:
			t := time.NewTimer(c.Hold)
			select {
			case <-t.C:
			case <-ctx.Done():
				interrupted = true
			}
			t.Stop()
		case ModeListen:
			interrupted = waitListen(ctx, rn, c)
		case ModeEcho:
			sendStart = time.Now()
			setPhase(phaseSend)
			interrupted = waitEcho(ctx, rn, c, setPhase)
			sendEnd = time.Now()
		}
	}
	setPhase(phaseClose)
	wg.Wait()

	res := Result{
		Mode:        c.Mode,
		Target:      fmt.Sprint(c.Targets),
		Requested:   c.Conns,
		PeakOpen:    int(rn.peak.Load()),
		FailReasons: map[string]int{},
		Sent:        rn.sent.Load(),
		Received:    rn.received.Load(),
		Interrupted: interrupted,
		Elapsed:     time.Since(rn.epoch),
	}
	var connect, rtt, latency histogram
	var lastOpen int64
	var bySend map[int64]*SendReceipt
	for _, r := range reactors {
		s := &r.stats
		res.Opened += s.opened
		for k, v := range s.failed {
			res.Failed += v
			res.FailReasons[k] += v
		}
		res.ClosedByServer += s.closedByPeer
		res.ClosedClean += s.closedClean
		res.ClosedForced += s.closedForced
		res.PingsAnswer += s.pings
		lastOpen = max(lastOpen, s.lastOpenDone)
		connect.merge(&s.connect)
		rtt.merge(&s.rtt)
		latency.merge(&s.latency)
		if s.firstRecv > 0 && (res.FirstRecv == 0 || s.firstRecv < res.FirstRecv) {
			res.FirstRecv = s.firstRecv
		}
		res.LastRecv = max(res.LastRecv, s.lastRecv)
		bySend = mergeSends(bySend, s.bySend)
		res.ReceivedBytes += s.receivedBytes
		res.Reads += s.reads
		res.WSMessages += s.messages
	}
	res.BySend = sortedSends(bySend)
	res.OpenTime = time.Duration(lastOpen)
	if lastOpen > 0 {
		res.ConnectRate = float64(res.Opened) / time.Duration(lastOpen).Seconds()
	}
	res.Connect = connect.summary()
	res.RTT = rtt.summary()
	res.Latency = latency.summary()
	if d := sendEnd.Sub(sendStart); d > 0 {
		res.MsgsPerSec = float64(res.Received) / d.Seconds()
	}
	return res, rn.err
}

// mergeSends adds src's receipts to dst (nil: a new map), keeping at most
// maxSendTimes send times.
func mergeSends(dst, src map[int64]*SendReceipt) map[int64]*SendReceipt {
	for t, s := range src {
		if dst == nil {
			dst = map[int64]*SendReceipt{}
		}
		d := dst[t]
		if d == nil {
			if len(dst) >= maxSendTimes {
				continue
			}
			d = &SendReceipt{Sent: t, First: s.First}
			dst[t] = d
		}
		d.Received += s.Received
		d.First = min(d.First, s.First)
		d.Last = max(d.Last, s.Last)
	}
	return dst
}

func sortedSends(m map[int64]*SendReceipt) []SendReceipt {
	out := make([]SendReceipt, 0, len(m))
	for _, s := range m {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b SendReceipt) int { return cmp.Compare(a.Sent, b.Sent) })
	return out
}

// waitListen receives until Expect messages have arrived or Hold has
// passed.
func waitListen(ctx context.Context, rn *run, c Config) (interrupted bool) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(c.Hold)
	for time.Now().Before(deadline) && (c.Expect == 0 || rn.received.Load() < c.Expect) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return true
		}
	}
	return false
}

// waitEcho lets the reactors send until the message count or the duration
// is reached, then waits (bounded) for the replies still in flight.
func waitEcho(ctx context.Context, rn *run, c Config, setPhase func(int32)) (interrupted bool) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(c.Duration)
	for time.Now().Before(deadline) {
		if c.Messages > 0 && rn.sent.Load() >= int64(c.Messages) {
			break // all sent: wait for the replies below
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return true
		}
	}
	setPhase(phaseHold)
	// Replies still in flight: wait at most the handshake timeout, so a
	// server that never replies costs seconds, not the whole Duration.
	grace := time.Now().Add(c.HandshakeTimeout)
	for time.Now().Before(grace) && rn.received.Load() < rn.sent.Load() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return true
		}
	}
	return false
}
