// Package mainrun is the body of the benchmark tools' mains: run the command
// until SIGINT or SIGTERM, and turn its error into an exit status.
package mainrun

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Run calls cli with the process's arguments and a context cancelled by
// SIGINT or SIGTERM, then exits: 0 on success, 2 for -h (the flag package
// has printed the usage), 1 with the error on stderr otherwise.
func Run(cli func(ctx context.Context, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli(ctx, os.Args[1:])
	stop()
	if err == nil {
		return
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
