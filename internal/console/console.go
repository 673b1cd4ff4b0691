// Package console is the web console on the admin port and the node side of
// the API's cluster extension (api.ClusterInfo): every node answers status
// requests over NATS with its own counters and keeps a short history of
// them; the event tail follows lifecycle events (and, on request, route
// traffic) on NATS for a bounded number of viewers, each with a bounded
// buffer. The page is static (embedded) and only ever calls the API.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/api"
	"github.com/switchboardgw/switchboard/internal/service"
	"github.com/switchboardgw/switchboard/internal/version"
)

//go:embed static
var static embed.FS

// Config configures the console.
type Config struct {
	// Enabled serves the console at / on the admin port and the cluster
	// extension (/@nodes, /@events) on the admin and API ports.
	Enabled bool
	// MaxTails bounds the event tails open on this node at once.
	MaxTails int
	// SampleInterval is how often the node reads its own counters for the
	// charts; History samples are kept (a fixed ring).
	SampleInterval time.Duration
	History        int
}

// The defaults: 120 samples 5 s apart are the charts' 10 minutes.
const (
	DefaultMaxTails       = 4
	DefaultSampleInterval = 5 * time.Second
	DefaultHistory        = 120
)

// RegisterFlags binds the console's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.Enabled, "console", true, "serve the web console at / on the admin port (it calls the @connections API with the API's authentication)")
	fs.IntVar(&c.MaxTails, "console-max-tails", DefaultMaxTails, "event tails (GET /@events) open at once on this node; more are refused with 429")
	fs.DurationVar(&c.SampleInterval, "console-sample-interval", DefaultSampleInterval,
		"how often the node samples its own counters for the console's charts (GET /@nodes/{id}); it keeps the last 120 samples")
}

func (c Config) withDefaults() Config {
	if c.MaxTails <= 0 {
		c.MaxTails = DefaultMaxTails
	}
	if c.SampleInterval <= 0 {
		c.SampleInterval = DefaultSampleInterval
	}
	if c.History <= 0 {
		c.History = DefaultHistory
	}
	return c
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	if c.MaxTails < 0 || c.MaxTails > 64 {
		return errors.New("-console-max-tails must be 0 to 64")
	}
	if c.SampleInterval != 0 && (c.SampleInterval < 100*time.Millisecond || c.SampleInterval > 10*time.Minute) {
		return fmt.Errorf("-console-sample-interval %v: must be 100ms to 10m", c.SampleInterval)
	}
	if c.History < 0 || c.History > 10000 {
		return errors.New("console: history must be 0 to 10000 samples")
	}
	return nil
}

// Deps is what a node hands the console.
type Deps struct {
	NC       *nats.Conn
	Prefix   string // NATS subject prefix
	NodeID   string
	Role     string // "edge" or "router"
	Gatherer prometheus.Gatherer
	// Ready and Draining describe the node; LeaseAge is -1 without a lease.
	Ready, Draining func() bool
	LeaseAge        func() time.Duration
	Logger          *slog.Logger
}

// Service answers status requests, samples counters and serves tails.
type Service struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	subAll, subOne string
	tails          chan struct{} // a slot per open tail

	mu      sync.Mutex
	history []api.Sample // ring, oldest first once full
	next    int

	// The last Totals, reused for totalsFresh: viewers polling at once
	// make every node send its ring once, not once each.
	totMu sync.Mutex
	tot   api.Totals
	totAt time.Time

	gate service.Gate
}

// New builds the console service; nothing runs until Run.
func New(cfg Config, d Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.NC == nil || d.Gatherer == nil {
		return nil, errors.New("console: NATS connection and gatherer are required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Prefix == "" {
		d.Prefix = "switchboard"
	}
	cfg = cfg.withDefaults()
	return &Service{cfg: cfg, deps: d, log: d.Logger,
		subAll: d.Prefix + ".console.status", subOne: d.Prefix + ".console.status." + d.NodeID,
		tails: make(chan struct{}, cfg.MaxTails)}, nil
}

// Run answers status requests and samples counters until ctx ends or
// Shutdown is called.
func (s *Service) Run(ctx context.Context) error {
	if err := s.gate.Start("console"); err != nil {
		return err
	}
	defer s.gate.Finish()
	answer := func(m *nats.Msg) {
		st := s.status(m.Subject == s.subOne || string(m.Data) == withHistory)
		b, err := json.Marshal(st)
		if err == nil {
			_ = m.Respond(b)
		}
	}
	all, err := s.deps.NC.Subscribe(s.subAll, answer)
	if err != nil {
		return fmt.Errorf("console: subscribe: %w", err)
	}
	defer func() { _ = all.Unsubscribe() }()
	one, err := s.deps.NC.Subscribe(s.subOne, answer)
	if err != nil {
		return fmt.Errorf("console: subscribe: %w", err)
	}
	defer func() { _ = one.Unsubscribe() }()
	s.sample()
	t := time.NewTicker(s.cfg.SampleInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.gate.Stopping():
			return nil
		case <-t.C:
			s.sample()
		}
	}
}

// Shutdown stops Run and the open tails, and waits for Run (if it was
// started).
func (s *Service) Shutdown(ctx context.Context) error { return s.gate.Stop(ctx, "console") }

// The counters a sample sums, by metric name.
var (
	connectsMetrics = []string{"switchboard_connections_accepted_total"}
	messagesMetrics = []string{"switchboard_messages_received_total"}
	errorsMetrics   = []string{"switchboard_connections_rejected_total", "switchboard_events_failed_total", "switchboard_events_dropped_total"}
)

// read gathers the node's registry once: the sample and the event gauges.
func (s *Service) read() (api.Sample, int64, int64) {
	mfs, err := s.deps.Gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		s.log.Debug("console: gather failed", "err", err)
	}
	sum := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sum[mf.GetName()] += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum[mf.GetName()] += m.GetGauge().GetValue()
			}
		}
	}
	total := func(names []string) int64 {
		var v float64
		for _, n := range names {
			v += sum[n]
		}
		return int64(v)
	}
	smp := api.Sample{T: time.Now().UnixMilli(), Connections: int64(sum["switchboard_connections"]),
		Connects: total(connectsMetrics), Messages: total(messagesMetrics), Errors: total(errorsMetrics)}
	return smp, int64(sum["switchboard_events_queued"]), int64(sum["switchboard_events_dropped_total"])
}

func (s *Service) sample() {
	smp, _, _ := s.read()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.history) < s.cfg.History {
		s.history = append(s.history, smp)
		return
	}
	s.history[s.next] = smp
	s.next = (s.next + 1) % len(s.history)
}

// status is this node's answer; withHistory adds the samples, oldest first,
// and the current reading.
func (s *Service) status(withHistory bool) api.NodeStatus {
	smp, queued, dropped := s.read()
	st := api.NodeStatus{ID: s.deps.NodeID, Role: s.deps.Role, Version: version.String(), Connections: smp.Connections,
		LeaseAgeMs: -1, EventsQueued: queued, EventsDropped: dropped, Counters: smp}
	if s.deps.LeaseAge != nil {
		if d := s.deps.LeaseAge(); d >= 0 {
			st.LeaseAgeMs = d.Milliseconds()
		}
	}
	if s.deps.Ready != nil {
		st.Ready = s.deps.Ready()
	}
	if s.deps.Draining != nil {
		st.Draining = s.deps.Draining()
	}
	if withHistory {
		st.SampleIntervalMs, st.HistorySize = s.cfg.SampleInterval.Milliseconds(), s.cfg.History
		s.mu.Lock()
		st.History = make([]api.Sample, 0, len(s.history)+1)
		st.History = append(st.History, s.history[s.next:]...)
		st.History = append(st.History, s.history[:s.next]...)
		s.mu.Unlock()
		st.History = append(st.History, smp)
	}
	return st
}

// gatherWindow bounds how long Nodes waits for answers: nodes answer from
// memory, so a node slower than this is shown missing rather than holding
// the page up.
const (
	gatherWindow = 750 * time.Millisecond
	gatherQuiet  = 150 * time.Millisecond // no new answer for this long: done
	maxNodes     = 1000
)

// withHistory, as the body of a request to every node, asks each for its
// history too (GET /@stats).
const withHistory = "history"

// Nodes implements api.ClusterInfo: one NATS request to every node, the
// answers gathered on an inbox.
func (s *Service) Nodes(ctx context.Context) ([]api.NodeStatus, error) { return s.gather(ctx, nil) }

// totalsFresh is how long a Totals answer is reused.
const totalsFresh = time.Second

// Totals implements api.ClusterInfo: every node's history, summed.
func (s *Service) Totals(ctx context.Context) (api.Totals, error) {
	s.totMu.Lock()
	if !s.totAt.IsZero() && time.Since(s.totAt) < totalsFresh {
		t := s.tot
		s.totMu.Unlock()
		return t, nil
	}
	s.totMu.Unlock()
	nodes, err := s.gather(ctx, []byte(withHistory))
	if err != nil {
		return api.Totals{}, err
	}
	t := api.Totals{Nodes: len(nodes), SampleIntervalMs: s.cfg.SampleInterval.Milliseconds(), HistorySize: s.cfg.History,
		History: sumHistory(nodes, s.cfg.SampleInterval.Milliseconds(), s.cfg.History)}
	s.totMu.Lock()
	s.tot, s.totAt = t, time.Now()
	s.totMu.Unlock()
	return t, nil
}

// gather sends req to every node and collects the answers.
func (s *Service) gather(ctx context.Context, req []byte) ([]api.NodeStatus, error) {
	nc := s.deps.NC
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, maxNodes) // every answer fits: none is lost as a slow consumer
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("console: nodes: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(s.subAll, inbox, req); err != nil {
		return nil, fmt.Errorf("console: nodes: %w", err)
	}
	deadline := time.NewTimer(gatherWindow)
	defer deadline.Stop()
	var quiet <-chan time.Time
	seen := map[string]api.NodeStatus{}
	for len(seen) < maxNodes {
		select {
		case m := <-ch:
			var st api.NodeStatus
			if json.Unmarshal(m.Data, &st) == nil && st.ID != "" {
				seen[st.ID] = st
			}
			quiet = time.After(gatherQuiet)
		case <-quiet:
			return sortNodes(seen), nil
		case <-deadline.C:
			return sortNodes(seen), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return sortNodes(seen), nil
}

func sortNodes(m map[string]api.NodeStatus) []api.NodeStatus {
	out := make([]api.NodeStatus, 0, len(m))
	for _, st := range m {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Role != out[j].Role {
			return out[i].Role < out[j].Role // edges before routers
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Node implements api.ClusterInfo.
func (s *Service) Node(ctx context.Context, id string) (api.NodeStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := s.deps.NC.RequestWithContext(ctx, s.deps.Prefix+".console.status."+id, nil)
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) {
		return api.NodeStatus{}, api.ErrNoSuchNode
	}
	if err != nil {
		return api.NodeStatus{}, fmt.Errorf("console: node %s: %w", id, err)
	}
	var st api.NodeStatus
	if err := json.Unmarshal(m.Data, &st); err != nil {
		return api.NodeStatus{}, fmt.Errorf("console: node %s: %w", id, err)
	}
	return st, nil
}

// Handler serves the console's static files; every other path goes to
// apiHandler (the node's @connections API, with its authentication). The
// page itself holds no data: without a token it shows only the login.
func Handler(apiHandler http.Handler) http.Handler {
	sub, _ := fs.Sub(static, "static") // cannot fail: the directory is embedded
	files := http.FileServer(http.FS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "@") || strings.Contains(r.URL.RawPath, "%40") {
			sameOrigin(r)
			apiHandler.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// sameOrigin removes the Origin header of the console's own requests: a
// browser sends Origin on a same-origin POST or DELETE, and the API refuses
// any Origin it was not told about. Only an Origin naming exactly this
// request's Host (http or https) counts as the console's.
func sameOrigin(r *http.Request) {
	o := r.Header.Values("Origin")
	if len(o) != 1 {
		return
	}
	if strings.EqualFold(o[0], "http://"+r.Host) || strings.EqualFold(o[0], "https://"+r.Host) {
		r.Header.Del("Origin")
	}
}
