package app

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/console"
)

// consoleDeps is what a node hands the web console.
type consoleDeps struct {
	nc              *nats.Conn
	prefix, nodeID  string
	role            string
	gatherer        prometheus.Gatherer
	ready, draining func() bool
	leaseAge        func() time.Duration
	api             *apiServer // nil: no API, so no console
	admin           *admin
	log             *slog.Logger
}

// newConsole builds the console service, turns on the API's cluster
// extension and mounts the page on the admin port, whose API calls go to
// the node's own API handler (same authentication). Nil when the console
// is off or there is no API to call.
func newConsole(cfg console.Config, d consoleDeps) (*console.Service, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	if d.api == nil {
		d.log.Info("web console off: it needs the @connections API (-api-listen)")
		return nil, nil
	}
	svc, err := console.New(cfg, console.Deps{NC: d.nc, Prefix: d.prefix, NodeID: d.nodeID, Role: d.role, Gatherer: d.gatherer,
		Ready: d.ready, Draining: d.draining, LeaseAge: d.leaseAge, Logger: d.log})
	if err != nil {
		return nil, err
	}
	d.api.api.EnableCluster(svc)
	d.admin.mount(console.Handler(d.api.api.Handler()))
	return svc, nil
}

// mount serves h for every admin path without a handler of its own.
func (a *admin) mount(h http.Handler) { a.mux.Handle("/", h) }
