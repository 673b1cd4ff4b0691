package lifecycle

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/switchboardgw/switchboard/internal/flagext"
	"github.com/switchboardgw/switchboard/internal/rules"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// Mode says what happens to a $connect when the integration gives no usable
// answer (nobody subscribed, no reply before the deadline, a malformed reply).
type Mode string

const (
	// ModeRequired rejects the connection: 503 when nobody answers or NATS is
	// unreachable, 504 on timeout, 502 on a malformed reply.
	ModeRequired Mode = "required"
	// ModeOptional accepts the connection as if the reply had been a bare 200.
	ModeOptional Mode = "optional"
	// ModeOff never asks: every connection is accepted without a request.
	ModeOff Mode = "off"
)

// String and Set make a Mode a flag (checked by Config.Validate).
func (m *Mode) String() string { return string(*m) }

// Set stores s; Config.Validate says whether it is a mode.
func (m *Mode) Set(s string) error { *m = Mode(s); return nil }

// InvalidKeyPolicy says what happens to a message whose route key is not a
// legal route key (see ValidRouteKey).
type InvalidKeyPolicy string

const (
	// InvalidKeyDefault sends the message to $default, as API Gateway does
	// for a key that matches no route.
	InvalidKeyDefault InvalidKeyPolicy = "default"
	// InvalidKeyDrop drops the message (counted).
	InvalidKeyDrop InvalidKeyPolicy = "drop"
)

// String and Set make an InvalidKeyPolicy a flag (checked by Config.Validate).
func (p *InvalidKeyPolicy) String() string { return string(*p) }

// Set stores s; Config.Validate says whether it is a policy.
func (p *InvalidKeyPolicy) Set(s string) error { *p = InvalidKeyPolicy(s); return nil }

// Fence is the cluster's say over whether this node may still speak for its
// connections (cluster.Node implements it). The publisher asks it before
// every event, so a node paused past its lease publishes nothing for
// connections the cluster has already announced as gone.
type Fence interface {
	// Wait returns nil at once while the node holds its lease. While the
	// lease is in doubt (it may have expired: a pause, a lost registry) it
	// blocks until the lease is renewed or found revoked, or ctx ends.
	Wait(ctx context.Context) error
	// Epoch changes every time the cluster revokes this node's connections:
	// an event queued in an earlier epoch belongs to a connection that was
	// already announced as disconnected, and is dropped.
	Epoch() uint64
}

// The defaults of the fields an operator sets: what a zero field means and
// what the flags default to.
const (
	DefaultConnectMode       = ModeOptional
	DefaultConnectTimeout    = 3 * time.Second
	DefaultRouteSelection    = "$request.body.action"
	DefaultInvalidRouteKey   = InvalidKeyDefault
	DefaultRouteTimeout      = 10 * time.Second
	DefaultQueueLen          = 65536
	DefaultLifecycleQueueLen = 65536
	DefaultConnQueueLen      = 256
	DefaultStream            = "SWITCHBOARD_EVENTS"
	DefaultStage             = "$default"
	// Defaults without a flag, quoted by docs/protocol.md.
	DefaultMaxInflight       = 4096
	DefaultNoRouteWindow     = time.Second
	DefaultMaxNoRoutePending = 65536
	DefaultQueueBytes        = 64 << 20
	DefaultConnQueueBytes    = 1 << 20
	DefaultAckTimeout        = 5 * time.Second
	DefaultJetStreamRetries  = 12
)

// Tap sees the client messages a node routes: the web console's tail of
// route traffic (internal/console) samples them here, where they are
// published, rather than subscribing to route subjects, where it would
// count as a backend. Routed runs on the caller's goroutine (a reactor
// worker) for every message queued: it must be cheap and never block.
type Tap interface {
	Routed(route, connID, userID string, payload []byte, binary bool)
}

// Config configures a Lifecycle. The zero value is valid and means the
// defaults stated on each field.
type Config struct {
	// Fence, if set, gates every publish (see Fence). Default none: events
	// are always published.
	Fence Fence
	// Tap, if set, sees every client message queued for a route (see Tap).
	Tap Tap
	// Prefix is the first subject token(s) of every subject. Default "switchboard".
	Prefix string
	// ConnectMode: ModeRequired, ModeOptional or ModeOff. Default ModeOptional.
	ConnectMode Mode
	// ConnectTimeout bounds the $connect request/reply. Default 3s.
	ConnectTimeout time.Duration
	// MaxConnectReply is the largest $connect reply accepted, in bytes;
	// larger is a malformed reply. Default 65536.
	MaxConnectReply int
	// MaxPrincipal is the largest principal/context (the authorizer object
	// carried on every later event), in bytes of JSON. Default 8192 (API
	// Gateway's authorizer result limit).
	MaxPrincipal int
	// MaxGroups is the most initial groups a $connect reply may set. Default 64.
	MaxGroups int

	// RouteSelection is the route selection expression. Default
	// "$request.body.action". Forms: "$request.body.a.b", or a template such
	// as "${request.body.service}/${request.body.action}", or a static key
	// ("\$default" means $default).
	RouteSelection string
	// Routes, if not empty, is the allow-list of custom route keys: any other
	// key goes to $default. It also bounds the route label of the metrics.
	// Default empty (every legal key is routed).
	Routes []string
	// InvalidRouteKey: InvalidKeyDefault or InvalidKeyDrop. Default InvalidKeyDefault.
	InvalidRouteKey InvalidKeyPolicy
	// MaxRouteKey is the longest route key in bytes. Default 128.
	MaxRouteKey int

	// TwoWayRoutes lists the route keys (may include "$default") whose
	// backend reply is sent back to the client; "*" means every route.
	// Default none.
	TwoWayRoutes []string
	// RouteTimeout bounds the wait for a two-way route's reply. Default 10s.
	RouteTimeout time.Duration
	// MaxInflight bounds the two-way requests awaiting a reply; over it a
	// message is dropped (counted). Default 4096.
	MaxInflight int
	// NoErrorFrame, if true, sends nothing to the client when a two-way
	// route gets no reply. Default false: the client gets API Gateway's
	// {"message":"Internal server error","connectionId":…,"requestId":…}.
	NoErrorFrame bool

	// SilentNoRoute, if true, loses a one-way message that nobody subscribes
	// to without telling the client (no reply subject is set on one-way
	// MESSAGE events). Default false: as on API Gateway when a message has
	// no route and there is no $default, the client gets the error frame
	// {"message":"Forbidden","connectionId":…,"requestId":…}. Detection uses
	// NATS's no-responders status (docs/protocol.md, "No route").
	SilentNoRoute bool
	// NoRouteWindow is how long a one-way message stays watched for NATS's
	// no-responders status. The status comes one round trip to the NATS
	// server after the publish, so the window only needs to cover a slow
	// server; a message whose status comes later gets no error frame.
	// Default 1s.
	NoRouteWindow time.Duration
	// MaxNoRoutePending bounds the one-way messages watched at once (those
	// published within the last NoRouteWindow). Over it a message is still
	// published, but without a reply subject, so it gets no error frame;
	// counted as outcome "untracked". Each watched message costs about 200
	// bytes. Default 65536.
	MaxNoRoutePending int

	// LifecycleQueueLen bounds the CONNECT and DISCONNECT events waiting to
	// be published (the lifecycle lane). They are never dropped for room:
	// while the lane is full, new connections wait for room in Authorize
	// (within ConnectTimeout, then 503). Default 65536.
	LifecycleQueueLen int
	// QueueLen bounds the MESSAGE events (and two-way requests) waiting to
	// be published (the message lane); over it a message is dropped,
	// counted as queue_full. Default 65536.
	QueueLen int
	// QueueBytes bounds the bytes of MESSAGE events waiting to be
	// published. Default 64 MiB.
	QueueBytes int
	// ConnQueueLen bounds the messages of one connection waiting to be
	// published: a connection sending faster than NATS takes them loses its
	// own messages (conn_queue_full), not others'. Default 256.
	ConnQueueLen int
	// ConnQueueBytes bounds the bytes of one connection's messages waiting
	// to be published; a connection may always have one. Default 1 MiB.
	ConnQueueBytes int
	// MaxConnectPending bounds the $connect requests in the NATS client at
	// once, those abandoned at their deadline while NATS blocks included;
	// over it $connect fails at once (unavailable). Default 4096.
	MaxConnectPending int

	// JetStream, if true, publishes CONNECT and DISCONNECT events to a
	// JetStream stream (at-least-once, deduplicated by event ID). MESSAGE
	// events and two-way route requests stay on core NATS. Default false.
	JetStream bool
	// Stream is the JetStream stream name, created if missing with subjects
	// "<Prefix>.event.>". Default "SWITCHBOARD_EVENTS".
	Stream string
	// StreamMaxAge is how long the stream keeps events when it is created
	// here. Default 24h.
	StreamMaxAge time.Duration
	// DedupeWindow is the stream's duplicate window when created here.
	// Default 2m.
	DedupeWindow time.Duration
	// MaxAckPending bounds JetStream publishes awaiting their ack. Default 4096.
	MaxAckPending int
	// AckTimeout bounds the wait for one JetStream ack. Default 5s.
	AckTimeout time.Duration
	// JetStreamRetries is how often an event JetStream did not acknowledge
	// is queued again (same event ID, so the stream deduplicates); after
	// that it counts as failed. With AckTimeout it sets how long an outage
	// events survive. Default 12; negative: never.
	JetStreamRetries int

	// NodeID, Stage, DomainName and APIID are copied into events where the
	// ConnMeta leaves them empty. Defaults: "", "" (the -stage flag says
	// "$default"), "", "switchboard".
	NodeID     string
	Stage      string
	DomainName string
	APIID      string
}

// ErrConfig is wrapped by every Validate error.
var ErrConfig = errors.New("lifecycle: invalid config")

// RegisterFlags binds the fields an operator sets to flags, each with the
// default a zero field has. Prefix, Fence, Tap and NodeID are the caller's: they
// are shared with other parts of the node.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	c.ConnectMode = DefaultConnectMode
	f.Var(&c.ConnectMode, "connect-mode", "$connect integration: off, optional (accept when no backend answers) or required (reject)")
	f.DurationVar(&c.ConnectTimeout, "connect-timeout", DefaultConnectTimeout, "how long $connect waits for a backend's decision")
	f.StringVar(&c.RouteSelection, "route-selection-expression", DefaultRouteSelection, "route selection expression, as in API Gateway")
	flagext.StringListVar(f, &c.TwoWayRoutes, "two-way-routes", "comma-separated route keys whose backend reply is sent to the client (* for all)")
	flagext.StringListVar(f, &c.Routes, "routes", "comma-separated allow-list of route keys; others go to $default (empty: every legal key is routed)")
	c.InvalidRouteKey = DefaultInvalidRouteKey
	f.Var(&c.InvalidRouteKey, "invalid-route-key", "a message whose route key is not legal: default (route to $default) or drop (counted)")
	f.BoolVar(&c.SilentNoRoute, "silent-no-route", false, "send nothing when a one-way message has no subscriber (default: API Gateway's error frame {\"message\":\"Forbidden\",…})")
	f.BoolVar(&c.NoErrorFrame, "no-error-frame", false, "send nothing when a two-way route gets no reply (default: API Gateway's error frame)")
	f.DurationVar(&c.RouteTimeout, "route-timeout", DefaultRouteTimeout, "how long a two-way route waits for the backend's reply")
	f.BoolVar(&c.JetStream, "jetstream", false, "publish lifecycle events to a JetStream stream (durable, at-least-once)")
	f.StringVar(&c.Stream, "jetstream-stream", DefaultStream, "JetStream stream for events (created if missing)")
	f.StringVar(&c.Stage, "stage", DefaultStage, "stage name reported in events")
	f.StringVar(&c.DomainName, "domain-name", "", "domain name reported in events (requestContext.domainName), whatever Host the client sent (default: the request's Host header, which the client chooses)")
	f.IntVar(&c.QueueLen, "event-queue", DefaultQueueLen, "MESSAGE events buffered while NATS is slow or away; more are dropped and counted (queue_full)")
	f.IntVar(&c.LifecycleQueueLen, "lifecycle-queue", DefaultLifecycleQueueLen, "CONNECT and DISCONNECT events buffered before new connections wait for room (within -connect-timeout, then 503); these events are never dropped for room")
	f.IntVar(&c.ConnQueueLen, "conn-event-queue", DefaultConnQueueLen, "MESSAGE events of one connection buffered; more of its messages are shed (conn_queue_full), never other connections'")
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Prefix == "" {
		c.Prefix = "switchboard"
	}
	if c.ConnectMode == "" {
		c.ConnectMode = DefaultConnectMode
	}
	defDur(&c.ConnectTimeout, DefaultConnectTimeout)
	def(&c.MaxConnectReply, 64<<10)
	def(&c.MaxPrincipal, 8<<10)
	def(&c.MaxGroups, 64)
	if c.RouteSelection == "" {
		c.RouteSelection = DefaultRouteSelection
	}
	if c.InvalidRouteKey == "" {
		c.InvalidRouteKey = DefaultInvalidRouteKey
	}
	def(&c.MaxRouteKey, 128)
	defDur(&c.RouteTimeout, DefaultRouteTimeout)
	def(&c.MaxInflight, DefaultMaxInflight)
	defDur(&c.NoRouteWindow, DefaultNoRouteWindow)
	def(&c.MaxNoRoutePending, DefaultMaxNoRoutePending)
	def(&c.QueueLen, DefaultQueueLen)
	def(&c.QueueBytes, DefaultQueueBytes)
	def(&c.LifecycleQueueLen, DefaultLifecycleQueueLen)
	def(&c.ConnQueueLen, DefaultConnQueueLen)
	def(&c.ConnQueueBytes, DefaultConnQueueBytes)
	def(&c.MaxConnectPending, 4096)
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	defDur(&c.StreamMaxAge, 24*time.Hour)
	defDur(&c.DedupeWindow, 2*time.Minute)
	def(&c.MaxAckPending, 4096)
	defDur(&c.AckTimeout, DefaultAckTimeout)
	def(&c.JetStreamRetries, DefaultJetStreamRetries)
	if c.APIID == "" {
		c.APIID = "switchboard"
	}
	return c
}

// Validate reports the first problem with c (after defaults are applied).
func (c Config) Validate() error {
	c = c.withDefaults()
	if err := protocol.CheckPrefix(c.Prefix); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	switch c.ConnectMode {
	case ModeRequired, ModeOptional, ModeOff:
	default:
		return fmt.Errorf("%w: connect mode %q (want required, optional or off)", ErrConfig, c.ConnectMode)
	}
	switch c.InvalidRouteKey {
	case InvalidKeyDefault, InvalidKeyDrop:
	default:
		return fmt.Errorf("%w: invalid route key policy %q (want default or drop)", ErrConfig, c.InvalidRouteKey)
	}
	for name, v := range map[string]int{
		"MaxConnectReply": c.MaxConnectReply, "MaxPrincipal": c.MaxPrincipal, "MaxGroups": c.MaxGroups,
		"MaxRouteKey": c.MaxRouteKey, "MaxInflight": c.MaxInflight, "MaxNoRoutePending": c.MaxNoRoutePending, "QueueLen": c.QueueLen,
		"QueueBytes": c.QueueBytes, "MaxAckPending": c.MaxAckPending, "LifecycleQueueLen": c.LifecycleQueueLen,
		"ConnQueueLen": c.ConnQueueLen, "ConnQueueBytes": c.ConnQueueBytes, "MaxConnectPending": c.MaxConnectPending,
	} {
		if v < 0 {
			return fmt.Errorf("%w: %s is negative", ErrConfig, name)
		}
	}
	for name, v := range map[string]time.Duration{
		"ConnectTimeout": c.ConnectTimeout, "RouteTimeout": c.RouteTimeout, "NoRouteWindow": c.NoRouteWindow, "StreamMaxAge": c.StreamMaxAge,
		"DedupeWindow": c.DedupeWindow, "AckTimeout": c.AckTimeout,
	} {
		if v < 0 {
			return fmt.Errorf("%w: %s is negative", ErrConfig, name)
		}
	}
	if _, err := compileSelector(c.RouteSelection); err != nil {
		return fmt.Errorf("%w: route selection: %w", ErrConfig, err)
	}
	for _, r := range c.Routes {
		if !protocol.ValidRouteKey(r, c.MaxRouteKey) {
			return fmt.Errorf("%w: route %q is not a legal route key", ErrConfig, r)
		}
	}
	for _, r := range c.TwoWayRoutes {
		if r != "*" && r != protocol.RouteDefault && !protocol.ValidRouteKey(r, c.MaxRouteKey) {
			return fmt.Errorf("%w: two-way route %q is not a legal route key", ErrConfig, r)
		}
	}
	if c.JetStream && !rules.ValidToken(c.Stream, 64) {
		return fmt.Errorf("%w: stream name %q", ErrConfig, c.Stream)
	}
	return nil
}
