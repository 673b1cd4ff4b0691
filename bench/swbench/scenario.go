package swbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/switchboardgw/switchboard/bench/internal/defaults"
	"github.com/switchboardgw/switchboard/bench/swload"
)

const swloadReady = swload.ReadyPrefix

// ErrConfig is wrapped by every Validate error.
var ErrConfig = errors.New("swbench: invalid config")

// Config describes a side-by-side run. The zero value of every field means
// its default.
type Config struct {
	// Servers are measured in order; the first is the baseline the others
	// are compared with. Required.
	Servers []ServerSpec
	// Swload starts the load tool; the driver appends its flags. Required.
	Swload Command
	// Conns is the number of connections per server. Default 15000.
	Conns int
	// PerProcess is the most connections one swload process opens; more
	// connections use more processes, each from its own source address
	// 127.0.0.(2+i). Default 18000 (the open-file limit is 20,000).
	PerProcess int
	// Rate is new connections per second, all processes together, for the
	// idle scenario. Default 3000. The connect-rate scenario opens as fast
	// as Concurrency allows.
	Rate float64
	// Concurrency is handshakes in flight per swload process in the
	// connect-rate scenario. Default 256.
	Concurrency int
	// Repeat is how many times the connect-rate scenario runs per server;
	// the median is reported. Default 1.
	Repeat int
	// GC forces a garbage collection in the server (through
	// /debug/pprof/heap?gc=1 on its admin port) before each idle sample.
	// Default false; the CLI sets it.
	GC bool
	// Settle is how long to wait after every connection is open before
	// measuring, so that the server's allocations settle. Default 2s.
	Settle time.Duration
	// ReadyTimeout bounds a server's start-up (its /readyz). Default 60s.
	ReadyTimeout time.Duration
	// Log receives progress lines. Default: discarded.
	Log io.Writer
}

func (c Config) withDefaults() Config {
	defaults.Set(&c.Conns, 15000)
	defaults.Set(&c.PerProcess, 18000)
	defaults.Set(&c.Rate, 3000)
	defaults.Set(&c.Concurrency, 256)
	defaults.Set(&c.Repeat, 1)
	defaults.Set(&c.Settle, 2*time.Second)
	defaults.Set(&c.ReadyTimeout, 60*time.Second)
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c
}

// Validate reports whether the config (after defaults) can run.
func (c Config) Validate() error {
	d := c.withDefaults()
	if len(d.Servers) == 0 {
		return fmt.Errorf("%w: no server", ErrConfig)
	}
	if len(d.Swload.Argv) == 0 {
		return fmt.Errorf("%w: no swload command", ErrConfig)
	}
	if d.Conns < 1 || d.PerProcess < 1 || d.Rate <= 0 || d.Concurrency < 1 || d.Repeat < 1 {
		return fmt.Errorf("%w: connections, per-process, rate and concurrency must be positive", ErrConfig)
	}
	if procs := (d.Conns + d.PerProcess - 1) / d.PerProcess; procs > 250 {
		return fmt.Errorf("%w: %d swload processes needed; at most 250 source addresses", ErrConfig, procs)
	}
	return nil
}

var placeholder = regexp.MustCompile(`\{[a-z0-9_-]+\}`)

// server is a started server under test.
type server struct {
	spec   ServerSpec
	p      *proc
	listen string
	admin  string
	repl   map[string]string // placeholder → address
}

// stop stops the server and, when *err is nil, reports its exit error
// there: deferred by each scenario, so a server that fails on the way out
// fails the run.
func (s *server) stop(err *error) {
	if serr := s.p.stop(60 * time.Second); serr != nil && *err == nil {
		*err = serr
	}
}

func startServer(ctx context.Context, c Config, spec ServerSpec) (*server, error) {
	// {listen}, {admin} and any other {name} in the command line each get a
	// free loopback address (the edge also wants one for its API and its
	// embedded NATS server).
	repl, err := freeAddrs(append([]string{"{listen}", "{admin}"}, spec.Cmd.Argv...))
	if err != nil {
		return nil, err
	}
	listen, admin := repl["{listen}"], repl["{admin}"]
	p, err := start(spec.Name, spec.Cmd, repl)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, p, "http://"+admin+"/readyz", c.ReadyTimeout); err != nil {
		_ = p.stop(10 * time.Second)
		return nil, err
	}
	fmt.Fprintf(c.Log, "%s: ready, pid %d, ws %s, admin %s\n", spec.Name, p.pid(), listen, admin)
	return &server{spec: spec, p: p, listen: listen, admin: admin, repl: repl}, nil
}

// measure samples the server, after a forced garbage collection when
// c.GC is set and the server serves /debug/pprof: heap in use then counts
// live memory only, not garbage awaiting the next cycle.
func (s *server) measure(ctx context.Context, c Config) (Sample, error) {
	if c.GC {
		if err := forceGC(ctx, "http://"+s.admin+"/debug/pprof/heap?gc=1"); err != nil {
			fmt.Fprintf(c.Log, "%s: no forced GC (%v): heap figures include garbage\n", s.spec.Name, err)
		}
	}
	return Measure(ctx, s.p.pid(), "http://"+s.admin+"/metrics")
}

// loaders starts the swload processes for one server: shares of c.Conns,
// each from its own source address, with the given extra flags.
func loaders(c Config, target string, flags func(n int) []string) ([]*proc, error) {
	procs := (c.Conns + c.PerProcess - 1) / c.PerProcess
	var out []*proc
	for i := 0; i < procs; i++ {
		n := c.Conns / procs
		if i < c.Conns%procs {
			n++
		}
		cmd := c.Swload
		cmd.Argv = append(append([]string(nil), cmd.Argv...),
			"-json", "-target", target, "-src", "127.0.0."+strconv.Itoa(2+i), "-n", strconv.Itoa(n))
		cmd.Argv = append(cmd.Argv, flags(n)...)
		p, err := start(fmt.Sprintf("swload[%d]", i), cmd, nil)
		if err != nil {
			stopAll(out)
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// awaitReady waits for every loader's ready line and returns the total open.
func awaitReady(ctx context.Context, ps []*proc) (int, error) {
	total := 0
	for _, p := range ps {
		select {
		case line := <-p.ready:
			for _, f := range strings.Fields(line) {
				if v, ok := strings.CutPrefix(f, "open="); ok {
					n, _ := strconv.Atoi(v)
					total += n
				}
			}
		case <-p.waited:
			return 0, fmt.Errorf("swbench: %s exited before its connections were open: %v; stderr:\n%s", p.name, p.err, p.tail.String())
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return total, nil
}

// awaitExit waits for loaders that end by themselves; on cancellation it
// stops them all.
func awaitExit(ctx context.Context, ps []*proc) error {
	for _, p := range ps {
		select {
		case <-p.waited:
		case <-ctx.Done():
			stopAll(ps)
			return ctx.Err()
		}
	}
	return nil
}

// finish stops (if still running) and collects every loader's JSON result.
// loadersDone waits for loaders that exit by themselves, then collects
// their results.
func loadersDone(ctx context.Context, ps []*proc) ([]swload.Result, error) {
	if err := awaitExit(ctx, ps); err != nil {
		return nil, err
	}
	return finish(ps, 60*time.Second)
}

func finish(ps []*proc, timeout time.Duration) ([]swload.Result, error) {
	var errs []error
	var out []swload.Result
	for _, p := range ps {
		if err := p.stop(timeout); err != nil {
			errs = append(errs, err)
			continue
		}
		var r swload.Result
		if err := json.Unmarshal(p.stdout.Bytes(), &r); err != nil {
			errs = append(errs, fmt.Errorf("swbench: %s result: %w; stderr:\n%s", p.name, err, p.tail.String()))
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// idleLoaders opens c.Conns idle connections to target at c.Rate, spread
// over the loaders, and returns once every one has been tried (how many are
// open). They are held until the loaders are stopped; -hold only bounds a
// lost run.
func idleLoaders(ctx context.Context, c Config, target string) ([]*proc, int, error) {
	perProc := c.Rate / float64((c.Conns+c.PerProcess-1)/c.PerProcess)
	ps, err := loaders(c, target, func(int) []string {
		return []string{"-mode", "idle", "-rate", strconv.FormatFloat(perProc, 'f', 1, 64), "-hold", "1h", "-max-duration", "2h"}
	})
	if err != nil {
		return nil, 0, err
	}
	open, err := awaitReady(ctx, ps)
	if err != nil {
		stopAll(ps)
		return nil, 0, err
	}
	return ps, open, nil
}

func stopAll(ps []*proc) {
	for _, p := range ps {
		_ = p.stop(30 * time.Second)
	}
}

// IdleRow is one server's idle-memory figures.
type IdleRow struct {
	Server          string  `json:"server"`
	Conns           int     `json:"connections"`
	Failed          int     `json:"failed"`
	RSSBefore       float64 `json:"rssBeforeBytes"`
	RSSAfter        float64 `json:"rssAfterBytes"`
	RSSPerConn      float64 `json:"rssPerConnBytes"`
	HeapPerConn     float64 `json:"heapPerConnBytes"`
	GoroutinesPer   float64 `json:"goroutinesPerConn"`
	RSSVsBaseline   float64 `json:"rssVsBaseline"`
	HeapVsBaseline  float64 `json:"heapVsBaseline"`
	ClosedByServer  int     `json:"closedByServer"`
	OpenTimeSeconds float64 `json:"openTimeSeconds"`
}

// RunIdle measures, for each server in turn, what c.Conns idle connections
// cost: RSS, Go heap in use and goroutines after they are open, minus the
// same before, divided by the connections open.
func RunIdle(ctx context.Context, c Config) ([]IdleRow, error) {
	return runEach(c, "idle", func(c Config, spec ServerSpec) (IdleRow, error) { return idleOne(ctx, c, spec) },
		func(row *IdleRow, base IdleRow) {
			row.RSSVsBaseline = ratio(row.RSSPerConn, base.RSSPerConn)
			row.HeapVsBaseline = ratio(row.HeapPerConn, base.HeapPerConn)
		})
}

// runEach validates c, fills its defaults and runs one scenario on every
// server in turn; when rel is set, each row gets its ratios to the first
// row (the baseline; the first row is compared with itself).
func runEach[R any](c Config, scenario string, one func(Config, ServerSpec) (R, error), rel func(row *R, base R)) ([]R, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.withDefaults()
	var rows []R
	for _, spec := range c.Servers {
		row, err := one(c, spec)
		if err != nil {
			return rows, fmt.Errorf("swbench: %s %s: %w", scenario, spec.Name, err)
		}
		if rel != nil {
			base := row
			if len(rows) > 0 {
				base = rows[0]
			}
			rel(&row, base)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func idleOne(ctx context.Context, c Config, spec ServerSpec) (row IdleRow, err error) {
	s, err := startServer(ctx, c, spec)
	if err != nil {
		return row, err
	}
	defer s.stop(&err)
	before, err := s.measure(ctx, c)
	if err != nil {
		return row, err
	}
	ps, open, err := idleLoaders(ctx, c, s.listen)
	if err != nil {
		return row, err
	}
	fmt.Fprintf(c.Log, "%s: %d connections open; settling %v\n", spec.Name, open, c.Settle)
	select {
	case <-time.After(c.Settle):
	case <-ctx.Done():
		stopAll(ps)
		return row, ctx.Err()
	}
	after, err := s.measure(ctx, c)
	if err != nil {
		stopAll(ps)
		return row, err
	}
	results, err := finish(ps, 60*time.Second)
	if err != nil {
		return row, err
	}
	row = IdleRow{Server: spec.Name, Conns: open, RSSBefore: before.RSS, RSSAfter: after.RSS}
	for _, r := range results {
		row.Failed += r.Failed
		row.ClosedByServer += r.ClosedByServer
		row.OpenTimeSeconds = max(row.OpenTimeSeconds, r.OpenTime.Seconds())
	}
	if open > 0 {
		n := float64(open)
		row.RSSPerConn = (after.RSS - before.RSS) / n
		row.HeapPerConn = (after.HeapInuse - before.HeapInuse) / n
		row.GoroutinesPer = (after.Goroutines - before.Goroutines) / n
		if math.Abs(row.GoroutinesPer) < 0.0005 {
			row.GoroutinesPer = 0 // not "-0.000" when one came and went
		}
	}
	fmt.Fprintf(c.Log, "%s: RSS %.1f → %.1f MiB, heap %.1f → %.1f MiB, goroutines %.0f → %.0f\n", spec.Name,
		before.RSS/(1<<20), after.RSS/(1<<20), before.HeapInuse/(1<<20), after.HeapInuse/(1<<20),
		before.Goroutines, after.Goroutines)
	return row, nil
}

// ConnectRow is one server's connect-rate figures.
type ConnectRow struct {
	Server         string        `json:"server"`
	Conns          int           `json:"connections"`
	Failed         int           `json:"failed"`
	PerSecond      float64       `json:"connectsPerSec"`
	P50            time.Duration `json:"p50Ns"`
	P99            time.Duration `json:"p99Ns"`
	RateVsBaseline float64       `json:"rateVsBaseline"`
	// Over Runs repetitions: the row is the median run; Min and Max are
	// the extreme rates.
	Runs int     `json:"runs"`
	Min  float64 `json:"minConnectsPerSec"`
	Max  float64 `json:"maxConnectsPerSec"`
}

// RunConnectRate measures, for each server in turn, successful connects per
// second while c.Conns connections are opened as fast as the loaders'
// concurrency allows (total opened over the longest loader's open time).
// With c.Repeat > 1 the servers take turns, round after round, so that
// background load hits them alike, and each server's median run is kept.
func RunConnectRate(ctx context.Context, c Config) ([]ConnectRow, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.withDefaults()
	runs := make([][]ConnectRow, len(c.Servers))
	for round := 0; round < c.Repeat; round++ {
		for i, spec := range c.Servers {
			row, err := connectOne(ctx, c, spec)
			if err != nil {
				return nil, fmt.Errorf("swbench: connect-rate %s: %w", spec.Name, err)
			}
			runs[i] = append(runs[i], row)
		}
	}
	rows := make([]ConnectRow, len(c.Servers))
	for i, rs := range runs {
		sort.Slice(rs, func(a, b int) bool { return rs[a].PerSecond < rs[b].PerSecond })
		rows[i] = rs[len(rs)/2]
		rows[i].Runs = len(rs)
		rows[i].Min, rows[i].Max = rs[0].PerSecond, rs[len(rs)-1].PerSecond
		rows[i].RateVsBaseline = ratio(rows[i].PerSecond, rows[0].PerSecond)
	}
	return rows, nil
}

func connectOne(ctx context.Context, c Config, spec ServerSpec) (row ConnectRow, err error) {
	s, err := startServer(ctx, c, spec)
	if err != nil {
		return row, err
	}
	defer s.stop(&err)
	ps, err := loaders(c, s.listen, func(int) []string {
		return []string{"-mode", "connect-rate", "-rate", "-1", "-concurrency", strconv.Itoa(c.Concurrency), "-max-duration", "30m"}
	})
	if err != nil {
		return row, err
	}
	// Each loader exits by itself once its connections are tried and closed.
	results, err := loadersDone(ctx, ps)
	if err != nil {
		return row, err
	}
	row.Server = spec.Name
	var longest time.Duration
	for _, r := range results {
		row.Conns += r.Opened
		row.Failed += r.Failed
		longest = max(longest, r.OpenTime)
		// Quantiles of separate processes cannot be merged: report the worst.
		row.P50 = max(row.P50, r.Connect.P50)
		row.P99 = max(row.P99, r.Connect.P99)
	}
	if longest > 0 {
		row.PerSecond = float64(row.Conns) / longest.Seconds()
	}
	fmt.Fprintf(c.Log, "%s: %d connects in %v\n", spec.Name, row.Conns, longest.Round(time.Millisecond))
	return row, nil
}
