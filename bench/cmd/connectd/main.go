// Command connectd allows every connection for the benchmarks: Switchboard's
// $connect over NATS (-nats) or Centrifugo's connect proxy over HTTP
// (-http). Run with -h for the flags.
package main

import (
	"context"
	"os"

	"github.com/switchboardgw/switchboard/bench/connectd"
	"github.com/switchboardgw/switchboard/bench/internal/mainrun"
)

func main() {
	mainrun.Run(func(ctx context.Context, args []string) error { return connectd.CLI(ctx, args, os.Stderr) })
}
