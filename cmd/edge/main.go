// Command edge runs a Switchboard edge node. With no flags it is a complete
// single-node gateway: WebSockets on :8080, an embedded NATS server on
// 127.0.0.1:4223 for backends, the @connections API on 127.0.0.1:9090 and
// health/metrics on :9091. Run `edge --help` for every option.
package main

import (
	"log/slog"
	"os"

	"github.com/switchboardgw/switchboard/internal/app"
)

func main() {
	var cfg app.EdgeConfig
	os.Exit(app.Main("edge", os.Args[1:], cfg.RegisterFlags, &cfg.Process, func(log *slog.Logger) (app.Runner, error) {
		return app.NewEdge(cfg, log)
	}))
}
