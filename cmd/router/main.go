// Command router runs the stateless @connections API tier of a Switchboard
// cluster: it finds each connection's owner in Redis and forwards the call
// to that edge over NATS. Run `router --help` for every option.
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
	var cfg app.RouterConfig
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := app.Parse(fs, os.Args[1:], os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "router:", err)
		os.Exit(2)
	}
	cfg.ApplyRuntime(os.Getenv)
	log := app.NewLogger(cfg.LogFormat, cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := app.NewRouter(cfg, log)
	if err != nil {
		log.Error("router: cannot start", "err", err)
		os.Exit(1)
	}
	if err := r.Run(ctx); err != nil {
		log.Error("router: stopped with error", "err", err)
		os.Exit(1)
	}
}
