package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/switchboardgw/switchboard/internal/api"
	"github.com/switchboardgw/switchboard/internal/cluster"
	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/groups"
	"github.com/switchboardgw/switchboard/internal/tlsreload"
)

// newRedisClient builds a go-redis UniversalClient: standalone from a URL,
// Cluster from several seed addresses, Sentinel with a master name.
func newRedisClient(r Redis) (redis.UniversalClient, error) {
	if r.URL != "" {
		opts, err := redis.ParseURL(r.URL)
		if err != nil {
			return nil, fmt.Errorf("redis url: %w", err)
		}
		return redis.NewClient(opts), nil
	}
	if len(r.Addrs) == 0 {
		return nil, errors.New("no redis configured")
	}
	opts := &redis.UniversalOptions{Addrs: r.Addrs, MasterName: r.MasterName, Username: r.Username, Password: r.Password}
	if r.TLS {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if r.MasterName == "" {
		// Several seeds or one: either way a cluster client when no master
		// name is given (UniversalClient would pick a plain client for one).
		return redis.NewClusterClient(opts.Cluster()), nil
	}
	return redis.NewUniversalClient(opts), nil
}

// apiConfig turns the flags into the API's config. Without auth the API is
// bound to loopback (unless -api-insecure says otherwise).
func (a API) apiConfig() (api.Config, error) {
	cfg := api.Config{
		MaxMessageBytes:   a.APIMaxBody,
		OctetStreamBinary: a.APIOctetBin,
		Insecure:          a.APIInsecure,
		Auth:              api.AuthConfig{Tokens: a.APITokens, TokenFile: a.APITokensFile, Hosts: a.APISigV4Hosts},
		AllowedOrigins:    a.APIAllowedOrigins,
	}
	if len(a.APIAccessKeys) > 0 {
		cfg.Auth.AccessKeys = map[string]string{}
		for _, kv := range a.APIAccessKeys {
			id, secret, ok := strings.Cut(kv, ":")
			if !ok || id == "" || secret == "" {
				return cfg, fmt.Errorf("api access key %q: want ACCESS_KEY_ID:SECRET", redact(kv))
			}
			cfg.Auth.AccessKeys[id] = secret
		}
	}
	if !cfg.Insecure && len(cfg.Auth.Tokens) == 0 && cfg.Auth.TokenFile == "" && len(cfg.Auth.AccessKeys) == 0 {
		cfg.LoopbackOnly = true
	}
	return cfg, nil
}

func redact(kv string) string {
	id, _, _ := strings.Cut(kv, ":")
	return id + ":…"
}

// apiServer is the @connections API on its own listener.
type apiServer struct {
	api *api.API
	srv *http.Server
	ln  net.Listener
	tls bool
}

// enableTLS serves the API over TLS with a certificate reloaded when its
// files change (-tls-cert, -tls-key).
func (s *apiServer) enableTLS(p Process, log *slog.Logger) error {
	if p.TLSCert == "" {
		return nil
	}
	rl, err := tlsreload.New(tlsreload.Config{CertFile: p.TLSCert, KeyFile: p.TLSKey}, log)
	if err != nil {
		return fmt.Errorf("api tls: %w", err)
	}
	s.srv.TLSConfig = rl.TLSConfig()
	s.tls = true
	return nil
}

func newAPIServer(a API, ctrl conn.Controller, g api.GroupsController, registry cluster.Registry, reg prometheus.Registerer, log *slog.Logger) (*apiServer, error) {
	cfg, err := a.apiConfig()
	if err != nil {
		return nil, err
	}
	h, err := api.New(cfg, ctrl, reg, log)
	if err != nil {
		return nil, err // already says "api: "
	}
	if g != nil {
		h.EnableGroups(g)
	}
	h.EnableListing(registryLister{registry})
	addr := a.APIListen
	rebound := cfg.RequiresLoopback() && !isLoopbackAddr(addr)
	if rebound {
		addr = loopbackAddr(addr)
	}
	ln, err := listenFlag("api-listen", addr, "")
	if err != nil {
		return nil, err
	}
	if rebound {
		log.Warn(fmt.Sprintf("-api-listen %s: the @connections API has no authentication configured, so it is bound to %s (loopback only) instead; "+
			"to serve other hosts set -api-tokens, -api-tokens-file or -api-access-keys (or -api-insecure behind your own auth)", a.APIListen, ln.Addr()))
	}
	return &apiServer{api: h, ln: ln, srv: &http.Server{Handler: h.Handler(), ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}}, nil
}

// loopbackAddr keeps addr's port but binds it to 127.0.0.1.
func loopbackAddr(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}

func (s *apiServer) run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.api.Run(ctx) }()
	var err error
	if s.tls {
		err = s.srv.ServeTLS(s.ln, "", "")
	} else {
		err = s.srv.Serve(s.ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, <-errc)
}

func (s *apiServer) shutdown(ctx context.Context) error {
	return errors.Join(s.srv.Shutdown(ctx), s.api.Shutdown(ctx))
}

func (s *apiServer) addr() string { return s.ln.Addr().String() }

// isLoopbackAddr: addr's host is a loopback IP or localhost.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// displayAddr shows a listener's address as bound, saying so when that is
// every interface: printing 127.0.0.1 for it would hide that other hosts
// can connect.
func displayAddr(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return addr + " (every interface)"
	}
	return addr
}

// newGroupStore is the cluster-wide membership store: Redis when the
// registry is in Redis, else memory.
func newGroupStore(rdb redis.UniversalClient, keyPrefix string) (groups.Store, error) {
	if rdb == nil {
		return groups.NewMemoryStore(), nil
	}
	return groups.NewRedisStore(groups.RedisStoreConfig{KeyPrefix: keyPrefix}, rdb)
}

// registryLister answers the API's listing extension from the registry's
// per-node sets and counters.
type registryLister struct{ r cluster.Registry }

func (l registryLister) Count(ctx context.Context, node string) (int64, error) {
	if node == "" {
		return l.r.CountAll(ctx)
	}
	return l.r.CountNode(ctx, node)
}

func (l registryLister) Nodes(ctx context.Context) ([]string, error) { return l.r.Nodes(ctx) }

func (l registryLister) List(ctx context.Context, node, cursor string, limit int) ([]conn.Info, string, error) {
	recs, next, err := l.r.NodeConns(ctx, node, cursor, limit)
	if err != nil {
		return nil, "", err
	}
	out := make([]conn.Info, len(recs))
	for i, r := range recs {
		out[i] = conn.Info{ID: r.ID, Node: r.Node, ConnectedAt: r.ConnectedAt, SourceIP: r.SourceIP, UserAgent: r.UserAgent, UserID: r.UserID}
	}
	return out, next, nil
}

// natsConnectedGauge reports whether the process's NATS connection is up:
// while it is 0, events are dropped (counted) and remote commands fail fast.
// It follows the connection's status events rather than asking
// nc.IsConnected at scrape time: that takes the connection's lock, which
// nats.go holds while a write to a frozen server is stuck, and /metrics
// would hang with it.
func natsConnectedGauge(reg prometheus.Registerer, nc *nats.Conn) error {
	var up atomic.Bool
	ch := nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
	up.Store(nc.IsConnected()) // after registering: a later change is applied after this
	go func() {                // ends when the connection is closed
		for s := range ch {
			up.Store(s == nats.CONNECTED)
			if s == nats.CLOSED {
				return
			}
		}
	}()
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchboard_nats_connected",
		Help: "1 while this process is connected to NATS, 0 while it is reconnecting.",
	}, func() float64 {
		if up.Load() {
			return 1
		}
		return 0
	}))
}
