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
	"time"

	"github.com/switchboardgw/switchboard/internal/admission"
	"github.com/switchboardgw/switchboard/internal/api"
	"github.com/switchboardgw/switchboard/internal/authn"
	"github.com/switchboardgw/switchboard/internal/cluster"
	"github.com/switchboardgw/switchboard/internal/console"
	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/flagext"
	"github.com/switchboardgw/switchboard/internal/lifecycle"
	"github.com/switchboardgw/switchboard/internal/relay"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// EdgeConfig is everything an edge node is configured with. Every field is a
// flag and a SWITCHBOARD_* environment variable (see RegisterFlags). Each
// package's Config registers its own flags with its own defaults; the fields
// here are the binary's: where things listen, how parts are connected, and
// settings that several packages share.
type EdgeConfig struct {
	Edge edge.Config
	Process
	NATS
	Redis
	API

	NodeID string

	JWT       authn.Config
	Admission admission.Config
	Lifecycle lifecycle.Config
	Relay     relay.Config // resume through another edge; Prefix and NodeID are the node's
	Direct    cluster.DirectConfig
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

	MsgShedClose int

	// Node: the lease and registry-outage settings (its ID is NodeID).
	Node    cluster.NodeConfig
	Janitor cluster.JanitorConfig

	// Drain: how long /readyz reports not-ready before connections close,
	// so load balancers stop sending new clients first.
	DrainDelay   time.Duration
	DrainTimeout time.Duration
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
	if err := protocol.CheckPrefix(n.Prefix); err != nil {
		return []error{fmt.Errorf("-prefix: %w", err)}
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
	flagext.StringListVar(fs, &r.Addrs, "redis-addrs", "comma-separated Redis Cluster seed nodes, or Sentinel addresses with -redis-master-name (instead of -redis-url)")
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

// API is the @connections API of a process: the listener is the binary's
// (its default differs between edge and router), the rest is api.Config's.
type API struct {
	Listen string
	Config api.Config
}

func (a *API) registerFlags(fs *flag.FlagSet, listenDefault string) {
	fs.StringVar(&a.Listen, "api-listen", listenDefault, "@connections API listen address (empty: off); without auth it is bound to loopback")
	a.Config.RegisterFlags(fs)
}

func (a *API) validate() []error {
	if err := a.apiConfig().Validate(); err != nil {
		return []error{err}
	}
	return nil
}

// RegisterFlags binds every field to a flag with its default.
func (c *EdgeConfig) RegisterFlags(fs *flag.FlagSet) {
	c.Edge.RegisterFlags(fs)
	c.Process.registerFlags(fs)
	c.NATS.registerFlags(fs, "NATS server URL(s), comma-separated (empty: run an embedded NATS server)")
	c.Redis.registerFlags(fs, "Redis URL of the ownership registry, e.g. redis://user:pass@host:6379/0 (empty: in-memory, single node)")
	c.API.registerFlags(fs, "127.0.0.1:9090")
	c.JWT.RegisterFlags(fs)
	c.Admission.RegisterFlags(fs)
	c.Lifecycle.RegisterFlags(fs)
	c.Relay.RegisterFlags(fs)
	c.Direct.RegisterFlags(fs)
	flagext.StringListVar(fs, &c.TrustedProxies, "trusted-proxies", "comma-separated CIDRs (or addresses) of proxies whose forwarding header is believed, and the only peers whose PROXY header is (required by -proxy-protocol)")
	fs.StringVar(&c.ForwardedHeader, "forwarded-header", "X-Forwarded-For", "header trusted proxies write: X-Forwarded-For or Forwarded")
	fs.StringVar(&c.WSTLSCert, "ws-tls-cert", "", "certificate file: serve wss:// on -listen, terminated in process (2 goroutines per TLS connection; reloaded when it changes). Empty: plain ws:// (terminate TLS at the load balancer)")
	fs.StringVar(&c.WSTLSKey, "ws-tls-key", "", "private key file for -ws-tls-cert")
	fs.StringVar(&c.ProxyProtocol, "proxy-protocol", "off", "PROXY protocol v1/v2 on the WebSocket listener: off, optional or required (both need -trusted-proxies)")
	fs.StringVar(&c.NodeID, "node-id", "", "node ID (default: hostname plus a random suffix, new at every start); a fixed ID (a StatefulSet pod name) is fine: each start is its own incarnation and first announces what the previous process left")

	fs.StringVar(&c.NATSEmbedListen, "nats-embedded-listen", "127.0.0.1:4223", "embedded NATS server address (used when -nats-url is empty)")
	fs.StringVar(&c.NATSEmbedJSDir, "nats-embedded-jetstream-dir", "", "enable JetStream in the embedded NATS server, storing here")
	fs.IntVar(&c.MsgShedClose, "msg-shed-close", 0, "close a connection with 1008 once this many of its messages were shed at -conn-event-queue (0: never, it only loses its own messages)")

	c.Node.RegisterFlags(fs)
	c.Janitor.RegisterFlags(fs)

	fs.DurationVar(&c.DrainDelay, "drain-delay", 0, "on SIGTERM, report not-ready for this long before closing connections")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 30*time.Second, "the whole shutdown must finish within this")
}

// Validate reports every setting that cannot work.
func (c *EdgeConfig) Validate() error {
	var errs []error
	if err := c.Edge.Validate(); err != nil {
		errs = append(errs, err)
	}
	// Prefix is left to NATS.validate: it is the process's, shared by every part.
	if err := c.Lifecycle.Validate(); err != nil {
		errs = append(errs, err)
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
	if err := c.Relay.ValidateSettings(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Node.ValidateSettings(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Janitor.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Process.validate()...)
	errs = append(errs, c.NATS.validate()...)
	errs = append(errs, c.Redis.validate()...)
	errs = append(errs, c.API.validate()...)
	for _, f := range []struct {
		name string
		v    int
	}{{"-msg-shed-close", c.MsgShedClose}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d: must not be negative", f.name, f.v))
		}
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
