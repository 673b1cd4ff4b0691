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

// peersCLI runs "swbench peers [flags]".
func peersCLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("swbench peers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		systems    = fs.String("systems", strings.Join(PeerSystems, ","), "systems to measure, in turn")
		scenarios  = fs.String("scenarios", strings.Join(PeerScenarios, ","), "scenarios to run")
		base       = fs.String("ratio-base", SysCentrifugo, "ratios compare each Switchboard row with this system in the same mode (switchboard-redis with <base>-redis), other rows with the first system whose name starts with this")
		n          = fs.Int("n", 15000, "idle: connections")
		connectN   = fs.Int("connect-n", 15000, "connect: connections")
		perProc    = fs.Int("per-process", 8000, "connections per swload process (each gets its own source address 127.0.0.2, .3, …)")
		rate       = fs.Float64("rate", 3000, "new connections per second, all swload processes together, where connections open before a measurement")
		conc       = fs.Int("concurrency", 256, "connect: handshakes in flight per swload process")
		repeat     = fs.Int("repeat", 3, "connect: rounds, the systems taking turns; each system's median round is reported")
		fanN       = fs.Int("fanout-n", 10000, "fanout: members of the group (channel)")
		messages   = fs.Int("messages", 20, "fanout: messages sent one at a time")
		interval   = fs.Duration("interval", 250*time.Millisecond, "fanout: time between messages sent one at a time (bursts: 4 times this)")
		bursts     = fs.Int("bursts", 5, "fanout: bursts")
		burstSize  = fs.Int("burst-size", 20, "fanout: messages per burst, sent at once")
		p2pN       = fs.Int("p2p-n", 1000, "p2p: clients on the second node")
		posts      = fs.Int("posts", 5000, "p2p: posts")
		postRate   = fs.Float64("post-rate", 1000, "p2p: posts per second")
		size       = fs.Int("size", 64, "message body size, bytes")
		settle     = fs.Duration("settle", 2*time.Second, "idle: wait after all connections are open before measuring")
		redisBin   = fs.String("redis-server", "redis-server", "redis-server binary")
		natsBin    = fs.String("nats-server", "", "nats-server binary (default: go install "+NATSServerModule+"@"+NATSServerVersion+" into the cache)")
		cfBin      = fs.String("centrifugo", "", "centrifugo binary (default: go install "+CentrifugoModule+"@"+CentrifugoVersion+" into the cache)")
		asJSON     = fs.Bool("json", false, "print results as JSON instead of tables")
		profDir    = fs.String("profile-dir", "", "fanout: save each node's CPU profile over the bursts in this directory (<system>-<node>-bursts.pprof)")
		natsCmds   = fs.Bool("nats-commands", false, "Switchboard's Redis-mode edges and router send node commands through nats-server only (without -direct-listen / -direct-commands)")
		buildDirFl = fs.String("build-dir", "", "where to build this repository's binaries (default: a temporary directory, removed at exit)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := PeersConfig{
		Systems: splitNames(*systems), Scenarios: splitNames(*scenarios), RatioBase: *base,
		IdleConns: *n, ConnectConns: *connectN, PerProcess: *perProc, Rate: *rate, Concurrency: *conc, Repeat: *repeat,
		FanoutConns: *fanN, Messages: *messages, Interval: *interval, Bursts: *bursts, BurstSize: *burstSize,
		P2PConns: *p2pN, Posts: *posts, PostRate: *postRate, Size: *size, Settle: *settle, ProfileDir: *profDir, Log: stderr,
		NATSCommands: *natsCmds,
	}
	// Validate before building: a bad flag costs no compile.
	if err := cfg.Validate(); err != nil {
		return err
	}
	if _, err := exec.LookPath(*redisBin); err != nil {
		return fmt.Errorf("swbench: peers needs redis-server (-redis-server): %w", err)
	}
	cfg.Bins.RedisServer = *redisBin
	dir, cleanup, err := buildDir(*buildDirFl)
	if err != nil {
		return err
	}
	defer cleanup()
	if err := buildBinaries(ctx, dir, stderr, binary{"./cmd/edge", &cfg.Bins.Edge}, binary{"./cmd/router", &cfg.Bins.Router},
		binary{"./bench/cmd/baseline", &cfg.Bins.Baseline}, binary{"./bench/cmd/swload", &cfg.Bins.Swload},
		binary{"./bench/cmd/connectd", &cfg.Bins.Connectd}); err != nil {
		return err
	}
	cache, err := ToolCacheDir()
	if err != nil && (*cfBin == "" || *natsBin == "") {
		return err
	}
	for _, t := range []struct {
		flag, module, version string
		dst                   *string
	}{{*cfBin, CentrifugoModule, CentrifugoVersion, &cfg.Bins.Centrifugo}, {*natsBin, NATSServerModule, NATSServerVersion, &cfg.Bins.NATSServer}} {
		if *t.dst = t.flag; t.flag == "" {
			if *t.dst, err = installTool(ctx, cache, t.module, t.version, stderr); err != nil {
				return err
			}
		}
	}
	rep, err := RunPeers(ctx, cfg)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return errors.Join(err, enc.Encode(rep))
	}
	WritePeersReport(stdout, rep, cfg.withDefaults())
	return err
}

func splitNames(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// WritePeersReport prints every table of a peers run.
func WritePeersReport(w io.Writer, r PeersReport, c PeersConfig) {
	base := "vs " + c.RatioBase
	fmt.Fprintf(w, "Ratios: each switchboard row against %s in the same mode (switchboard-redis against %s-redis) where the table has it, every other row against the table's first %s row.\n",
		c.RatioBase, c.RatioBase, c.RatioBase)
	if len(r.Idle) > 0 {
		fmt.Fprintf(w, "\nIdle connections (%d per system; node = the process the clients are connected to, all = every process of the system)\n", c.IdleConns)
		tw := newTable(w)
		fmt.Fprintf(tw, "system\tconnections\tfailed\tnode RSS/conn KiB\tall RSS/conn KiB\theap/conn KiB\tgoroutines/conn\tnode %s\tall %s\t\n", base, base)
		for _, x := range r.Idle {
			heap, gors := "n/a", "n/a"
			if x.GoKnown {
				heap, gors = fmt.Sprintf("%.2f", x.HeapPerConn/1024), fmt.Sprintf("%.3f", x.GoroutinesPerConn)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.2f\t%s\t%s\t%.3f\t%.3f\t\n", x.System, x.Conns, x.Failed,
				x.NodeRSSPerConn/1024, x.AllRSSPerConn/1024, heap, gors, x.NodeRSSRatio, x.AllRSSRatio)
		}
		_ = tw.Flush()
	}
	if len(r.Connect) > 0 {
		fmt.Fprintf(w, "\nConnect rate (%d connections per system, %d handshakes in flight per swload process; every system but baseline asks a backend first, baseline-auth over HTTP as Centrifugo's proxy does)\n", c.ConnectConns, c.Concurrency)
		tw := newTable(w)
		fmt.Fprintf(tw, "system\tconnections\tfailed\tconnects/s\tp50\tp99\t%s\truns\tmin–max connects/s\t\n", base)
		for _, x := range r.Connect {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%v\t%v\t%.3f\t%d\t%.0f–%.0f\t\n", x.System, x.Conns, x.Failed, x.PerSecond,
				x.P50.Round(time.Microsecond), x.P99.Round(time.Microsecond), x.Ratio, x.Runs, x.Min, x.Max)
		}
		_ = tw.Flush()
	}
	if len(r.Fanout) > 0 {
		fmt.Fprintf(w, "\nFan-out to one group / channel (%d members; %d messages one at a time %v apart, and %d bursts of %d; publish to receipt; publications counted, not frames; pub/s = publications over the time the system was delivering; CPU per 1,000 publications received)\n",
			c.FanoutConns, c.Messages, c.Interval, c.Bursts, c.BurstSize)
		tw := newTable(w)
		fmt.Fprintf(tw, "system\tsending\tmembers\tsend errors\treceived/expected\tp50\tp99\tp99 %s\tburst to all p50\tmax\tpub/s\tpub/s %s\tsystem CPU ms/1000\tCPU %s\tclient CPU ms/1000\tclients\tclient cores\tWS msgs/pub\tbytes/pub\tpub/read\tpub/s over the phase\t\n", base, base, base)
		for _, x := range r.Fanout {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d/%d\t%v\t%v\t%.3f\t%v\t%v\t%.0f\t%.3f\t%.1f\t%.3f\t%.1f\t%d\t%.2f\t%.2f\t%.0f\t%.1f\t%.0f\t\n", x.System, x.Phase, x.Members, x.SendErrs,
				x.Received, x.Expected, x.P50.Round(time.Microsecond), x.P99.Round(time.Microsecond), x.P99Ratio,
				x.BurstP50.Round(time.Millisecond), x.BurstMax.Round(time.Millisecond), x.DeliveryRate, x.DeliveryRt,
				ms(x.CPUPer1000), x.CPURatio, ms(x.ClientPer1000), x.ClientProcs, x.ClientCores, x.WSMsgsPerPub, x.BytesPerPub, x.PubsPerRead, x.FramesPerSec)
		}
		_ = tw.Flush()
		for _, x := range r.Fanout {
			fmt.Fprintf(w, "  %s, %s: system CPU ms/1000 publications by process: %s\n", x.System, x.Phase, cpuBreakdown(x.CPUByProc))
		}
	}
	if len(r.P2P) > 0 {
		fmt.Fprintf(w, "\nCross-node point to point (%d clients on the nodes but the first; %d posts at %.0f/s through node 1 or the router; CPU of every process of the system)\n",
			c.P2PConns, c.Posts, c.PostRate)
		tw := newTable(w)
		fmt.Fprintf(tw, "system\tposts\terrors\tHTTP p50\tHTTP p99\treceived\tpost→receipt p50\tp99\tCPU ms/1000 posts\tCPU %s\tHTTP p99 %s\tfloor: loopback round trip p50\tp99\tCPU stolen\t\n", base, base)
		for _, x := range r.P2P {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%v\t%v\t%d\t%v\t%v\t%.1f\t%.3f\t%.3f\t%v\t%v\t%.2f%%\t\n", x.System, x.Posts, x.PostErrs,
				x.HTTPP50.Round(time.Microsecond), x.HTTPP99.Round(time.Microsecond), x.Received,
				x.RecvP50.Round(time.Microsecond), x.RecvP99.Round(time.Microsecond),
				float64(x.CPUPer1000)/float64(time.Millisecond), x.CPURatio, x.HTTPP99Rt,
				x.FloorP50.Round(time.Microsecond), x.FloorP99.Round(time.Microsecond), 100*x.Steal)
		}
		_ = tw.Flush()
		for _, x := range r.P2P {
			fmt.Fprintf(w, "  %s CPU ms/1000 posts by process: %s\n", x.System, cpuBreakdown(x.CPUByProc))
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func cpuBreakdown(m map[string]time.Duration) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s %.1f", k, float64(m[k])/float64(time.Millisecond))
	}
	return strings.Join(parts, ", ")
}
