// Package app builds an edge node or a router from configuration and runs it:
// the thin mains in cmd/ only parse flags and call Run.
package app

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/switchboardgw/switchboard/internal/edge"
)

// EdgeConfig is everything an edge node is configured with. Every field is a
// flag and a SWITCHBOARD_* environment variable (see RegisterFlags).
type EdgeConfig struct {
	Edge edge.Config

	NodeID      string
	APIListen   string
	AdminListen string
	Pprof       bool
	LogFormat   string
	LogLevel    string

	// NATS: an external server, or an embedded one when NATSURL is empty.
	NATSURL          string
	NATSEmbedListen  string
	NATSEmbedJSDir   string
	NATSCredsFile    string
	NATSUser         string
	NATSPassword     string
	NATSToken        string
	Prefix           string
	ConnectMode      string
	ConnectTimeout   time.Duration
	RouteExpression  string
	TwoWayRoutes     []string
	RouteTimeout     time.Duration
	JetStream        bool
	JetStreamStream  string
	Stage            string
	DomainName       string
	EventQueueLength int

	// Redis: the ownership registry; memory when RedisURL is empty.
	RedisURL        string
	RedisCluster    []string
	RedisKeyPrefix  string
	LeaseTTL        time.Duration
	RegistryFailure string

	// @connections API.
	APITokens     []string
	APITokensFile string
	APIInsecure   bool
	APIMaxBody    int

	// Drain: how long /readyz reports not-ready before connections close,
	// so load balancers stop sending new clients first.
	DrainDelay   time.Duration
	DrainTimeout time.Duration
}

// RegisterFlags binds every field to a flag with its default.
func (c *EdgeConfig) RegisterFlags(fs *flag.FlagSet) {
	e := &c.Edge
	fs.StringVar(&e.Listen, "listen", ":8080", "WebSocket listen address")
	fs.StringVar(&e.Path, "path", "", "URL path clients connect to (empty: any path)")
	fs.IntVar(&e.MaxMessageBytes, "max-message-bytes", 128<<10, "largest client message after reassembly (close 1009 above)")
	fs.IntVar(&e.MaxFrameBytes, "max-frame-bytes", 32<<10, "largest client frame payload (close 1009 above)")
	fs.IntVar(&e.MaxHeaderBytes, "max-header-bytes", 8<<10, "largest upgrade request (HTTP 431 above)")
	durVar(fs, &e.HandshakeTimeout, "handshake-timeout", 10*time.Second, "time allowed for the upgrade request and $connect")
	fs.IntVar(&e.MaxHandshakes, "max-handshakes", 4096, "handshakes in progress at once (HTTP 503 above)")
	durVar(fs, &e.IdleTimeout, "idle-timeout", 10*time.Minute, "close connections silent this long (1001); negative disables")
	durVar(fs, &e.MaxDuration, "max-duration", 2*time.Hour, "close connections open this long (1001); negative disables")
	durVar(fs, &e.PingInterval, "ping-interval", 0, "send a protocol ping after this much silence (0: off)")
	durVar(fs, &e.PingTimeout, "ping-timeout", 30*time.Second, "close a connection whose ping goes unanswered this long")
	durVar(fs, &e.FrameTimeout, "frame-timeout", 30*time.Second, "close a connection whose partial frame stays unfinished this long (1008)")
	durVar(fs, &e.WriteTimeout, "write-timeout", 10*time.Second, "give up on a client that does not read for this long")
	fs.IntVar(&e.MaxQueueBytes, "max-queue-bytes", 1<<20, "unsent bytes per connection before it is closed as a slow consumer")
	fs.IntVar(&e.PendingQueueBytes, "pending-queue-bytes", 64<<10, "bytes posted during $connect held for delivery after the upgrade")
	listVar(fs, &e.AllowedOrigins, "allowed-origins", "comma-separated Origin values accepted (empty: any)")
	listVar(fs, &e.Subprotocols, "subprotocols", "comma-separated subprotocols the edge accepts itself, preferred first")
	fs.IntVar(&e.Workers, "workers", 0, "reactor workers (0: 4×GOMAXPROCS)")
	durVar(fs, &e.DrainWindow, "drain-window", 5*time.Second, "spread the closing of connections on shutdown over this window")

	fs.StringVar(&c.NodeID, "node-id", "", "node ID (default: hostname plus a random suffix, new at every start)")
	fs.StringVar(&c.APIListen, "api-listen", "127.0.0.1:9090", "@connections API listen address (empty: off)")
	fs.StringVar(&c.AdminListen, "admin-listen", ":9091", "health, readiness and metrics listen address")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve /debug/pprof on the admin port")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")

	fs.StringVar(&c.NATSURL, "nats-url", "", "NATS server URL(s), comma-separated (empty: run an embedded NATS server)")
	fs.StringVar(&c.NATSEmbedListen, "nats-embedded-listen", "127.0.0.1:4223", "embedded NATS server address (used when -nats-url is empty)")
	fs.StringVar(&c.NATSEmbedJSDir, "nats-embedded-jetstream-dir", "", "enable JetStream in the embedded NATS server, storing here")
	fs.StringVar(&c.NATSCredsFile, "nats-creds", "", "NATS credentials (.creds) file")
	fs.StringVar(&c.NATSUser, "nats-user", "", "NATS user")
	fs.StringVar(&c.NATSPassword, "nats-password", "", "NATS password")
	fs.StringVar(&c.NATSToken, "nats-token", "", "NATS token")
	fs.StringVar(&c.Prefix, "prefix", "switchboard", "NATS subject prefix")
	fs.StringVar(&c.ConnectMode, "connect-mode", "optional", "$connect integration: off, optional (accept when no backend answers) or required (reject)")
	durVar(fs, &c.ConnectTimeout, "connect-timeout", 3*time.Second, "how long $connect waits for a backend's decision")
	fs.StringVar(&c.RouteExpression, "route-selection-expression", "$request.body.action", "route selection expression, as in API Gateway")
	listVar(fs, &c.TwoWayRoutes, "two-way-routes", "comma-separated route keys whose backend reply is sent to the client (* for all)")
	durVar(fs, &c.RouteTimeout, "route-timeout", 10*time.Second, "how long a two-way route waits for the backend's reply")
	fs.BoolVar(&c.JetStream, "jetstream", false, "publish lifecycle events to a JetStream stream (durable, at-least-once)")
	fs.StringVar(&c.JetStreamStream, "jetstream-stream", "SWITCHBOARD_EVENTS", "JetStream stream for events (created if missing)")
	fs.StringVar(&c.Stage, "stage", "$default", "stage name reported in events")
	fs.StringVar(&c.DomainName, "domain-name", "", "domain name reported in events (default: the request's Host)")
	fs.IntVar(&c.EventQueueLength, "event-queue", 65536, "lifecycle events buffered while NATS is slow or away; more are dropped and counted")

	fs.StringVar(&c.RedisURL, "redis-url", "", "Redis URL for the ownership registry (empty: in-memory, single node)")
	listVar(fs, &c.RedisCluster, "redis-cluster-addrs", "comma-separated Redis Cluster seed addresses (instead of -redis-url)")
	fs.StringVar(&c.RedisKeyPrefix, "redis-key-prefix", "sb:", "prefix of every Redis key")
	durVar(fs, &c.LeaseTTL, "lease-ttl", 15*time.Second, "node lease TTL; a node silent this long is declared dead and cleaned up")
	fs.StringVar(&c.RegistryFailure, "registry-fail-mode", "open", "new connections while Redis is down: open (accept) or closed (reject 503)")

	listVar(fs, &c.APITokens, "api-tokens", "comma-separated bearer tokens accepted by the @connections API")
	fs.StringVar(&c.APITokensFile, "api-tokens-file", "", "file of bearer tokens, one per line, re-read when it changes")
	fs.BoolVar(&c.APIInsecure, "api-insecure", false, "serve the @connections API without authentication on any address")
	fs.IntVar(&c.APIMaxBody, "api-max-body", 128<<10, "largest @connections POST body (413 above)")

	durVar(fs, &c.DrainDelay, "drain-delay", 0, "on SIGTERM, report not-ready for this long before closing connections")
	durVar(fs, &c.DrainTimeout, "drain-timeout", 30*time.Second, "the whole shutdown must finish within this")
}

// Validate reports every setting that cannot work.
func (c *EdgeConfig) Validate() error {
	var errs []error
	if err := c.Edge.Validate(); err != nil {
		errs = append(errs, err)
	}
	switch c.ConnectMode {
	case "off", "optional", "required":
	default:
		errs = append(errs, fmt.Errorf("connect mode %q: want off, optional or required", c.ConnectMode))
	}
	switch c.RegistryFailure {
	case "open", "closed":
	default:
		errs = append(errs, fmt.Errorf("registry fail mode %q: want open or closed", c.RegistryFailure))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log format %q: want text or json", c.LogFormat))
	}
	if c.Prefix == "" || strings.ContainsAny(c.Prefix, " \t*>") {
		errs = append(errs, fmt.Errorf("prefix %q: must be a non-empty NATS subject without wildcards", c.Prefix))
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("lease TTL %v: must be at least 1s", c.LeaseTTL))
	}
	if c.RedisURL != "" && len(c.RedisCluster) > 0 {
		errs = append(errs, errors.New("give -redis-url or -redis-cluster-addrs, not both"))
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("log level %q: %w", s, err)
	}
	return l, nil
}

// NewLogger builds the process logger from format and level.
func NewLogger(format, level string) *slog.Logger {
	l, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
