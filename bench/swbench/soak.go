package swbench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/switchboardgw/switchboard/bench/internal/defaults"
	"github.com/switchboardgw/switchboard/pkg/connections"
)

// The soak scenario: a 2-edge + router cluster on a real redis-server and a
// real NATS server, every part its own process on free loopback ports, runs
// a steady mix of connection churn, client messages, @connections posts and
// group sends through the router, and one edge restart half-way. It samples
// every process's RSS and goroutines and checks, from a recorder on NATS,
// the lifecycle event invariant (see EventLedger).

// soakPrefix is the NATS subject and Redis key prefix of the soak cluster.
const soakPrefix = "soak"

// SoakConfig describes a soak run. The zero value of every field means its
// default.
type SoakConfig struct {
	// Edge and Router start the two binaries; the driver appends the flags
	// that wire the cluster. Swload starts the load tool. Required.
	Edge, Router, Swload Command
	// RedisServer is the redis-server binary. Default "redis-server".
	RedisServer string
	// NATSServer is the nats-server binary; "" or not found: a NATS server
	// inside the driver process.
	NATSServer string
	// Duration is how long the load runs. Default 10m.
	Duration time.Duration
	// SampleEvery is the sampling period of RSS and goroutines. Default 10s.
	SampleEvery time.Duration
	// Warmup is dropped from the flatness verdicts. Default 60s; at most a
	// quarter of Duration (so the restart falls in the middle third).
	Warmup time.Duration
	// Conns is the number of connections open at a time, roughly. Default 2000.
	Conns int
	// Lifetime is how long one connection lives (connect, messages, close).
	// Default 20s.
	Lifetime time.Duration
	// WaveEvery is how often a new swload process starts: it opens its share
	// of the connections over this period, messages for the rest of
	// Lifetime, then closes them. Default 5s.
	WaveEvery time.Duration
	// MsgRate is client messages per second, all connections together
	// (route "echo", two-way: the recorder answers). Default 200.
	MsgRate float64
	// PostRate is @connections POSTs per second through the router, each to
	// a random live connection. Default 100.
	PostRate float64
	// GroupRate is group sends per second through the router. Default 5.
	GroupRate float64
	// Groups is how many groups the connections are spread over (the
	// recorder's $connect reply puts each in one). Default 8.
	Groups int
	// Restart is how edge 1 is restarted half-way: "term" (SIGTERM, wait,
	// start again), "kill" (SIGKILL, start again) or "none". Default "term".
	Restart string
	// FixedNodeIDs starts each edge with -node-id soak-edge<i>, the same
	// for the restarted process (a StatefulSet's stable pod name), instead
	// of a new random ID at every start.
	FixedNodeIDs bool
	// RSSRule, HeapRule and GoroutineRule judge flatness. Defaults: RSS
	// +20% plus 8 MiB; heap in use +20% plus 4 MiB; goroutines +10% plus 10.
	RSSRule, HeapRule, GoroutineRule FlatRule
	// NoForcedGC leaves garbage in the heap figure. By default every sample
	// is preceded by a forced GC in the process (/debug/pprof/heap?gc=1;
	// the driver starts edges and router with -pprof), so the heap series
	// is the live heap: the clearest sign of a leak.
	NoForcedGC bool
	// Log receives progress lines. Default: discarded.
	Log io.Writer
}

func (c SoakConfig) withDefaults() SoakConfig {
	defaults.Set(&c.RedisServer, "redis-server")
	defaults.Set(&c.Duration, 10*time.Minute)
	defaults.Set(&c.SampleEvery, 10*time.Second)
	defaults.Set(&c.Warmup, 60*time.Second)
	defaults.Set(&c.Conns, 2000)
	defaults.Set(&c.Lifetime, 20*time.Second)
	defaults.Set(&c.WaveEvery, 5*time.Second)
	defaults.Set(&c.MsgRate, 200)
	defaults.Set(&c.PostRate, 100)
	defaults.Set(&c.GroupRate, 5)
	defaults.Set(&c.Groups, 8)
	defaults.Set(&c.Restart, "term")
	if c.RSSRule == (FlatRule{}) {
		c.RSSRule = FlatRule{Tolerance: 0.2, Slack: 8 << 20}
	}
	if c.HeapRule == (FlatRule{}) {
		c.HeapRule = FlatRule{Tolerance: 0.2, Slack: 4 << 20}
	}
	if c.GoroutineRule == (FlatRule{}) {
		c.GoroutineRule = FlatRule{Tolerance: 0.1, Slack: 10}
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c
}

// Validate reports whether the config (after defaults) can run.
func (c SoakConfig) Validate() error {
	d := c.withDefaults()
	if len(d.Edge.Argv) == 0 || len(d.Router.Argv) == 0 || len(d.Swload.Argv) == 0 {
		return fmt.Errorf("%w: edge, router and swload commands are required", ErrConfig)
	}
	switch d.Restart {
	case "term", "kill", "none":
	default:
		return fmt.Errorf("%w: restart %q: want term, kill or none", ErrConfig, d.Restart)
	}
	if d.Duration <= 0 || d.SampleEvery <= 0 || d.Warmup < 0 || d.Lifetime <= 0 || d.WaveEvery <= 0 {
		return fmt.Errorf("%w: durations must be positive", ErrConfig)
	}
	if d.Warmup > d.Duration/4 {
		return fmt.Errorf("%w: warm-up %v is more than a quarter of the duration %v", ErrConfig, d.Warmup, d.Duration)
	}
	if d.Lifetime <= d.WaveEvery {
		return fmt.Errorf("%w: lifetime %v must exceed the wave period %v (a connection opens, then messages)", ErrConfig, d.Lifetime, d.WaveEvery)
	}
	if samples := int((d.Duration - d.Warmup) / d.SampleEvery); samples < minFlatSamples {
		return fmt.Errorf("%w: %d samples after warm-up; the flatness rule needs %d (shorter -sample or longer -duration)",
			ErrConfig, samples, minFlatSamples)
	}
	if d.Conns < 1 || d.MsgRate < 0 || d.PostRate < 0 || d.GroupRate < 0 || d.Groups < 1 {
		return fmt.Errorf("%w: connections and groups must be positive, rates not negative", ErrConfig)
	}
	if d.perWave() > 18000 {
		return fmt.Errorf("%w: %d connections per swload process; lower -conns or -wave", ErrConfig, d.perWave())
	}
	return nil
}

// perWave is how many connections one wave opens so that about Conns are
// open at a time: Lifetime/WaveEvery waves overlap.
func (c SoakConfig) perWave() int {
	return max(1, int(float64(c.Conns)*c.WaveEvery.Seconds()/c.Lifetime.Seconds()+0.5))
}

// SoakReport is what a soak run found. Pass is the overall verdict.
type SoakReport struct {
	// Duration is the load's; Elapsed adds the end (the last waves
	// closing, the last DISCONNECTs arriving).
	Duration   time.Duration `json:"durationNs"`
	Elapsed    time.Duration `json:"elapsedNs"`
	Restart    string        `json:"restart"`
	Processes  []string      `json:"processes"`
	Samples    []SoakSample  `json:"samples"`
	Flat       []FlatResult  `json:"flat"`
	Events     LedgerCounts  `json:"events"`
	Violations []string      `json:"violations"`
	Clients    SoakClients   `json:"clients"`
	API        SoakAPI       `json:"api"`
	// RestartAt is when edge1 was stopped, from the start of the load;
	// RestartStop is SIGTERM (or SIGKILL) to exit; RestartDown is until
	// the new process was ready.
	RestartAt   time.Duration `json:"restartAtNs"`
	RestartStop time.Duration `json:"restartStopNs"`
	RestartDown time.Duration `json:"restartDownNs"`
	Pass        bool          `json:"pass"`
}

// SoakSample is one sampling instant: the connections open (per the
// recorder) and, per process in SoakReport.Processes order, RSS and
// goroutines (NaN-free: OK false when the process could not be read, as
// while it restarts).
type SoakSample struct {
	At    time.Duration `json:"atNs"`
	Open  int           `json:"open"`
	Procs []ProcSample  `json:"procs"`
}

// ProcSample is one process at one instant.
type ProcSample struct {
	OK         bool    `json:"ok"`
	RSS        float64 `json:"rssBytes"`
	Goroutines float64 `json:"goroutines"`
	// HeapInuse is go_memstats_heap_inuse_bytes, after a forced GC unless
	// SoakConfig.NoForcedGC.
	HeapInuse float64 `json:"heapInuseBytes"`
}

// SoakClients sums the swload processes' results.
type SoakClients struct {
	Waves          int   `json:"waves"`
	Opened         int   `json:"opened"`
	Failed         int   `json:"failed"`
	Sent           int64 `json:"sent"`
	Received       int64 `json:"received"`
	ClosedByServer int   `json:"closedByServer"`
	// RTTP99 is the worst wave's p99 round trip of client messages.
	RTTP99 time.Duration `json:"rttP99Ns"`
	// WaveErrors counts swload processes that failed or gave no result.
	WaveErrors int `json:"waveErrors"`
}

// SoakAPI counts the driver's API calls through the router.
type SoakAPI struct {
	Posts      int64 `json:"posts"`
	PostsGone  int64 `json:"postsGone"` // 410: the connection closed meanwhile
	PostErrors int64 `json:"postErrors"`
	GroupSends int64 `json:"groupSends"`
	GroupErrs  int64 `json:"groupErrors"`
	Skipped    int64 `json:"skipped"` // the call before was still running
}

// soakNode is a restartable cluster process.
type soakNode struct {
	name  string
	cmd   Command
	repl  map[string]string
	admin string

	mu sync.Mutex
	p  *proc
}

func (n *soakNode) start(ctx context.Context, log io.Writer) error {
	p, err := start(n.name, n.cmd, n.repl)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, p, "http://"+n.admin+"/readyz", 60*time.Second); err != nil {
		_ = p.stop(10 * time.Second)
		return err
	}
	n.mu.Lock()
	n.p = p
	n.mu.Unlock()
	fmt.Fprintf(log, "%s: ready, pid %d, admin %s\n", n.name, p.pid(), n.admin)
	return nil
}

func (n *soakNode) current() *proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.p
}

func (n *soakNode) stop() error {
	if p := n.current(); p != nil {
		return p.stop(60 * time.Second)
	}
	return nil
}

// RunSoak runs the soak scenario. The error reports a run that could not be
// made; a run that was made and failed its checks returns a report with
// Pass false.
func RunSoak(ctx context.Context, c SoakConfig) (rep SoakReport, err error) {
	if err := c.Validate(); err != nil {
		return rep, err
	}
	c = c.withDefaults()
	rep.Restart = c.Restart

	dir, err := os.MkdirTemp("", "swbench-soak-")
	if err != nil {
		return rep, fmt.Errorf("swbench: soak: %w", err)
	}
	defer os.RemoveAll(dir)

	redisAddr, stopRedis, err := startRedis(ctx, c.RedisServer, dir)
	if err != nil {
		return rep, err
	}
	defer stopRedis()
	natsURL, stopNATS, err := startNATS(ctx, c.NATSServer)
	if err != nil {
		return rep, err
	}
	defer stopNATS()
	fmt.Fprintf(c.Log, "redis %s, nats %s\n", redisAddr, natsURL)

	ledger := NewEventLedger()
	rec, err := startSoakRecorder(natsURL, soakPrefix, c.Groups, ledger)
	if err != nil {
		return rep, err
	}
	defer rec.close()

	wire := []string{"-nats-url", natsURL, "-redis-url", "redis://" + redisAddr + "/0",
		"-prefix", soakPrefix, "-redis-key-prefix", soakPrefix, "-log-format", "json", "-log-level", "warn"}
	var nodes []*soakNode
	defer func() {
		for _, n := range nodes {
			if serr := n.stop(); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	for i := range 2 {
		n := &soakNode{name: fmt.Sprintf("edge%d", i), cmd: c.Edge}
		n.cmd.Argv = append([]string(nil), c.Edge.Argv...)
		if c.FixedNodeIDs {
			n.cmd.Argv = append(n.cmd.Argv, "-node-id", "soak-edge"+strconv.Itoa(i))
		}
		n.cmd.Argv = append(n.cmd.Argv, append([]string{
			"-listen", "{listen}", "-admin-listen", "{admin}", "-api-listen", "{api}",
			"-two-way-routes", "echo", "-connect-mode", "optional",
			// A killed edge is declared dead and cleaned up within seconds,
			// so its connections' DISCONNECTs arrive well before the end.
			"-lease-ttl", "5s", "-janitor-interval", "2s", "-pprof",
			"-drain-window", "2s", "-drain-delay", "0s",
		}, wire...)...)
		nodes = append(nodes, n)
	}
	router := &soakNode{name: "router", cmd: c.Router}
	router.cmd.Argv = append(append([]string(nil), c.Router.Argv...),
		append([]string{"-api-listen", "{api}", "-admin-listen", "{admin}", "-pprof"}, wire...)...)
	nodes = append(nodes, router)
	for _, n := range nodes {
		if n.repl, err = freeAddrs(n.cmd.Argv); err != nil {
			return rep, err
		}
		n.admin = n.repl["{admin}"]
		if err := n.start(ctx, c.Log); err != nil {
			return rep, err
		}
		rep.Processes = append(rep.Processes, n.name)
	}
	edges := nodes[:2]
	targets := edges[0].repl["{listen}"] + "," + edges[1].repl["{listen}"]

	api, err := connections.New("http://"+router.repl["{api}"], connections.Options{HTTPClient: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64},
	}})
	if err != nil {
		return rep, fmt.Errorf("swbench: soak: %w", err)
	}

	runCtx, stopRun := context.WithTimeout(ctx, c.Duration)
	defer stopRun()
	begin := time.Now()
	fmt.Fprintf(c.Log, "soak: %v, about %d connections (%d per wave every %v, %v each), %.0f msgs/s, %.0f posts/s, %.0f group sends/s, restart %s\n",
		c.Duration, c.Conns, c.perWave(), c.WaveEvery, c.Lifetime, c.MsgRate, c.PostRate, c.GroupRate, c.Restart)

	var (
		wg      sync.WaitGroup
		clients clientTotals
		calls   apiCounters
		samples []SoakSample
	)
	wg.Go(func() { runWaves(runCtx, ctx, c, targets, &clients) })
	wg.Go(func() { runPosts(runCtx, c.PostRate, ledger, api, &calls, c.Log) })
	wg.Go(func() { runGroupSends(runCtx, c, api, &calls, c.Log) })
	wg.Go(func() { samples = sample(runCtx, c, begin, nodes, ledger) })
	if c.Restart != "none" {
		select {
		case <-time.After(c.Duration / 2):
			rep.RestartAt = time.Since(begin)
			rep.RestartStop, rep.RestartDown, err = restartEdge(ctx, edges[1], c.Restart, c.Log)
		case <-runCtx.Done():
		}
	}
	if err != nil {
		stopRun()
		wg.Wait()
		return rep, err
	}
	<-runCtx.Done()
	wg.Wait()
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	rep.Duration = c.Duration

	// Every client has gone: each connection's DISCONNECT is due. Wait for
	// the recorder to see them (a killed edge's come from the janitor).
	fmt.Fprintf(c.Log, "soak: load over; waiting for the last DISCONNECTs\n")
	deadline := time.Now().Add(60 * time.Second)
	for ledger.Counts().Open > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	// A late duplicate (a second DISCONNECT, an event after it) can only be
	// seen by waiting: absence cannot be polled for.
	select {
	case <-time.After(3 * time.Second):
	case <-ctx.Done():
		return rep, ctx.Err()
	}

	rep.Elapsed = time.Since(begin)
	rep.Samples = samples
	rep.Clients = clients.get()
	rep.API = calls.get()
	rep.Events = ledger.Counts()
	rep.Violations = rep.Events.Violations()
	if n := rec.lost.Load(); n > 0 {
		rep.Violations = append(rep.Violations, fmt.Sprintf("recorder lost %d NATS messages (slow consumer): the check is void", n))
	}
	if rep.Clients.Opened != rep.Events.Connects {
		rep.Violations = append(rep.Violations, fmt.Sprintf("clients opened %d connections, CONNECT events name %d",
			rep.Clients.Opened, rep.Events.Connects))
	}
	if rep.Clients.WaveErrors > 0 {
		rep.Violations = append(rep.Violations, fmt.Sprintf("%d swload processes failed", rep.Clients.WaveErrors))
	}
	rep.Flat = judgeSoak(c, rep.Processes, samples)
	rep.Pass = len(rep.Violations) == 0
	for _, f := range rep.Flat {
		rep.Pass = rep.Pass && f.Flat
	}
	return rep, nil
}

// judgeSoak applies the flatness rules to every process's RSS and
// goroutines, over the samples taken after the warm-up.
func judgeSoak(c SoakConfig, procs []string, samples []SoakSample) []FlatResult {
	var out []FlatResult
	for i, name := range procs {
		var rss, heap, gor []float64
		for _, s := range samples {
			if s.At < c.Warmup || i >= len(s.Procs) || !s.Procs[i].OK {
				continue
			}
			rss = append(rss, s.Procs[i].RSS)
			heap = append(heap, s.Procs[i].HeapInuse)
			gor = append(gor, s.Procs[i].Goroutines)
		}
		out = append(out, c.RSSRule.Judge(name+" RSS", rss), c.HeapRule.Judge(name+" heap", heap),
			c.GoroutineRule.Judge(name+" goroutines", gor))
	}
	return out
}

// freeAddrs gives every {name} placeholder of argv a free loopback address.
func freeAddrs(argv []string) (map[string]string, error) {
	repl := map[string]string{}
	for _, a := range argv {
		for _, ph := range placeholder.FindAllString(a, -1) {
			if _, ok := repl[ph]; ok {
				continue
			}
			addr, err := freeAddr()
			if err != nil {
				return nil, err
			}
			repl[ph] = addr
		}
	}
	return repl, nil
}

// restartEdge stops n (SIGTERM and a wait for its drain, or SIGKILL) and
// starts it again on the same ports; a new process has a new node ID.
func restartEdge(ctx context.Context, n *soakNode, how string, log io.Writer) (stopped, down time.Duration, err error) {
	p := n.current()
	fmt.Fprintf(log, "%s: restart (%s), pid %d\n", n.name, how, p.pid())
	t0 := time.Now()
	if how == "kill" {
		_ = p.cmd.Process.Kill()
		<-p.waited
	} else if err := p.stop(60 * time.Second); err != nil {
		return 0, 0, fmt.Errorf("swbench: soak: restart %s: %w", n.name, err)
	}
	stopped = time.Since(t0)
	if err := n.start(ctx, log); err != nil {
		return stopped, 0, fmt.Errorf("swbench: soak: restart %s: %w", n.name, err)
	}
	down = time.Since(t0)
	fmt.Fprintf(log, "%s: stopped in %v, back after %v\n", n.name, stopped.Round(time.Millisecond), down.Round(time.Millisecond))
	return stopped, down, nil
}

// sample reads every process's RSS and goroutines at once, then every
// SampleEvery until ctx ends.
func sample(ctx context.Context, c SoakConfig, begin time.Time, nodes []*soakNode, ledger *EventLedger) []SoakSample {
	var out []SoakSample
	t := time.NewTicker(c.SampleEvery)
	defer t.Stop()
	for {
		s := SoakSample{At: time.Since(begin), Open: ledger.Counts().Open}
		for _, n := range nodes {
			var ps ProcSample
			if p := n.current(); p != nil && !p.exited() {
				mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if !c.NoForcedGC {
					_ = forceGC(mctx, "http://"+n.admin+"/debug/pprof/heap?gc=1") // a failure shows in Measure
				}
				m, err := Measure(mctx, p.pid(), "http://"+n.admin+"/metrics")
				cancel()
				ps = ProcSample{OK: err == nil, RSS: m.RSS, Goroutines: m.Goroutines, HeapInuse: m.HeapInuse}
			}
			s.Procs = append(s.Procs, ps)
		}
		if ctx.Err() != nil {
			return out // a sample cut short by the end is not one
		}
		out = append(out, s)
		fmt.Fprintf(c.Log, "sample %v: open %d\n", s.At.Round(time.Second), s.Open)
		select {
		case <-t.C:
		case <-ctx.Done():
			return out
		}
	}
}
