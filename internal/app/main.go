package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchboardgw/switchboard/internal/version"
)

// Runner is a built process: it serves until ctx ends, then shuts down.
type Runner interface {
	Run(ctx context.Context) error
}

// Main is the body of a binary: flags and SWITCHBOARD_* variables into the
// config (register binds them), runtime settings, the logger, then build and
// run until SIGINT or SIGTERM. It returns the process exit code.
func Main(name string, args []string, register func(*flag.FlagSet), proc *Process, build func(*slog.Logger) (Runner, error)) int {
	// -version is not a configuration flag (no environment variable, not
	// in the flag tables): it answers and exits before anything is parsed.
	for _, a := range args {
		if a == "-version" || a == "--version" {
			fmt.Println(name, version.String())
			return 0
		}
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	register(fs)
	if err := Parse(fs, args, os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	proc.ApplyRuntime(os.Getenv)
	log := NewLogger(proc.LogFormat, proc.LogLevel)
	routeLibraryLogs(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := build(log)
	if err != nil {
		log.Error(name+": cannot start", "err", err)
		return 1
	}
	if err := r.Run(ctx); err != nil {
		log.Error(name+": stopped with error", "err", err)
		return 1
	}
	return 0
}
