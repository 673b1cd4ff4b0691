package baseline

import (
	"context"
	"flag"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// CLI runs the baseline server's command line until ctx is done. Its
// registry holds the standard Go and process collectors, as the edge's does.
func CLI(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8090", "WebSocket listen address")
	fs.StringVar(&cfg.Admin, "admin", "127.0.0.1:8091", "admin address: /metrics, /healthz, /readyz")
	fs.IntVar(&cfg.ReadBufferSize, "read-buffer", 4096, "gorilla read buffer per connection, bytes")
	fs.IntVar(&cfg.WriteBufferSize, "write-buffer", 4096, "gorilla write buffer per connection, bytes")
	fs.Int64Var(&cfg.MaxMessageSize, "max-message", 128<<10, "largest message accepted, bytes")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof on the admin address")
	fs.StringVar(&cfg.ConnectURL, "connect-url", "", "POST a connect request (Centrifugo's connect proxy's) to this http(s) URL before each upgrade; refuse with 403 unless it allows, 502 if it cannot be asked")
	if err := fs.Parse(args); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	log := slog.New(slog.NewTextHandler(stderr, nil))
	s, err := New(cfg, Deps{Logger: log, Registry: reg})
	if err != nil {
		return err
	}
	return s.Run(ctx)
}
