package swload

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// ReadyPrefix starts the line CLI writes to stderr once every connection has
// been tried; a driver waits for it before measuring the server.
const ReadyPrefix = "swload: ready"

// CLI runs the swload command line: flags in args, the report to stdout
// (a table, or JSON with -json), progress to stderr.
func CLI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("swload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		mode     = fs.String("mode", "idle", "idle | echo | connect-rate | listen")
		targets  = fs.String("target", "127.0.0.1:8080", "comma-separated IPv4 loopback host:port targets, used round-robin")
		sources  = fs.String("src", "", "comma-separated loopback source addresses, used round-robin (default: kernel's choice)")
		path     = fs.String("path", "/", "upgrade request path and query")
		n        = fs.Int("n", 1000, "connections to open (at most the open-file limit minus 100)")
		rate     = fs.Float64("rate", 1000, "new connections per second; negative = as fast as -concurrency allows")
		conc     = fs.Int("concurrency", 256, "handshakes in flight at most")
		hold     = fs.Duration("hold", 10*time.Second, "idle: how long to hold the connections once open; listen: the longest wait for -expect messages (SIGINT/SIGTERM ends it sooner)")
		duration = fs.Duration("duration", 10*time.Second, "echo: how long to send")
		msgRate  = fs.Float64("msg-rate", 1000, "echo: messages per second, all connections together")
		messages = fs.Int("messages", 0, "echo: stop after this many messages (0 = until -duration)")
		size     = fs.Int("size", 64, fmt.Sprintf("echo: message size in bytes (at least %d)", minMsgSize))
		hsTO     = fs.Duration("handshake-timeout", 10*time.Second, "bound on TCP connect plus upgrade")
		maxDur   = fs.Duration("max-duration", 30*time.Minute, "hard bound on the whole run")
		reactors = fs.Int("reactors", 0, "epoll loops (default GOMAXPROCS)")
		asJSON   = fs.Bool("json", false, "print the result as JSON instead of a table")
		proto    = fs.String("protocol", "raw", "raw (plain messages) | centrifugo (Centrifugo's JSON protocol: connect, then subscribe to -channel)")
		token    = fs.String("token", "", "centrifugo: the connect command's token (none: insecure mode or a connect proxy)")
		channel  = fs.String("channel", "", "centrifugo: channel to subscribe to once connected; {i} becomes the connection's index plus -index-base")
		idxBase  = fs.Int("index-base", 0, "centrifugo: added to the connection index in -channel")
		expect   = fs.Int64("expect", 0, "listen: stop once this many messages have arrived (0 = after -hold)")
		deflate  = fs.Bool("deflate", false, "idle: offer permessage-deflate (no context takeover) in every upgrade, as browsers do")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := Config{
		Mode: Mode(*mode), Path: *path, Conns: *n, Rate: *rate, Concurrency: *conc,
		Hold: *hold, Duration: *duration, MsgRate: *msgRate, Messages: *messages, MsgSize: *size,
		HandshakeTimeout: *hsTO, MaxDuration: *maxDur, Reactors: *reactors, Deflate: *deflate,
		Protocol: Protocol(*proto), Token: *token, Channel: *channel, IndexBase: *idxBase, Expect: *expect,
	}
	if *rate == 0 {
		return errors.New("swload: -rate must not be 0")
	}
	for _, t := range splitList(*targets) {
		ap, err := netip.ParseAddrPort(t)
		if err != nil {
			return fmt.Errorf("swload: -target %q: %w", t, err)
		}
		cfg.Targets = append(cfg.Targets, ap)
	}
	for _, s := range splitList(*sources) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("swload: -src %q: %w", s, err)
		}
		cfg.Sources = append(cfg.Sources, a)
	}
	cfg.OnOpen = func(open, failed int) {
		fmt.Fprintf(stderr, "%s open=%d failed=%d\n", ReadyPrefix, open, failed)
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return WriteTable(stdout, res)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// WriteTable prints a result as a two-column table.
func WriteTable(w io.Writer, r Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("mode", r.Mode)
	row("target", r.Target)
	row("connections requested", r.Requested)
	row("opened", r.Opened)
	row("failed", fmt.Sprintf("%d %s", r.Failed, reasons(r.FailReasons)))
	row("peak open", r.PeakOpen)
	row("open time", r.OpenTime.Round(time.Millisecond))
	row("connects/s", fmt.Sprintf("%.0f", r.ConnectRate))
	row("connect p50/p99/p999/max", durs(r.Connect))
	if r.Mode == ModeListen {
		row("messages received", r.Received)
		row("delay p50/p99/p999/max", durs(r.Latency))
	}
	if r.Mode == ModeEcho {
		row("messages sent/received", fmt.Sprintf("%d/%d", r.Sent, r.Received))
		row("messages/s", fmt.Sprintf("%.0f", r.MsgsPerSec))
		row("rtt p50/p99/p999/max", durs(r.RTT))
	}
	row("pings answered", r.PingsAnswer)
	row("closed by server/clean/forced", fmt.Sprintf("%d/%d/%d", r.ClosedByServer, r.ClosedClean, r.ClosedForced))
	row("interrupted", r.Interrupted)
	row("elapsed", r.Elapsed.Round(time.Millisecond))
	return tw.Flush()
}

func durs(s Summary) string {
	f := func(d time.Duration) string { return d.Round(time.Microsecond).String() }
	return fmt.Sprintf("%s / %s / %s / %s (n=%d)", f(s.P50), f(s.P99), f(s.P999), f(s.Max), s.Count)
}

func reasons(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return "(" + strings.Join(parts, " ") + ")"
}
