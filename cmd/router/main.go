// Command router runs the stateless @connections API tier of a Switchboard
// cluster: it finds each connection's owner in Redis and forwards the call
// to that edge over NATS. Run `router --help` for every option.
package main

import (
	"log/slog"
	"os"

	"github.com/switchboardgw/switchboard/internal/app"
)

func main() {
	var cfg app.RouterConfig
	os.Exit(app.Main("router", os.Args[1:], cfg.RegisterFlags, &cfg.Process, func(log *slog.Logger) (app.Runner, error) {
		return app.NewRouter(cfg, log)
	}))
}
