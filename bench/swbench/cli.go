package swbench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// DefaultEdgeArgs are the edge's flags unless -edge-cmd is given: every
// address it listens on is a free loopback port, so a run collides with
// nothing else on the machine.
// "echo" is a two-way route so the echo scenario's backend can answer;
// -pprof lets the driver force a GC before measuring.
const DefaultEdgeArgs = "-listen {listen} -admin-listen {admin} -api-listen {api} -nats-embedded-listen {nats} -two-way-routes echo -pprof -log-level warn"

// CLI runs the swbench command line: "swbench idle|connect-rate|all [flags]"
// from the repository root. Unless given commands, it builds the baseline,
// swload and (if ./cmd/edge exists) the edge into a temporary directory.
func CLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	usage := "usage: swbench idle|connect-rate|echo|drain|all|soak|peers|scale [flags]"
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, usage)
		return flag.ErrHelp
	}
	scenario := args[0]
	if scenario == "soak" {
		return soakCLI(ctx, args[1:], stdout, stderr)
	}
	if scenario == "peers" {
		return peersCLI(ctx, args[1:], stdout, stderr)
	}
	if scenario == "scale" {
		return scaleCLI(ctx, args[1:], stdout, stderr)
	}
	if scenario == "hop-echo" { // the floor probe's child (floor.go), not for users
		return HopEchoCLI(ctx, stderr)
	}
	switch scenario {
	case "idle", "connect-rate", "echo", "drain", "all":
	default:
		fmt.Fprintln(stderr, usage)
		return fmt.Errorf("swbench: unknown scenario %q", scenario)
	}
	fs := flag.NewFlagSet("swbench "+scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		n          = fs.Int("n", 15000, "connections per server")
		perProc    = fs.Int("per-process", 18000, "connections per swload process (each gets its own source address 127.0.0.2, .3, …)")
		rate       = fs.Float64("rate", 3000, "idle: new connections per second, all swload processes together")
		conc       = fs.Int("concurrency", 256, "connect-rate: handshakes in flight per swload process")
		repeat     = fs.Int("repeat", 1, "connect-rate: runs per server, taking turns; the median is reported")
		gc         = fs.Bool("gc", true, "idle: force a GC in the server (/debug/pprof/heap?gc=1) before each sample")
		settle     = fs.Duration("settle", 2*time.Second, "idle: wait after all connections are open before measuring")
		servers    = fs.String("servers", "baseline,edge", "servers to measure, in order; the first is the baseline of the ratios")
		baseCmd    = fs.String("baseline-cmd", "", "baseline command line with {listen} and {admin} (default: build ./bench/cmd/baseline)")
		edgeCmd    = fs.String("edge-cmd", "", "edge command line; {listen}, {admin} and any other {name} become free loopback addresses (default: build ./cmd/edge, run with "+DefaultEdgeArgs+")")
		swloadCmd  = fs.String("swload-cmd", "", "swload command (default: build ./bench/cmd/swload)")
		echoConns  = fs.Int("echo-n", 1000, "echo: connections carrying the messages")
		echoMsgs   = fs.Int("messages", 50000, "echo: messages in all")
		msgRate    = fs.Float64("msg-rate", 10000, "echo: messages per second, all connections together")
		msgSize    = fs.Int("size", 64, "echo: message size, bytes")
		asJSON     = fs.Bool("json", false, "print results as JSON instead of tables")
		buildDirFl = fs.String("build-dir", "", "where to build binaries (default: a temporary directory, removed at exit)")
		compress   = fs.Bool("compression", false, "idle only: run the edge with -compression and have swload offer permessage-deflate, as browsers do")
	)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *compress && scenario != "idle" {
		return errors.New("swbench: -compression is for the idle scenario (swload does not inflate replies)")
	}
	dir, cleanup, err := buildDir(*buildDirFl)
	if err != nil {
		return err
	}
	defer cleanup()
	build := func(pkg string) (string, error) { return buildBinary(ctx, dir, pkg, stderr) }
	cfg := Config{Conns: *n, PerProcess: *perProc, Rate: *rate, Concurrency: *conc, Repeat: *repeat, GC: *gc, Settle: *settle, Log: stderr}
	if *swloadCmd != "" {
		cfg.Swload = Command{Argv: strings.Fields(*swloadCmd)}
	} else {
		bin, err := build("./bench/cmd/swload")
		if err != nil {
			return err
		}
		cfg.Swload = Command{Argv: []string{bin}}
	}
	if *compress {
		cfg.Swload.Argv = append(cfg.Swload.Argv, "-deflate")
	}
	for _, name := range strings.Split(*servers, ",") {
		name = strings.TrimSpace(name)
		var line string
		switch name {
		case "":
			continue
		case "baseline":
			line = *baseCmd
			if line == "" {
				bin, err := build("./bench/cmd/baseline")
				if err != nil {
					return err
				}
				line = bin + " -listen {listen} -admin {admin} -pprof"
			}
		case "edge":
			line = *edgeCmd
			if line == "" {
				if _, err := os.Stat("cmd/edge"); err != nil {
					fmt.Fprintln(stderr, "swbench: ./cmd/edge not found: skipping the edge (give -edge-cmd to measure one)")
					continue
				}
				bin, err := build("./cmd/edge")
				if err != nil {
					return err
				}
				line = bin + " " + DefaultEdgeArgs
			}
			if *compress {
				line += " -compression"
			}
			// The echo scenario's backend attaches to the edge's NATS.
			if strings.Contains(line, "{nats}") {
				cfg.Servers = append(cfg.Servers, ServerSpec{Name: name, Cmd: Command{Argv: strings.Fields(line)}, NATS: "{nats}"})
				continue
			}
		default:
			return fmt.Errorf("swbench: unknown server %q (baseline or edge)", name)
		}
		cfg.Servers = append(cfg.Servers, ServerSpec{Name: name, Cmd: Command{Argv: strings.Fields(line)}})
	}

	rep := &report{rows: map[string]any{}, out: stdout, tables: !*asJSON}
	if scenario == "idle" || scenario == "all" {
		rows, err := RunIdle(ctx, cfg)
		addSection(rep, "idle", fmt.Sprintf("Idle connections (%d per server)", cfg.Conns), rows, err, WriteIdleTable)
	}
	if scenario == "connect-rate" || scenario == "all" {
		rows, err := RunConnectRate(ctx, cfg)
		addSection(rep, "connectRate", fmt.Sprintf("Connect rate (%d connections per server)", cfg.Conns), rows, err, WriteConnectTable)
	}
	if scenario == "echo" || scenario == "all" {
		rows, err := RunEcho(ctx, cfg, EchoConfig{Conns: *echoConns, Messages: *echoMsgs, MsgRate: *msgRate, MsgSize: *msgSize})
		addSection(rep, "echo", fmt.Sprintf("Echo round trip (%d connections, %d messages of %d bytes at %.0f/s; the edge through a two-way route and a NATS backend)",
			*echoConns, *echoMsgs, *msgSize, *msgRate), rows, err, WriteEchoTable)
	}
	if scenario == "drain" || scenario == "all" {
		rows, err := RunDrain(ctx, cfg)
		addSection(rep, "drain", fmt.Sprintf("Drain on SIGTERM (%d idle connections per server)", cfg.Conns), rows, err, WriteDrainTable)
	}
	errs := rep.errs
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep.rows); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// report gathers a run's scenarios: their rows for -json, their tables
// otherwise, and their errors.
type report struct {
	rows   map[string]any
	out    io.Writer
	tables bool
	errs   []error
}

func addSection[R any](r *report, key, title string, rows []R, err error, write func(io.Writer, []R)) {
	r.errs = append(r.errs, err)
	r.rows[key] = rows
	if r.tables && len(rows) > 0 {
		fmt.Fprintf(r.out, "\n%s\n", title)
		write(r.out, rows)
	}
}

// buildDir is where binaries are built: dir when given (kept), else a
// temporary directory that cleanup removes.
func buildDir(dir string) (string, func(), error) {
	if dir != "" {
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "swbench-")
	if err != nil {
		return "", nil, fmt.Errorf("swbench: %w", err)
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

// binary is a package to build and where its path goes.
type binary struct {
	pkg string
	dst *string
}

// buildBinaries builds every binary into dir (see buildDir), in order.
func buildBinaries(ctx context.Context, dir string, log io.Writer, bins ...binary) error {
	for _, b := range bins {
		var err error
		if *b.dst, err = buildBinary(ctx, dir, b.pkg, log); err != nil {
			return err
		}
	}
	return nil
}

// buildBinary builds pkg (a path from the repository root) into dir.
func buildBinary(ctx context.Context, dir, pkg string, log io.Writer) (string, error) {
	out := filepath.Join(dir, filepath.Base(pkg))
	fmt.Fprintf(log, "building %s\n", pkg)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("swbench: go build %s (run swbench from the repository root): %w", pkg, err)
	}
	return out, nil
}

// WriteIdleTable prints idle-memory rows.
func WriteIdleTable(w io.Writer, rows []IdleRow) {
	tw := newTable(w)
	fmt.Fprintln(tw, "server\tconnections\tfailed\tRSS MiB\tRSS/conn KiB\theap/conn KiB\tgoroutines/conn\tRSS vs baseline\theap vs baseline\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.2f\t%.2f\t%.3f\t%.3f\t%.3f\t\n", r.Server, r.Conns, r.Failed,
			r.RSSAfter/(1<<20), r.RSSPerConn/1024, r.HeapPerConn/1024, r.GoroutinesPer, r.RSSVsBaseline, r.HeapVsBaseline)
	}
	_ = tw.Flush()
}

// WriteConnectTable prints connect-rate rows.
func WriteConnectTable(w io.Writer, rows []ConnectRow) {
	tw := newTable(w)
	fmt.Fprintln(tw, "server\tconnections\tfailed\tconnects/s\tp50\tp99\tvs baseline\truns\tmin–max connects/s\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%v\t%v\t%.3f\t%d\t%.0f–%.0f\t\n", r.Server, r.Conns, r.Failed, r.PerSecond,
			r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.RateVsBaseline, r.Runs, r.Min, r.Max)
	}
	_ = tw.Flush()
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
}
