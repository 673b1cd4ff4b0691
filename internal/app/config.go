// Package app builds an edge node or a router from configuration and runs it:
// the thin mains in cmd/ only parse flags and call Run.
package app

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/switchboardgw/switchboard/internal/admission"
	"github.com/switchboardgw/switchboard/internal/api"
	"github.com/switchboardgw/switchboard/internal/console"
	"github.com/switchboardgw/switchboard/internal/edge"
)

// EdgeConfig is everything an edge node is configured with. Every field is a
// flag and a SWITCHBOARD_* environment variable (see RegisterFlags).
type EdgeConfig struct {
	Edge edge.Config
	Process
	NATS
	Redis
	API

	NodeID string

	JWT       JWTFlags
	Admission admission.Config
	// Proxies: trusted proxy CIDRs, which header they write, PROXY protocol.
	TrustedProxies  []string
	ForwardedHeader string
	ProxyProtocol   string
	// WebSocket TLS (wss://), terminated in process.
	WSTLSCert string
	WSTLSKey  string

	// Embedded NATS server, run when NATS.URL is empty.
	NATSEmbedListen string
	NATSEmbedJSDir  string

	ConnectMode      string
	ConnectTimeout   time.Duration
	RouteExpression  string
	TwoWayRoutes     []string
	Routes           []string
	InvalidRouteKey  string
	NoErrorFrame     bool
	SilentNoRoute    bool
	RouteTimeout     time.Duration
	JetStream        bool
	JetStreamStream  string
	Stage            string
	DomainName       string
	EventQueueLength int
	LifecycleQueue   int
	ConnEventQueue   int
	MsgShedClose     int

	LeaseTTL        time.Duration
	FenceMargin     time.Duration
	JanitorInterval time.Duration
	RegistryFailure string

	// Drain: how long /readyz reports not-ready before connections close,
	// so load balancers stop sending new clients first.
	DrainDelay   time.Duration
	DrainTimeout time.Duration
}

// JWTFlags configure the built-in $connect JWT authorizer (off unless a
// keys file or JWKS file is given).
type JWTFlags struct {
	KeysFile          string
	JWKSFile          string
	Algorithms        []string
	Header            string
	Query             string
	SubprotocolPrefix string
	Audience          string
	Issuer            string
	UserClaim         string
	Leeway            time.Duration
}

func (j *JWTFlags) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&j.KeysFile, "jwt-keys-file", "", "PEM public key(s) or HMAC secret file for the built-in $connect JWT authorizer (re-read on change)")
	fs.StringVar(&j.JWKSFile, "jwt-jwks-file", "", "JWKS file for the JWT authorizer (re-read on change)")
	listVar(fs, &j.Algorithms, "jwt-algorithms", "accepted JWT algorithms (default: HS256,RS256,ES256 as the keys allow)")
	fs.StringVar(&j.Header, "jwt-header", "Authorization", "header carrying the token (Bearer scheme for Authorization)")
	fs.StringVar(&j.Query, "jwt-query", "", "query parameter carrying the token (e.g. token; empty: off)")
	fs.StringVar(&j.SubprotocolPrefix, "jwt-subprotocol-prefix", "", "Sec-WebSocket-Protocol entry prefix carrying the token (empty: off)")
	fs.StringVar(&j.Audience, "jwt-audience", "", "required aud claim (empty: not checked)")
	fs.StringVar(&j.Issuer, "jwt-issuer", "", "required iss claim (empty: not checked)")
	fs.StringVar(&j.UserClaim, "jwt-user-claim", "sub", "claim that becomes the connection's user ID")
	durVar(fs, &j.Leeway, "jwt-leeway", 30*time.Second, "clock skew allowed on exp and nbf")
}

// Process is what every binary has: admin endpoints and logging.
type Process struct {
	TLSCert     string
	TLSKey      string
	GCPercent   int
	AdminListen string
	Pprof       bool
	LogFormat   string
	LogLevel    string
	Console     console.Config
}

func (p *Process) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&p.AdminListen, "admin-listen", ":9091", "health (/healthz), readiness (/readyz) and metrics (/metrics) listen address")
	fs.BoolVar(&p.Pprof, "pprof", false, "serve /debug/pprof on the admin port")
	p.Console.RegisterFlags(fs)
	fs.StringVar(&p.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&p.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&p.TLSCert, "tls-cert", "", "certificate file: serve the @connections API over TLS (reloaded when it changes); WebSocket TLS is terminated in front of the edge")
	fs.StringVar(&p.TLSKey, "tls-key", "", "private key file for -tls-cert")
	fs.IntVar(&p.GCPercent, "gc-percent", 50, "Go GC target percentage (GOGC); lower keeps resident memory closer to the live heap. The GOGC environment variable wins when set")
}

// ApplyRuntime applies process-wide runtime settings: the GC target, unless
// GOGC is set in the environment.
func (p *Process) ApplyRuntime(getenv func(string) string) {
	if getenv("GOGC") == "" && p.GCPercent != 0 {
		debug.SetGCPercent(p.GCPercent)
	}
}

func (p *Process) validate() []error {
	var errs []error
	if err := p.Console.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseLevel(p.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if (p.TLSCert == "") != (p.TLSKey == "") {
		errs = append(errs, errors.New("-tls-cert and -tls-key go together"))
	}
	if p.LogFormat != "text" && p.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log format %q: want text or json", p.LogFormat))
	}
	return errs
}

// NATS is how a process reaches the NATS server(s).
type NATS struct {
	URL       string
	NKeySeed  string
	CAFile    string
	CertFile  string
	KeyFile   string
	CredsFile string
	User      string
	Password  string
	Token     string
	Prefix    string
}

func (n *NATS) registerFlags(fs *flag.FlagSet, urlUsage string) {
	fs.StringVar(&n.URL, "nats-url", "", urlUsage)
	fs.StringVar(&n.CredsFile, "nats-creds", "", "NATS credentials (.creds) file")
	fs.StringVar(&n.NKeySeed, "nats-nkey-seed", "", "NATS NKey seed file")
	fs.StringVar(&n.CAFile, "nats-ca", "", "CA certificate file for NATS over TLS (tls:// URLs; default: the system roots)")
	fs.StringVar(&n.CertFile, "nats-tls-cert", "", "client certificate file for NATS mutual TLS")
	fs.StringVar(&n.KeyFile, "nats-tls-key", "", "client key file for -nats-tls-cert")
	fs.StringVar(&n.User, "nats-user", "", "NATS user")
	fs.StringVar(&n.Password, "nats-password", "", "NATS password")
	fs.StringVar(&n.Token, "nats-token", "", "NATS token")
	fs.StringVar(&n.Prefix, "prefix", "switchboard", "NATS subject prefix (the same on every node, router and backend)")
}

func (n *NATS) validate() []error {
	if (n.CertFile == "") != (n.KeyFile == "") {
		return []error{errors.New("-nats-tls-cert and -nats-tls-key go together")}
	}
	if n.Prefix == "" || strings.ContainsAny(n.Prefix, " \t*>") {
		return []error{fmt.Errorf("prefix %q: must be a non-empty NATS subject without wildcards", n.Prefix)}
	}
	return nil
}

// Redis is how a process reaches the ownership registry.
type Redis struct {
	URL        string
	Addrs      []string
	MasterName string
	Username   string
	Password   string
	TLS        bool
	KeyPrefix  string
}

func (r *Redis) registerFlags(fs *flag.FlagSet, urlUsage string) {
	fs.StringVar(&r.URL, "redis-url", "", urlUsage)
	listVar(fs, &r.Addrs, "redis-addrs", "comma-separated Redis Cluster seed nodes, or Sentinel addresses with -redis-master-name (instead of -redis-url)")
	fs.StringVar(&r.MasterName, "redis-master-name", "", "Sentinel master name (with -redis-addrs)")
	fs.StringVar(&r.Username, "redis-username", "", "Redis ACL user (with -redis-addrs; -redis-url carries its own)")
	fs.StringVar(&r.Password, "redis-password", "", "Redis password (with -redis-addrs; -redis-url carries its own)")
	fs.BoolVar(&r.TLS, "redis-tls", false, "use TLS to Redis (with -redis-addrs; -redis-url uses rediss://)")
	fs.StringVar(&r.KeyPrefix, "redis-key-prefix", "switchboard", "prefix of every Redis key ([A-Za-z0-9_.:-])")
}

func (r *Redis) validate() []error {
	if r.URL != "" && len(r.Addrs) > 0 {
		return []error{errors.New("give -redis-url or -redis-addrs, not both")}
	}
	return nil
}

// Configured reports whether a Redis is configured at all.
func (r *Redis) Configured() bool { return r.URL != "" || len(r.Addrs) > 0 }

// API configures the @connections HTTP API.
type API struct {
	APIListen     string
	APITokens     []string
	APITokensFile string
	APIAccessKeys []string
	APIInsecure   bool
	APIMaxBody    int
	APIOctetBin   bool
	// Browser and signature defences (see docs/security.md).
	APIAllowedOrigins []string
	APISigV4Hosts     []string
}

func (a *API) registerFlags(fs *flag.FlagSet, listenDefault string) {
	fs.StringVar(&a.APIListen, "api-listen", listenDefault, "@connections API listen address (empty: off); without auth it is bound to loopback")
	listVar(fs, &a.APITokens, "api-tokens", "comma-separated bearer tokens accepted by the @connections API")
	fs.StringVar(&a.APITokensFile, "api-tokens-file", "", "file of bearer tokens, one per line, re-read when it changes")
	listVar(fs, &a.APIAccessKeys, "api-access-keys", "comma-separated ACCESS_KEY_ID:SECRET pairs for AWS SigV4 (the AWS SDK with static credentials)")
	fs.BoolVar(&a.APIInsecure, "api-insecure", false, "serve the @connections API without authentication on any address")
	fs.IntVar(&a.APIMaxBody, "api-max-body", 128<<10, "largest @connections POST body (413 above)")
	listVar(fs, &a.APIAllowedOrigins, "api-allowed-origins", "comma-separated Origin values (scheme://host[:port]) the @connections API accepts from browsers; a request with any other Origin header gets 403 (empty: every Origin refused; SDKs and curl send none)")
	listVar(fs, &a.APISigV4Hosts, "api-sigv4-host", "comma-separated hosts a SigV4 signature must have been made for (the signed Host; an entry without a port matches any port); others get 403 (empty: any host)")
	fs.BoolVar(&a.APIOctetBin, "api-octet-stream-binary", false, "a POST with Content-Type application/octet-stream always sends a binary frame (default: text when the body is valid UTF-8, since the AWS SDKs send octet-stream for everything)")
}

func (a *API) validate() []error {
	var errs []error
	if len(a.APISigV4Hosts) > 0 && len(a.APIAccessKeys) == 0 {
		errs = append(errs, errors.New("-api-sigv4-host pins the host of SigV4 signatures: it needs -api-access-keys"))
	}
	for _, o := range a.APIAllowedOrigins {
		if !api.ValidOrigin(o) {
			errs = append(errs, fmt.Errorf("-api-allowed-origins %q: want an origin, scheme://host[:port]", o))
		}
	}
	return errs
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
	fs.IntVar(&e.MaxHandshakesPerIP, "max-handshakes-per-ip", 0, "handshakes in progress from one source IP (IPv6: per /64), counted from accept; more get HTTP 429 before anything is read. Peers in -trusted-proxies are exempt: their clients are counted once the PROXY or forwarding header names them (0: -max-handshakes/8; negative: no limit)")
	durVar(fs, &e.IdleTimeout, "idle-timeout", 10*time.Minute, "close connections silent this long (1001); negative disables")
	durVar(fs, &e.MaxDuration, "max-duration", 2*time.Hour, "close connections open this long (1001); negative disables")
	durVar(fs, &e.PingInterval, "ping-interval", 0, "send a protocol ping after this much silence (0: off)")
	durVar(fs, &e.PingTimeout, "ping-timeout", 30*time.Second, "close a connection whose ping goes unanswered this long")
	durVar(fs, &e.FrameTimeout, "frame-timeout", 30*time.Second, "close a connection whose partial frame stays unfinished this long (1008)")
	durVar(fs, &e.WriteTimeout, "write-timeout", 10*time.Second, "give up on a client that does not read for this long")
	fs.IntVar(&e.MaxQueueBytes, "max-queue-bytes", 1<<20, "unsent bytes per connection before it is closed as a slow consumer")
	fs.Float64Var(&e.ControlRate, "control-rate", 10, "pings and pongs per second one client may send (the edge answers them itself); above it, after -control-burst, the connection is closed with 1008, reason control_rate (negative: unlimited; 0 means the default)")
	fs.IntVar(&e.ControlBurst, "control-burst", 50, "pings and pongs a client may send at once before -control-rate applies")
	fs.IntVar(&e.PendingQueueBytes, "pending-queue-bytes", 64<<10, "bytes posted during $connect held for delivery after the upgrade; -1 refuses such posts with 410 like API Gateway")
	listVar(fs, &e.AllowedOrigins, "allowed-origins", "comma-separated Origin values accepted (empty: any)")
	listVar(fs, &e.Subprotocols, "subprotocols", "comma-separated subprotocols the edge accepts itself, preferred first")
	fs.StringVar(&e.AppPing, "app-ping", "", "a text message the edge answers itself, never routed (e.g. ping); empty: off")
	fs.StringVar(&e.AppPong, "app-pong", "pong", "the edge's answer to -app-ping")
	fs.IntVar(&e.Workers, "workers", 0, "reactor workers (0: 4×GOMAXPROCS)")
	durVar(fs, &e.DrainWindow, "drain-window", 5*time.Second, "spread the closing of connections on shutdown over this window")

	c.Process.registerFlags(fs)
	c.NATS.registerFlags(fs, "NATS server URL(s), comma-separated (empty: run an embedded NATS server)")
	c.Redis.registerFlags(fs, "Redis URL of the ownership registry, e.g. redis://user:pass@host:6379/0 (empty: in-memory, single node)")
	c.API.registerFlags(fs, "127.0.0.1:9090")
	c.JWT.registerFlags(fs)
	a := &c.Admission
	fs.Float64Var(&a.ConnRate, "conn-rate", 0, "new connections per second on this node, 429 above (0: unlimited)")
	fs.Float64Var(&a.ConnRatePerIP, "conn-rate-per-ip", 0, "new connections per second from one source IP (IPv6: per /64), 429 above (0: unlimited)")
	fs.IntVar(&a.MaxConns, "max-conns", 0, "open connections on this node, 503 above (0: unlimited)")
	fs.IntVar(&a.MaxConnsPerUser, "max-conns-per-user", 0, "open connections of one user on this node, 429 above (0: unlimited)")
	fs.Float64Var(&a.MsgRate, "msg-rate", 0, "inbound messages per second per connection; above it the connection is closed with 1008 (0: unlimited)")
	listVar(fs, &c.TrustedProxies, "trusted-proxies", "comma-separated CIDRs (or addresses) of proxies whose forwarding header is believed, and the only peers whose PROXY header is (required by -proxy-protocol)")
	fs.StringVar(&c.ForwardedHeader, "forwarded-header", "X-Forwarded-For", "header trusted proxies write: X-Forwarded-For or Forwarded")
	fs.StringVar(&c.WSTLSCert, "ws-tls-cert", "", "certificate file: serve wss:// on -listen, terminated in process (2 goroutines per TLS connection; reloaded when it changes). Empty: plain ws:// (terminate TLS at the load balancer)")
	fs.StringVar(&c.WSTLSKey, "ws-tls-key", "", "private key file for -ws-tls-cert")
	fs.StringVar(&c.ProxyProtocol, "proxy-protocol", "off", "PROXY protocol v1/v2 on the WebSocket listener: off, optional or required (both need -trusted-proxies)")
	fs.StringVar(&c.NodeID, "node-id", "", "node ID (default: hostname plus a random suffix, new at every start); a fixed ID (a StatefulSet pod name) is fine: each start is its own incarnation and first announces what the previous process left")

	fs.StringVar(&c.NATSEmbedListen, "nats-embedded-listen", "127.0.0.1:4223", "embedded NATS server address (used when -nats-url is empty)")
	fs.StringVar(&c.NATSEmbedJSDir, "nats-embedded-jetstream-dir", "", "enable JetStream in the embedded NATS server, storing here")
	fs.StringVar(&c.ConnectMode, "connect-mode", "optional", "$connect integration: off, optional (accept when no backend answers) or required (reject)")
	durVar(fs, &c.ConnectTimeout, "connect-timeout", 3*time.Second, "how long $connect waits for a backend's decision")
	fs.StringVar(&c.RouteExpression, "route-selection-expression", "$request.body.action", "route selection expression, as in API Gateway")
	listVar(fs, &c.TwoWayRoutes, "two-way-routes", "comma-separated route keys whose backend reply is sent to the client (* for all)")
	listVar(fs, &c.Routes, "routes", "comma-separated allow-list of route keys; others go to $default (empty: every legal key is routed)")
	fs.StringVar(&c.InvalidRouteKey, "invalid-route-key", "default", "a message whose route key is not legal: default (route to $default) or drop (counted)")
	fs.BoolVar(&c.SilentNoRoute, "silent-no-route", false, "send nothing when a one-way message has no subscriber (default: API Gateway's error frame {\"message\":\"Forbidden\",…})")
	fs.BoolVar(&c.NoErrorFrame, "no-error-frame", false, "send nothing when a two-way route gets no reply (default: API Gateway's error frame)")
	durVar(fs, &c.RouteTimeout, "route-timeout", 10*time.Second, "how long a two-way route waits for the backend's reply")
	fs.BoolVar(&c.JetStream, "jetstream", false, "publish lifecycle events to a JetStream stream (durable, at-least-once)")
	fs.StringVar(&c.JetStreamStream, "jetstream-stream", "SWITCHBOARD_EVENTS", "JetStream stream for events (created if missing)")
	fs.StringVar(&c.Stage, "stage", "$default", "stage name reported in events")
	fs.StringVar(&c.DomainName, "domain-name", "", "domain name reported in events (requestContext.domainName), whatever Host the client sent (default: the request's Host header, which the client chooses)")
	fs.IntVar(&c.EventQueueLength, "event-queue", 65536, "MESSAGE events buffered while NATS is slow or away; more are dropped and counted (queue_full)")
	fs.IntVar(&c.LifecycleQueue, "lifecycle-queue", 65536, "CONNECT and DISCONNECT events buffered before new connections wait for room (within -connect-timeout, then 503); these events are never dropped for room")
	fs.IntVar(&c.ConnEventQueue, "conn-event-queue", 256, "MESSAGE events of one connection buffered; more of its messages are shed (conn_queue_full), never other connections'")
	fs.IntVar(&c.MsgShedClose, "msg-shed-close", 0, "close a connection with 1008 once this many of its messages were shed at -conn-event-queue (0: never, it only loses its own messages)")

	durVar(fs, &c.LeaseTTL, "lease-ttl", 15*time.Second, "node lease TTL; a node silent this long is declared dead and cleaned up")
	durVar(fs, &c.FenceMargin, "fence-margin", 0, "a node that has not renewed its lease for lease-ttl minus this fences itself (holds events, serves no API call for its connections, 503 to new ones) until it renews or learns it was declared dead; 0 means lease-ttl/5")
	durVar(fs, &c.JanitorInterval, "janitor-interval", 5*time.Second, "how often a node looks for dead nodes to clean up (detection takes lease TTL plus up to this)")
	fs.StringVar(&c.RegistryFailure, "registry-fail-mode", "open", "new connections while Redis is down: open (accept) or closed (reject 503)")

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
	if (c.WSTLSCert == "") != (c.WSTLSKey == "") {
		errs = append(errs, errors.New("-ws-tls-cert and -ws-tls-key go together"))
	}
	switch c.ProxyProtocol {
	case "off", "optional", "required":
	default:
		errs = append(errs, fmt.Errorf("proxy protocol %q: want off, optional or required", c.ProxyProtocol))
	}
	if c.ProxyProtocol != "off" && len(c.TrustedProxies) == 0 {
		// A PROXY header believed from anyone lets every client choose its
		// own source address (and so its rate limits and sourceIp).
		errs = append(errs, errors.New("-proxy-protocol optional|required needs -trusted-proxies: "+
			"the addresses or CIDRs of the load balancers that send the PROXY header (a header from any other peer is not believed)"))
	}
	if err := c.Admission.Validate(); err != nil {
		errs = append(errs, err)
	}
	switch c.InvalidRouteKey {
	case "default", "drop":
	default:
		errs = append(errs, fmt.Errorf("invalid route key policy %q: want default or drop", c.InvalidRouteKey))
	}
	switch c.RegistryFailure {
	case "open", "closed":
	default:
		errs = append(errs, fmt.Errorf("registry fail mode %q: want open or closed", c.RegistryFailure))
	}
	errs = append(errs, c.Process.validate()...)
	errs = append(errs, c.NATS.validate()...)
	errs = append(errs, c.Redis.validate()...)
	errs = append(errs, c.API.validate()...)
	for _, f := range []struct {
		name string
		v    int
	}{{"-event-queue", c.EventQueueLength}, {"-lifecycle-queue", c.LifecycleQueue}, {"-conn-event-queue", c.ConnEventQueue}, {"-msg-shed-close", c.MsgShedClose}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d: must not be negative", f.name, f.v))
		}
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("lease TTL %v: must be at least 1s", c.LeaseTTL))
	}
	if c.FenceMargin < 0 || c.FenceMargin >= c.LeaseTTL/2 {
		errs = append(errs, fmt.Errorf("fence margin %v: must be 0 (lease-ttl/5) or less than half the lease TTL %v", c.FenceMargin, c.LeaseTTL))
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
