// Command swload is an epoll-based WebSocket load client for loopback
// benchmarks: it opens up to ~19,000 connections per process at a given rate
// and holds them idle, echoes messages and measures round trips, or measures
// the connect rate. Run with -h for the flags.
package main

import (
	"context"
	"os"

	"github.com/switchboardgw/switchboard/bench/internal/mainrun"
	"github.com/switchboardgw/switchboard/bench/swload"
)

func main() {
	mainrun.Run(func(ctx context.Context, args []string) error { return swload.CLI(ctx, args, os.Stdout, os.Stderr) })
}
