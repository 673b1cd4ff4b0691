package swbench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
	"time"
)

// ErrScaleFailed is returned by the scale command when the run was made
// and a check failed (an ID listed twice or never, a failed call).
var ErrScaleFailed = errors.New("swbench: scale failed")

// scaleCLI runs "swbench scale [flags]".
func scaleCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("swbench scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		n          = fs.Int("n", 100000, "idle connections in the cluster")
		tagged     = fs.Int("tagged", 2000, "of them, connections of one user in one group (from connectd's $connect answer)")
		edges      = fs.Int("edges", 6, "edge processes")
		perProc    = fs.Int("per-process", 17000, "connections per swload process (each gets its own source address 127.0.0.2, .3, …)")
		rate       = fs.Float64("rate", 2500, "new connections per second, all swload processes together")
		limit      = fs.Int("limit", 1000, "page size of every listing (1..1000)")
		walks      = fs.Int("walks", 3, "full walks of the cluster-wide GET /@connections")
		memberWs   = fs.Int("member-walks", 10, "walks of the user's and the group's listings")
		calls      = fs.Int("calls", 30, "GET /@nodes and GET /@stats calls each")
		gets       = fs.Int("gets", 500, "GET /@connections/{id} calls for random listed IDs")
		churn      = fs.Int("churn", 5000, "connections that open and close while an /@events tail reads")
		timeout    = fs.Duration("timeout", 10*time.Minute, "bound on the whole run; every process is stopped at the end")
		redisBin   = fs.String("redis-server", "redis-server", "redis-server binary")
		natsBin    = fs.String("nats-server", "", "nats-server binary (default: go install "+NATSServerModule+"@"+NATSServerVersion+" into the cache)")
		asJSON     = fs.Bool("json", false, "print the report as JSON instead of tables")
		buildDirFl = fs.String("build-dir", "", "where to build this repository's binaries (default: a temporary directory, removed at exit)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := ScaleConfig{Conns: *n, Tagged: *tagged, Edges: *edges, PerProcess: *perProc, Rate: *rate, Limit: *limit,
		Walks: *walks, MemberWalks: *memberWs, Calls: *calls, Gets: *gets, Churn: *churn, Timeout: *timeout, Log: stderr}
	// Validate before building: a bad flag costs no compile.
	if err := cfg.Validate(); err != nil {
		return err
	}
	if _, err := exec.LookPath(*redisBin); err != nil {
		return fmt.Errorf("swbench: scale needs redis-server (-redis-server): %w", err)
	}
	cfg.Bins.RedisServer = *redisBin
	dir, cleanup, err := buildDir(*buildDirFl)
	if err != nil {
		return err
	}
	defer cleanup()
	if err := buildBinaries(ctx, dir, stderr, binary{"./cmd/edge", &cfg.Bins.Edge}, binary{"./cmd/router", &cfg.Bins.Router},
		binary{"./bench/cmd/swload", &cfg.Bins.Swload}, binary{"./bench/cmd/connectd", &cfg.Bins.Connectd}); err != nil {
		return err
	}
	if cfg.Bins.NATSServer = *natsBin; *natsBin == "" {
		cache, err := ToolCacheDir()
		if err != nil {
			return err
		}
		if cfg.Bins.NATSServer, err = installTool(ctx, cache, NATSServerModule, NATSServerVersion, stderr); err != nil {
			return err
		}
	}
	rep, err := RunScale(ctx, cfg)
	if err != nil && rep.Conns == 0 {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = errors.Join(err, enc.Encode(rep))
	} else {
		WriteScaleReport(stdout, rep)
	}
	if !rep.Pass {
		err = errors.Join(err, ErrScaleFailed)
	}
	return err
}

func msText(d time.Duration) string { return fmt.Sprintf("%.1f", ms(d)) }

// WriteScaleReport prints a scale run's tables and verdict.
func WriteScaleReport(w io.Writer, r ScaleReport) {
	fmt.Fprintf(w, "\nScale: %d connections open (%d failed) over %d edges in %v; load average %s before, %s after\n",
		r.Conns, r.Failed, r.Edges, r.OpenTime.Round(time.Second), r.LoadBefore, r.LoadAfter)
	fmt.Fprintln(w, "\nListings through the router (every walk from the first page to the last)")
	tw := newTable(w)
	fmt.Fprintln(tw, "listing\twant\twalks\tpages/walk\tpage p50 ms\tpage p99 ms\tpage max ms\twalk p50 ms\twalk max ms\texactly once\t")
	for _, l := range r.Listings {
		pages := 0
		if len(l.Walks) > 0 {
			pages = l.Walks[0].Pages
		}
		once := "yes"
		if len(l.Problems) > 0 {
			once = "NO: " + strings.Join(l.Problems, "; ")
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", l.Name, l.Want, len(l.Walks), pages,
			msText(l.Page.P50), msText(l.Page.P99), msText(l.Page.Max), msText(l.Total.P50), msText(l.Total.Max), once)
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "\nCalls through the router")
	tw = newTable(w)
	fmt.Fprintln(tw, "call\tcalls\terrors\tp50 ms\tp99 ms\tmax ms\t")
	for _, c := range []struct {
		name string
		t    Timing
	}{{"GET /@nodes", r.Nodes}, {"GET /@stats", r.Stats}, {"GET /@connections/{id}", r.Get}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t\n", c.name, c.t.Calls, c.t.Errors, msText(c.t.P50), msText(c.t.P99), msText(c.t.Max))
	}
	_ = tw.Flush()
	cmds := make([]string, 0, len(r.Redis))
	for c, n := range r.Redis {
		cmds = append(cmds, fmt.Sprintf("%s %d", c, n))
	}
	sort.Strings(cmds)
	fmt.Fprintf(w, "\nRegistry (redis-server) commands during the listings and calls: %s\n", strings.Join(cmds, ", "))
	t := r.Tail
	fmt.Fprintf(w, "\nEvents tail (?rate=100) during a churn of %d connections (%v): %d lines, %d connects, %d disconnects, %d dropped (%d of %d accounted for); router RSS %.1f → %.1f MiB, heap %.1f → %.1f MiB\n",
		t.Churn, t.Span.Round(time.Millisecond), t.Lines, t.Connects, t.Disconnects, t.Dropped, t.Accounted(), 2*t.Churn,
		float64(t.RouterRSSBefore)/(1<<20), float64(t.RouterRSSAfter)/(1<<20), t.RouterHeapBefore/(1<<20), t.RouterHeapAfter/(1<<20))
	fmt.Fprintln(w, "\nRSS with every connection open")
	tw = newTable(w)
	fmt.Fprintln(tw, "process\tconnections\tRSS MiB\t")
	for _, p := range r.RSS {
		conns := "-"
		if p.Conns >= 0 {
			conns = fmt.Sprint(p.Conns)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t\n", p.Process, conns, float64(p.RSS)/(1<<20))
	}
	_ = tw.Flush()
	if r.Pass {
		fmt.Fprintln(w, "Verdict: PASS")
	} else {
		fmt.Fprintf(w, "Verdict: FAIL: %s\n", strings.Join(r.Problems, "; "))
	}
}
