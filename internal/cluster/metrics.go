package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// Metrics are the package's Prometheus metrics. Create them once per
// registerer with NewMetrics and hand the same value to every part of the
// package (Node, Janitor, Router, CommandServer, Instrument).
type Metrics struct {
	registryDuration *prometheus.HistogramVec
	registryErrors   *prometheus.CounterVec
	batchSize        prometheus.Histogram
	pending          prometheus.Gauge

	cacheHits    prometheus.Counter
	cacheMisses  prometheus.Counter
	routeSeconds *prometheus.HistogramVec
	routed       *prometheus.CounterVec
	served       *prometheus.CounterVec

	renewals     *prometheus.CounterVec
	leaseHeld    prometheus.Gauge
	leaseInDoubt prometheus.GaugeFunc
	inDoubt      atomic.Pointer[func() bool] // the node's fence, asked at scrape time
	revocations  prometheus.Counter

	cleanups     prometheus.Counter
	orphans      prometheus.Counter
	cleanupFails prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg; nil reg leaves
// them unregistered (tests, or metrics not wanted).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		registryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchboard_registry_operation_duration_seconds",
			Help:    "Latency of ownership registry operations, by operation.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"op"}),
		registryErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_registry_errors_total",
			Help: "Ownership registry operations that failed, by operation.",
		}, []string{"op"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchboard_registry_batch_size",
			Help:    "Registrations and removals written per pipelined round trip.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7),
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_registry_pending_writes",
			Help: "Registrations and removals accepted during a registry outage and not yet written.",
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_router_owner_cache_hits_total",
			Help: "Owner lookups answered from the cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_router_owner_cache_misses_total",
			Help: "Owner lookups that went to the registry.",
		}),
		routeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "switchboard_router_route_duration_seconds",
			Help:    "Time to carry a command to the owning node and get its answer, by command and path (local or remote).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0015, .0025, .005, .01, .025, .1, .5, 2},
		}, []string{"command", "path"}),
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_router_commands_total",
			Help: "Commands routed, by command and result.",
		}, []string{"command", "result"}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_router_commands_served_total",
			Help: "Commands received from other nodes and executed here, by command and result.",
		}, []string{"command", "result"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_lease_renewals_total",
			Help: "Lease renewals, by outcome: held, lost, revoked, cleaning, previous, superseded, error.",
		}, []string{"outcome"}),
		leaseHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_lease_held",
			Help: "1 while this node holds its lease and serves; 0 while fenced.",
		}),
		revocations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_lease_revocations_total",
			Help: "Times this node found it was declared dead (or superseded by a later process with its node ID) and dropped its connections without DISCONNECT.",
		}),
		cleanups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_cleanup_dead_nodes_total",
			Help: "Dead nodes cleaned up by this node.",
		}),
		orphans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_cleanup_orphaned_connections_total",
			Help: "Connections of dead nodes that this node announced as disconnected.",
		}),
		cleanupFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_cleanup_errors_total",
			Help: "Dead-node cleanups that failed and will be retried.",
		}),
	}
	// Computed from the clock when scraped, like the fence itself: no timer
	// needs to have fired for it to show a lease in doubt.
	m.leaseInDoubt = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchboard_lease_in_doubt",
		Help: "1 while the lease may have expired (no successful renewal for lease TTL − fence margin): events are held and the node serves no API call for its connections.",
	}, func() float64 {
		if f := m.inDoubt.Load(); f != nil && (*f)() {
			return 1
		}
		return 0
	})
	if reg != nil {
		for _, c := range m.collectors() {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("cluster: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.registryDuration, m.registryErrors, m.batchSize, m.pending,
		m.cacheHits, m.cacheMisses, m.routeSeconds, m.routed, m.served,
		m.renewals, m.leaseHeld, m.leaseInDoubt, m.revocations, m.cleanups, m.orphans, m.cleanupFails,
	}
}

// orNop returns m, or unregistered metrics when m is nil.
func (m *Metrics) orNop() *Metrics {
	if m != nil {
		return m
	}
	nop, _ := NewMetrics(nil)
	return nop
}

// resultLabel maps a command error to a bounded label value.
func resultLabel(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, conn.ErrGone):
		return "gone"
	case errors.Is(err, conn.ErrBufferFull):
		return "buffer_full"
	case errors.Is(err, conn.ErrTooLarge):
		return "too_large"
	case errors.Is(err, conn.ErrInvalidID):
		return "invalid_id"
	case errors.Is(err, conn.ErrInvalidCloseCode):
		return "invalid_close_code"
	case errors.Is(err, conn.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, conn.ErrInvalidState):
		return "invalid_state"
	}
	return "error"
}

// Instrument wraps a Registry so that every operation is timed and its
// failures counted. ErrGone and ErrInvalidID are answers, not failures.
func Instrument(r Registry, m *Metrics) Registry {
	return &instrumented{r: r, m: m.orNop()}
}

type instrumented struct {
	r Registry
	m *Metrics
}

func (i *instrumented) observe(op string, start time.Time, err error) {
	i.m.registryDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, conn.ErrGone) && !errors.Is(err, conn.ErrInvalidID) {
		i.m.registryErrors.WithLabelValues(op).Inc()
	}
}

var _ Registry = (*instrumented)(nil)

func (i *instrumented) Register(ctx context.Context, recs ...ConnRecord) error {
	start := time.Now()
	err := i.r.Register(ctx, recs...)
	i.observe("register", start, err)
	return err
}

func (i *instrumented) Unregister(ctx context.Context, node string, ids ...string) error {
	start := time.Now()
	err := i.r.Unregister(ctx, node, ids...)
	i.observe("unregister", start, err)
	return err
}

func (i *instrumented) Lookup(ctx context.Context, id string) (ConnRecord, error) {
	start := time.Now()
	v, err := i.r.Lookup(ctx, id)
	i.observe("lookup", start, err)
	return v, err
}

func (i *instrumented) RenewLease(ctx context.Context, node string, inc Incarnation, ttl time.Duration) (LeaseState, error) {
	start := time.Now()
	v, err := i.r.RenewLease(ctx, node, inc, ttl)
	i.observe("renew_lease", start, err)
	return v, err
}

func (i *instrumented) NodeAlive(ctx context.Context, node string) (bool, error) {
	start := time.Now()
	v, err := i.r.NodeAlive(ctx, node)
	i.observe("node_alive", start, err)
	return v, err
}

func (i *instrumented) ReleaseLease(ctx context.Context, node string) error {
	start := time.Now()
	err := i.r.ReleaseLease(ctx, node)
	i.observe("release_lease", start, err)
	return err
}

func (i *instrumented) ExpiredNodes(ctx context.Context) ([]string, error) {
	start := time.Now()
	v, err := i.r.ExpiredNodes(ctx)
	i.observe("expired_nodes", start, err)
	return v, err
}

func (i *instrumented) AcquireCleanup(ctx context.Context, node, holder string, ttl time.Duration) (bool, error) {
	start := time.Now()
	v, err := i.r.AcquireCleanup(ctx, node, holder, ttl)
	i.observe("acquire_cleanup", start, err)
	return v, err
}

func (i *instrumented) ReleaseCleanup(ctx context.Context, node, holder string) error {
	start := time.Now()
	err := i.r.ReleaseCleanup(ctx, node, holder)
	i.observe("release_cleanup", start, err)
	return err
}

func (i *instrumented) RemoveNode(ctx context.Context, node string) (bool, error) {
	start := time.Now()
	v, err := i.r.RemoveNode(ctx, node)
	i.observe("remove_node", start, err)
	return v, err
}

func (i *instrumented) NodeConns(ctx context.Context, node, cursor string, limit int) ([]ConnRecord, string, error) {
	start := time.Now()
	v, next, err := i.r.NodeConns(ctx, node, cursor, limit)
	i.observe("node_conns", start, err)
	return v, next, err
}

func (i *instrumented) CountNode(ctx context.Context, node string) (int64, error) {
	start := time.Now()
	v, err := i.r.CountNode(ctx, node)
	i.observe("count_node", start, err)
	return v, err
}

func (i *instrumented) CountAll(ctx context.Context) (int64, error) {
	start := time.Now()
	v, err := i.r.CountAll(ctx)
	i.observe("count_all", start, err)
	return v, err
}

func (i *instrumented) Nodes(ctx context.Context) ([]string, error) {
	start := time.Now()
	v, err := i.r.Nodes(ctx)
	i.observe("nodes", start, err)
	return v, err
}
