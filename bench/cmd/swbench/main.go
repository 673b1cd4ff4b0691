// Command swbench runs Switchboard's side-by-side benchmarks from the
// repository root, e.g. "go run ./bench/cmd/swbench idle -n 15000"; see
// docs/benchmarks.md.
package main

import (
	"context"
	"os"

	"github.com/switchboardgw/switchboard/bench/internal/mainrun"
	"github.com/switchboardgw/switchboard/bench/swbench"
)

func main() {
	mainrun.Run(func(ctx context.Context, args []string) error { return swbench.CLI(ctx, args, os.Stdout, os.Stderr) })
}
