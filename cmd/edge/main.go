// Command edge runs a Switchboard edge node. With no flags it is a complete
// single-node gateway: WebSockets on :8080, an embedded NATS server on
// 127.0.0.1:4223 for backends, the @connections API on 127.0.0.1:9090 and
// health/metrics on :9091. Run `edge --help` for every option.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchboardgw/switchboard/internal/app"
)

func main() {
	var cfg app.EdgeConfig
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := app.Parse(fs, os.Args[1:], os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "edge:", err)
		os.Exit(2)
	}
	cfg.ApplyRuntime(os.Getenv)
	log := app.NewLogger(cfg.LogFormat, cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	node, err := app.NewEdge(cfg, log)
	if err != nil {
		log.Error("edge: cannot start", "err", err)
		os.Exit(1)
	}
	if err := node.Run(ctx); err != nil {
		log.Error("edge: stopped with error", "err", err)
		os.Exit(1)
	}
}
