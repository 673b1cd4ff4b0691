package swbench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrSoakFailed is returned by the soak command when the run was made and a
// check failed (the event invariant, or a series that grew).
var ErrSoakFailed = errors.New("swbench: soak failed")

// soakCLI runs "swbench soak [flags]".
func soakCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("swbench soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		duration   = fs.Duration("duration", 10*time.Minute, "how long the load runs")
		sampleDur  = fs.Duration("sample", 10*time.Second, "sampling period of RSS and goroutines")
		warmup     = fs.Duration("warmup", 60*time.Second, "samples before this are left out of the flatness verdict (at most a quarter of -duration)")
		conns      = fs.Int("conns", 2000, "connections open at a time, roughly")
		lifetime   = fs.Duration("lifetime", 20*time.Second, "how long each connection lives")
		wave       = fs.Duration("wave", 5*time.Second, "a new swload process (a wave of connections) starts this often")
		msgRate    = fs.Float64("msg-rate", 200, "client messages per second, all connections together (two-way route echo)")
		postRate   = fs.Float64("post-rate", 100, "@connections POSTs per second through the router, to random live connections")
		groupRate  = fs.Float64("group-rate", 5, "group sends per second through the router")
		groups     = fs.Int("groups", 8, "groups the connections are spread over")
		restart    = fs.String("restart", "term", "how edge1 is restarted half-way: term (SIGTERM, then start), kill (SIGKILL, then start) or none")
		fixedIDs   = fs.Bool("fixed-node-ids", false, "start each edge with a fixed -node-id (soak-edge0, soak-edge1), kept across the restart")
		rssTol     = fs.Float64("rss-tolerance", 0.2, "flat: last third's median RSS at most the first third's times 1+this …")
		rssSlack   = fs.Float64("rss-slack-mib", 8, "… plus this many MiB")
		heapTol    = fs.Float64("heap-tolerance", 0.2, "flat: last third's median heap in use at most the first third's times 1+this …")
		heapSlack  = fs.Float64("heap-slack-mib", 4, "… plus this many MiB")
		gc         = fs.Bool("gc", true, "force a GC in each process before each sample (/debug/pprof/heap?gc=1), so the heap series is the live heap")
		gTol       = fs.Float64("goroutine-tolerance", 0.1, "flat: last third's median goroutines at most the first third's times 1+this …")
		gSlack     = fs.Float64("goroutine-slack", 10, "… plus this many")
		edgeCmd    = fs.String("edge-cmd", "", "edge command (default: build ./cmd/edge); the driver appends the cluster's flags")
		routerCmd  = fs.String("router-cmd", "", "router command (default: build ./cmd/router)")
		swloadCmd  = fs.String("swload-cmd", "", "swload command (default: build ./bench/cmd/swload)")
		redisBin   = fs.String("redis-server", "redis-server", "redis-server binary")
		natsBin    = fs.String("nats-server", "nats-server", "nats-server binary; if not found, a NATS server runs inside swbench")
		asJSON     = fs.Bool("json", false, "print the report as JSON instead of tables")
		buildDirFl = fs.String("build-dir", "", "where to build binaries (default: a temporary directory, removed at exit)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := SoakConfig{
		Duration: *duration, SampleEvery: *sampleDur, Warmup: *warmup, Conns: *conns, Lifetime: *lifetime,
		WaveEvery: *wave, MsgRate: *msgRate, PostRate: *postRate, GroupRate: *groupRate, Groups: *groups,
		Restart: *restart, FixedNodeIDs: *fixedIDs, RedisServer: *redisBin, NATSServer: *natsBin,
		RSSRule:       FlatRule{Tolerance: *rssTol, Slack: *rssSlack * (1 << 20)},
		HeapRule:      FlatRule{Tolerance: *heapTol, Slack: *heapSlack * (1 << 20)},
		NoForcedGC:    !*gc,
		GoroutineRule: FlatRule{Tolerance: *gTol, Slack: *gSlack},
		Log:           stderr,
	}
	// Validate before building: a bad flag costs no compile.
	cfg.Edge, cfg.Router, cfg.Swload = Command{Argv: []string{"edge"}}, Command{Argv: []string{"router"}}, Command{Argv: []string{"swload"}}
	if err := cfg.Validate(); err != nil {
		return err
	}
	dir, cleanup, err := buildDir(*buildDirFl)
	if err != nil {
		return err
	}
	defer cleanup()
	for _, b := range []struct {
		line string
		pkg  string
		dst  *Command
	}{{*edgeCmd, "./cmd/edge", &cfg.Edge}, {*routerCmd, "./cmd/router", &cfg.Router}, {*swloadCmd, "./bench/cmd/swload", &cfg.Swload}} {
		if b.line != "" {
			*b.dst = Command{Argv: strings.Fields(b.line)}
			continue
		}
		bin, err := buildBinary(ctx, dir, b.pkg, stderr)
		if err != nil {
			return err
		}
		*b.dst = Command{Argv: []string{bin}}
	}
	rep, err := RunSoak(ctx, cfg)
	if err != nil && len(rep.Samples) == 0 {
		return err
	}
	// A run that went to the end and then failed (a process that had
	// crashed does not stop cleanly) still prints what it saw.
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = errors.Join(err, enc.Encode(rep))
	} else {
		WriteSoakReport(stdout, rep, cfg.withDefaults())
	}
	if !rep.Pass {
		err = errors.Join(err, ErrSoakFailed)
	}
	return err
}

// WriteSoakReport prints the soak's series over time, the flatness
// verdicts, the event invariant and the load that was applied.
func WriteSoakReport(w io.Writer, rep SoakReport, c SoakConfig) {
	fmt.Fprintf(w, "\nSoak: %v of load (%v in all), 2 edges + router, restart of edge1 half-way: %s\n",
		rep.Duration.Round(time.Second), rep.Elapsed.Round(time.Second), rep.Restart)
	tw := newTable(w)
	head := "t\topen\t"
	for _, p := range rep.Processes {
		head += p + " RSS MiB\theap\tgoroutines\t"
	}
	fmt.Fprintln(tw, head)
	restartMarked := false
	for _, s := range rep.Samples {
		mark := ""
		switch {
		case s.At < c.Warmup:
			mark = " (warm-up)"
		case rep.Restart != "none" && rep.RestartAt > 0 && s.At >= rep.RestartAt && !restartMarked:
			mark = " (after restart)"
			restartMarked = true
		}
		line := fmt.Sprintf("%v%s\t%d\t", s.At.Round(time.Second), mark, s.Open)
		for _, p := range s.Procs {
			if !p.OK {
				line += "-\t-\t-\t"
				continue
			}
			line += fmt.Sprintf("%.1f\t%.1f\t%.0f\t", p.RSS/(1<<20), p.HeapInuse/(1<<20), p.Goroutines)
		}
		fmt.Fprintln(tw, line)
	}
	_ = tw.Flush()

	fmt.Fprintf(w, "\nFlat: after the warm-up (%v), median of the last third ≤ median of the first third × (1 + tolerance) + slack\n", c.Warmup)
	tw = newTable(w)
	fmt.Fprintln(tw, "series\tsamples\tfirst third\tlast third\tlimit\tverdict\t")
	for _, f := range rep.Flat {
		unit, div := "", 1.0
		if strings.HasSuffix(f.Series, "RSS") || strings.HasSuffix(f.Series, "heap") {
			unit, div = " MiB", 1<<20
		}
		verdict := "flat"
		switch {
		case f.Reason != "":
			verdict = "NOT JUDGED: " + f.Reason
		case !f.Flat:
			verdict = "GREW"
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f%s\t%.1f%s\t%.1f%s\t%s\t\n", f.Series, f.N, f.First/div, unit, f.Last/div, unit, f.Limit/div, unit, verdict)
	}
	_ = tw.Flush()

	e, cl, a := rep.Events, rep.Clients, rep.API
	fmt.Fprintf(w, "\nEvents: %d connections with a CONNECT, %d DISCONNECTs, %d MESSAGE events\n", e.Connects, e.Disconnects, e.Messages)
	fmt.Fprintf(w, "Clients: %d waves, %d opened, %d failed to open, %d messages sent, %d frames received, %d closed by the server, echo p99 %v\n",
		cl.Waves, cl.Opened, cl.Failed, cl.Sent, cl.Received, cl.ClosedByServer, cl.RTTP99.Round(time.Microsecond))
	fmt.Fprintf(w, "API via router: %d posts (%d gone, %d errors), %d group sends (%d errors), %d calls skipped (previous still running)\n",
		a.Posts, a.PostsGone, a.PostErrors, a.GroupSends, a.GroupErrs, a.Skipped)
	if rep.Restart != "none" {
		fmt.Fprintf(w, "Restart of edge1 (%s) at %v: stopped in %v, ready again after %v\n", rep.Restart, rep.RestartAt.Round(time.Second),
			rep.RestartStop.Round(time.Millisecond), rep.RestartDown.Round(time.Millisecond))
	}
	if len(rep.Violations) == 0 {
		fmt.Fprintln(w, "Invariant: held (exactly one DISCONNECT per CONNECT, nothing after it, no DISCONNECT without a CONNECT)")
	} else {
		fmt.Fprintf(w, "Invariant: BROKEN: %s\n", strings.Join(rep.Violations, "; "))
	}
	if rep.Pass {
		fmt.Fprintln(w, "Verdict: PASS")
	} else {
		fmt.Fprintln(w, "Verdict: FAIL")
	}
}
