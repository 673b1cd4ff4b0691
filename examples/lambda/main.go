// Command lambda runs an API Gateway WebSocket Lambda handler, written
// against aws-lambda-go's event types and the AWS SDK, unchanged on
// Switchboard through pkg/lambdaadapter: the handler (handler.go) is
// invoked for $connect, $disconnect and every route, as on AWS.
//
//	go run ./cmd/edge          # the gateway
//	go run ./examples/lambda   # this handler
//
// Clients connect to ws://127.0.0.1:8080/ and send
// {"action":"sendmessage","data":"hello"}. See docs/examples.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/pkg/lambdaadapter"
)

// defaultEndpoint is the @connections API of `go run ./cmd/edge`; "/prod"
// plays the stage the AWS SDK is given on AWS (Switchboard ignores it).
const defaultEndpoint = "http://127.0.0.1:9090/prod"

func main() {
	var cfg Config
	fs := flag.NewFlagSet("lambda", flag.ExitOnError)
	fs.StringVar(&cfg.NATSURL, "nats-url", envOr("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4223"), "gateway NATS URL (env SWITCHBOARD_NATS_URL)")
	fs.StringVar(&cfg.Prefix, "prefix", envOr("SWITCHBOARD_PREFIX", "switchboard"), "gateway NATS subject prefix (env SWITCHBOARD_PREFIX)")
	_ = fs.Parse(os.Args[1:])
	// The handler reads APIGW_ENDPOINT as a Lambda reads its configuration.
	if os.Getenv("APIGW_ENDPOINT") == "" {
		_ = os.Setenv("APIGW_ENDPOINT", defaultEndpoint)
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "lambda:", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Config configures the runner. The zero value is valid.
type Config struct {
	// NATSURL is the gateway's NATS server. Default "nats://127.0.0.1:4223"
	// (the edge's embedded server).
	NATSURL string
	// Prefix is the gateway's NATS subject prefix. Default "switchboard".
	Prefix string
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.NATSURL != "" {
		for _, s := range strings.Split(c.NATSURL, ",") {
			if u, err := url.Parse(strings.TrimSpace(s)); err != nil || u.Host == "" {
				errs = append(errs, fmt.Errorf("nats url %q: want nats://host:port", s))
			}
		}
	}
	if strings.ContainsAny(c.Prefix, "*> \t") || strings.HasPrefix(c.Prefix, ".") || strings.HasSuffix(c.Prefix, ".") {
		errs = append(errs, fmt.Errorf("prefix %q: dot-separated NATS subject tokens without wildcards", c.Prefix))
	}
	return errors.Join(errs...)
}

// runner runs handler through the Lambda adapter. Build it with newRunner,
// then Run it once.
type runner struct {
	cfg   Config
	log   *slog.Logger
	nc    *nats.Conn
	a     *lambdaadapter.Adapter
	ready chan struct{}
}

func newRunner(cfg Config, log *slog.Logger) (_ *runner, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.NATSURL == "" {
		cfg.NATSURL = "nats://127.0.0.1:4223"
	}
	r := &runner{cfg: cfg, log: log, ready: make(chan struct{})}
	r.nc, err = nats.Connect(cfg.NATSURL, nats.Name("switchboard-example-lambda"),
		nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("nats %s: %w", cfg.NATSURL, err)
	}
	if r.a, err = lambdaadapter.New(r.nc, handler, lambdaadapter.Options{Prefix: cfg.Prefix, Logger: log}); err != nil {
		r.nc.Close()
		return nil, err
	}
	return r, nil
}

// Ready is closed once the handler is subscribed.
func (r *runner) Ready() <-chan struct{} { return r.ready }

// Run serves until ctx ends, then lets running invocations finish and
// closes the NATS connection.
func (r *runner) Run(ctx context.Context) error {
	defer r.nc.Close()
	if err := r.a.Start(ctx); err != nil {
		return fmt.Errorf("lambda adapter: %w", err)
	}
	close(r.ready)
	r.log.Info("lambda: handler ready", "nats", r.cfg.NATSURL, "apigw_endpoint", os.Getenv("APIGW_ENDPOINT"))
	<-ctx.Done()
	if err := r.a.Drain(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// run serves the handler until ctx ends.
func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	r, err := newRunner(cfg, log)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}
