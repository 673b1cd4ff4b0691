// Command baseline is the goroutine-per-connection WebSocket echo server
// (gorilla/websocket) that benchmarks compare the edge against.
package main

import (
	"context"
	"os"

	"github.com/switchboardgw/switchboard/bench/baseline"
	"github.com/switchboardgw/switchboard/bench/internal/mainrun"
)

func main() {
	mainrun.Run(func(ctx context.Context, args []string) error { return baseline.CLI(ctx, args, os.Stderr) })
}
