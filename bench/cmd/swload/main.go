// Command swload is an epoll-based WebSocket load client for loopback
// benchmarks: it opens up to ~19,000 connections per process at a given rate
// and holds them idle, echoes messages and measures round trips, or measures
// the connect rate. Run with -h for the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchboardgw/switchboard/bench/swload"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := swload.CLI(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		stop()
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
