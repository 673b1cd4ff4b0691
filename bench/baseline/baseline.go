// Package baseline is the goroutine-per-connection WebSocket echo server that
// Switchboard's edge is measured against: gorilla/websocket, one handler
// goroutine per connection blocked in a read, library defaults otherwise.
// It is built only for benchmarks, and it exposes the same Go and process
// metrics as the edge so both are measured the same way. With a ConnectURL
// it asks a backend before each upgrade, as a team writing its own gorilla
// server with an authorisation call would, so that its connect rate can be
// set against gateways that ask one too.
package baseline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/switchboardgw/switchboard/bench/internal/defaults"
)

// ErrConfig is wrapped by every Validate error.
var ErrConfig = errors.New("baseline: invalid config")

// Config configures the server. The zero value of every field means its default.
type Config struct {
	// Listen is the WebSocket address. Default "127.0.0.1:8090".
	Listen string
	// Admin is the address of /metrics, /healthz and /readyz. Default "127.0.0.1:8091".
	Admin string
	// ReadBufferSize and WriteBufferSize are gorilla's per-connection I/O
	// buffers. Default 4096 each (gorilla's own default).
	ReadBufferSize, WriteBufferSize int
	// MaxMessageSize closes a connection sending a bigger message. Default 128 KiB.
	MaxMessageSize int64
	// Pprof serves /debug/pprof on the admin address, as the edge's -pprof
	// does (the benchmark driver forces a GC through it). Default false.
	Pprof bool
	// ConnectURL, when set, is an http(s) URL POSTed to before each upgrade,
	// with the request Centrifugo's connect proxy makes; the upgrade goes on
	// only if the answer holds a result. A refusal (an error, a disconnect,
	// no result) is answered 403, a backend that cannot be reached, times
	// out or answers no connect reply 502. Default "": no backend.
	ConnectURL string
}

func (c Config) withDefaults() Config {
	defaults.Set(&c.Listen, "127.0.0.1:8090")
	defaults.Set(&c.Admin, "127.0.0.1:8091")
	defaults.Set(&c.ReadBufferSize, 4096)
	defaults.Set(&c.WriteBufferSize, 4096)
	defaults.Set(&c.MaxMessageSize, 128<<10)
	return c
}

// Validate reports whether the config (after defaults) is usable.
func (c Config) Validate() error {
	d := c.withDefaults()
	if d.ReadBufferSize < 0 || d.WriteBufferSize < 0 || d.MaxMessageSize < 0 {
		return fmt.Errorf("%w: negative size", ErrConfig)
	}
	for _, a := range []string{d.Listen, d.Admin} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("%w: address %q: %v", ErrConfig, a, err)
		}
	}
	if d.ConnectURL != "" {
		u, err := url.Parse(d.ConnectURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: connect URL %q: want an http(s) URL", ErrConfig, d.ConnectURL)
		}
	}
	return nil
}

// Deps are the server's collaborators.
type Deps struct {
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registry receives the server's metrics and is served on /metrics.
	// Default: a new registry.
	Registry *prometheus.Registry
}

// Server is the baseline echo server.
type Server struct {
	cfg      Config
	log      *slog.Logger
	ln, adm  net.Listener
	ws, http *http.Server
	up       websocket.Upgrader
	auth     *authorizer // nil without a ConnectURL

	mu       sync.Mutex
	conns    map[*websocket.Conn]struct{}
	closed   bool
	handlers sync.WaitGroup

	open     prometheus.Gauge
	accepted prometheus.Counter
	messages prometheus.Counter

	shutdownOnce sync.Once
	shutdownErr  error
}

// New listens on both addresses, so Addr and AdminAddr are known at once.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	f := promauto.With(deps.Registry)
	s := &Server{
		cfg:   cfg,
		log:   deps.Logger,
		conns: map[*websocket.Conn]struct{}{},
		up: websocket.Upgrader{
			ReadBufferSize:  cfg.ReadBufferSize,
			WriteBufferSize: cfg.WriteBufferSize,
			CheckOrigin:     func(*http.Request) bool { return true },
		},
		open: f.NewGauge(prometheus.GaugeOpts{Name: "baseline_connections_open",
			Help: "WebSocket connections currently open."}),
		accepted: f.NewCounter(prometheus.CounterOpts{Name: "baseline_connections_accepted_total",
			Help: "WebSocket upgrades completed."}),
		messages: f.NewCounter(prometheus.CounterOpts{Name: "baseline_messages_total",
			Help: "Messages echoed."}),
	}
	if cfg.ConnectURL != "" {
		s.auth = newAuthorizer(cfg.ConnectURL)
	}
	var err error
	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("baseline: listen %s: %w", cfg.Listen, err)
	}
	if s.adm, err = net.Listen("tcp", cfg.Admin); err != nil {
		s.ln.Close()
		return nil, fmt.Errorf("baseline: listen admin %s: %w", cfg.Admin, err)
	}
	s.ws = &http.Server{Handler: http.HandlerFunc(s.serveWS), ReadHeaderTimeout: 10 * time.Second}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(deps.Registry, promhttp.HandlerOpts{}))
	ok := func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") }
	mux.HandleFunc("/healthz", ok)
	mux.HandleFunc("/readyz", ok)
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
	}
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Addr is the WebSocket listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// AdminAddr is the admin listener's address.
func (s *Server) AdminAddr() net.Addr { return s.adm.Addr() }

// Run serves until ctx is done or Shutdown is called, then shuts down.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { errc <- s.ws.Serve(s.ln) })
	wg.Go(func() { errc <- s.http.Serve(s.adm) })
	s.log.Info("baseline listening", "ws", s.Addr().String(), "admin", s.AdminAddr().String())
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	serr := s.Shutdown(sctx)
	wg.Wait()
	return errors.Join(err, serr)
}

// Shutdown stops accepting, closes every connection with 1001 and waits for
// the handlers. Safe to call twice.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		conns := make([]*websocket.Conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		// Hijacked connections are not closed by http.Server.Shutdown.
		errWS := s.ws.Shutdown(ctx)
		msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down")
		for _, c := range conns {
			_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			_ = c.Close()
		}
		done := make(chan struct{})
		go func() { s.handlers.Wait(); close(done) }()
		var errWait error
		select {
		case <-done:
		case <-ctx.Done():
			errWait = fmt.Errorf("baseline: waiting for handlers: %w", ctx.Err())
		}
		if s.auth != nil {
			s.auth.close()
		}
		s.shutdownErr = errors.Join(errWS, s.http.Shutdown(ctx), errWait)
	})
	return s.shutdownErr
}

// serveWS is the whole per-connection cost being measured: the connect
// call, if any, then the goroutine net/http started for the request stays
// blocked in NextReader.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	s.handlers.Add(1)
	s.mu.Unlock()
	defer s.handlers.Done()

	// A request that is no upgrade costs the backend nothing: Upgrade
	// refuses it below.
	if s.auth != nil && websocket.IsWebSocketUpgrade(r) {
		if err := s.auth.allow(r.Context()); err != nil {
			s.log.Debug("baseline: connection refused", "err", err)
			if errors.Is(err, errDenied) {
				http.Error(w, "forbidden", http.StatusForbidden)
			} else {
				http.Error(w, "connect backend unavailable", http.StatusBadGateway)
			}
			return
		}
	}
	c, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has replied with an HTTP error
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.open.Inc()
	s.accepted.Inc()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.open.Dec()
		c.Close()
	}()
	c.SetReadLimit(s.cfg.MaxMessageSize)
	for {
		mt, rd, err := c.NextReader()
		if err != nil {
			return // includes the close handshake, answered by gorilla
		}
		wr, err := c.NextWriter(mt)
		if err != nil {
			return
		}
		if _, err := io.Copy(wr, rd); err != nil {
			return
		}
		if err := wr.Close(); err != nil {
			return
		}
		s.messages.Inc()
	}
}
