// Package backend is the Go SDK for a Switchboard backend: it answers
// $connect, hears CONNECT and DISCONNECT events and handles client messages
// by route, over NATS (protocol v1, docs/protocol.md). Every subscription
// joins a queue group, so running more replicas of a backend spreads the load.
//
//	b, _ := backend.New(nc, backend.Options{})
//	b.OnConnect(func(ctx context.Context, r *backend.ConnectRequest) backend.ConnectResponse {
//		if r.QueryStringParameters["token"] == "" {
//			return backend.Deny(401, "missing token")
//		}
//		return backend.ConnectResponse{UserID: "alice", Groups: []string{"lobby"}}
//	})
//	b.Route("sendmessage", func(ctx context.Context, m *backend.Message) ([]byte, error) { … })
//	err := b.Run(ctx)
package backend

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// NATS headers of protocol v1 (pkg/protocol, the contract the gateway
// shares).
const (
	// HeaderBinary "true" on a two-way reply sends it as a binary frame.
	HeaderBinary = protocol.HeaderBinary
	// HeaderError on a two-way reply: the handler failed; the client gets
	// the gateway's error frame.
	HeaderError = protocol.HeaderError
	// HeaderOneWay "true" on a message that carries a reply subject only so
	// the gateway learns when nobody subscribes: it expects no reply.
	HeaderOneWay = protocol.HeaderOneWay
)

// Options configures a Backend. The zero value is valid.
type Options struct {
	// Prefix is the gateway's subject prefix. Default "switchboard".
	Prefix string
	// Queue is the queue group every subscription joins. Default
	// "switchboard-backend". Replicas with the same Queue share the work;
	// different Queues each get every message.
	Queue string
	// Logger receives handler errors. Default: discard.
	Logger *slog.Logger
}

// Extension is requestContext.switchboard, Switchboard's additions to the
// API Gateway event.
type Extension = protocol.Extension

// Event is one event: the API Gateway WebSocket event as aws-lambda-go types
// it, plus Switchboard's extension.
type Event struct {
	events.APIGatewayWebsocketProxyRequest
	Switchboard Extension
	// Subject is the NATS subject it arrived on.
	Subject string
}

// ConnectionID is the connection the event is about.
func (e *Event) ConnectionID() string { return e.RequestContext.ConnectionID }

// ConnectedAt is when the connection's upgrade request arrived.
func (e *Event) ConnectedAt() time.Time { return time.UnixMilli(e.RequestContext.ConnectedAt) }

// ConnectRequest is the $connect request: the CONNECT event, with headers
// and query string.
type ConnectRequest struct{ Event }

// Subprotocols are the subprotocols the client offered.
func (r *ConnectRequest) Subprotocols() []string { return r.Switchboard.Subprotocols }

// ConnectResponse answers $connect. The zero value allows.
type ConnectResponse struct {
	// StatusCode ≥ 300 rejects the upgrade with that HTTP status; 0 or 2xx allows.
	StatusCode int `json:"statusCode,omitempty"`
	// Headers are added to the response, e.g. Sec-WebSocket-Protocol.
	Headers map[string]string `json:"headers,omitempty"`
	// Body is the rejection's body.
	Body string `json:"body,omitempty"`
	// PrincipalID and Context become requestContext.authorizer on every
	// later event of the connection (at most 8 KiB by default).
	PrincipalID string         `json:"principalId,omitempty"`
	Context     map[string]any `json:"context,omitempty"`
	// UserID and Groups: the connection's user and initial groups.
	UserID string   `json:"userId,omitempty"`
	Groups []string `json:"groups,omitempty"`
}

// encode writes r as the $connect reply (protocol.ConnectReply).
func (r ConnectResponse) encode() ([]byte, error) {
	reply := protocol.ConnectReply{StatusCode: r.StatusCode, Headers: r.Headers, Body: r.Body,
		PrincipalID: r.PrincipalID, UserID: r.UserID, Groups: r.Groups}
	if len(r.Context) > 0 {
		c, err := json.Marshal(r.Context)
		if err != nil {
			return nil, err
		}
		reply.Context = c
	}
	return json.Marshal(reply)
}

// Deny rejects the upgrade with status and body.
func Deny(status int, body string) ConnectResponse {
	return ConnectResponse{StatusCode: status, Body: body}
}

// Message is a client message delivered on a route.
type Message struct {
	Event
	// Data is the message as the client sent it (base64 already decoded).
	Data []byte
	// Binary: the client sent a binary frame.
	Binary bool
	// ReplyBinary, set by a two-way route's handler, sends its reply as a
	// binary frame.
	ReplyBinary bool
}

// RouteHandler handles a client message. On a two-way route, its reply is
// sent to the client (nil sends nothing); an error sends the gateway's
// error frame. On a one-way route both are ignored (errors are logged).
type RouteHandler func(ctx context.Context, m *Message) (reply []byte, err error)

// Backend is a set of handlers bound to NATS subscriptions.
type Backend struct {
	nc     *nats.Conn
	prefix string
	queue  string
	log    *slog.Logger

	mu       sync.Mutex
	handlers []raw
	subs     []*nats.Subscription
	started  bool
	err      error // from registration, reported by Start
}

type raw struct {
	subject string
	h       func(ctx context.Context, m *nats.Msg)
}

// ErrInvalidRouteKey: Route was given a key the gateway never routes to.
var ErrInvalidRouteKey = errors.New("backend: invalid route key")

// New makes a Backend on nc (owned by the caller).
func New(nc *nats.Conn, opts Options) (*Backend, error) {
	if nc == nil {
		return nil, errors.New("backend: nil NATS connection")
	}
	if opts.Prefix == "" {
		opts.Prefix = protocol.DefaultPrefix
	}
	if err := protocol.CheckPrefix(opts.Prefix); err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	if opts.Queue == "" {
		opts.Queue = "switchboard-backend"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Backend{nc: nc, prefix: opts.Prefix, queue: opts.Queue, log: opts.Logger}, nil
}

// HandleRaw subscribes h to <prefix>.<suffix> in the queue group: the escape
// hatch for adapters (see pkg/lambdaadapter). Register before Start.
func (b *Backend) HandleRaw(suffix string, h func(ctx context.Context, m *nats.Msg)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		b.err = errors.Join(b.err, fmt.Errorf("backend: handler for %q registered after Start", suffix))
		return
	}
	b.handlers = append(b.handlers, raw{subject: b.prefix + "." + suffix, h: h})
}

// OnConnect answers $connect requests (<prefix>.connect).
func (b *Backend) OnConnect(h func(ctx context.Context, r *ConnectRequest) ConnectResponse) {
	b.HandleRaw(protocol.SuffixConnect, func(ctx context.Context, m *nats.Msg) {
		var r ConnectRequest
		if err := decodeEvent(m, &r.Event); err != nil {
			b.log.Error("backend: bad $connect request", "err", err)
			b.respond(m, []byte(`{"statusCode":400}`), nil)
			return
		}
		data, err := h(ctx, &r).encode()
		if err != nil {
			b.log.Error("backend: encode $connect response", "err", err)
			data = []byte(`{"statusCode":500}`)
		}
		b.respond(m, data, nil)
	})
}

// OnConnected handles CONNECT events of established connections.
func (b *Backend) OnConnected(h func(ctx context.Context, e *Event)) {
	b.onEvent(protocol.SuffixEventConnect, h)
}

// OnDisconnect handles DISCONNECT events.
func (b *Backend) OnDisconnect(h func(ctx context.Context, e *Event)) {
	b.onEvent(protocol.SuffixEventDisconnect, h)
}

// OnResume handles RESUME events: a detached connection was resumed by its
// client, with the same ID and nothing lost (docs/resume.md); no
// DISCONNECT or CONNECT was sent for it. e.Switchboard.DetachedMs is how
// long it was away.
func (b *Backend) OnResume(h func(ctx context.Context, e *Event)) {
	b.onEvent(protocol.SuffixEventResume, h)
}

func (b *Backend) onEvent(suffix string, h func(ctx context.Context, e *Event)) {
	b.HandleRaw(suffix, func(ctx context.Context, m *nats.Msg) {
		var e Event
		if err := decodeEvent(m, &e); err != nil {
			b.log.Error("backend: bad event", "subject", m.Subject, "err", err)
			return
		}
		h(ctx, &e)
	})
}

// Route handles messages whose route key is key ("$default" for the default
// route).
func (b *Backend) Route(key string, h RouteHandler) {
	tok := protocol.RouteToken(key)
	if tok == "" {
		b.mu.Lock()
		b.err = errors.Join(b.err, fmt.Errorf("%w: %q", ErrInvalidRouteKey, key))
		b.mu.Unlock()
		return
	}
	b.HandleRaw(protocol.SuffixRoute+tok, func(ctx context.Context, m *nats.Msg) {
		var msg Message
		err := decodeEvent(m, &msg.Event)
		if err == nil {
			msg.Binary = msg.IsBase64Encoded
			if msg.Binary {
				msg.Data, err = base64.StdEncoding.DecodeString(msg.Body)
			} else {
				msg.Data = []byte(msg.Body)
			}
		}
		if err != nil {
			b.log.Error("backend: bad message event", "subject", m.Subject, "err", err)
			b.respond(m, nil, err)
			return
		}
		reply, herr := h(ctx, &msg)
		if herr != nil {
			b.log.Warn("backend: route handler failed", "route", key, "connection_id", msg.ConnectionID(), "err", herr)
		}
		if !wantsReply(m) {
			return
		}
		var hdr nats.Header
		if msg.ReplyBinary {
			hdr = nats.Header{HeaderBinary: []string{"true"}}
		}
		b.respond(m, reply, herr, hdr)
	})
}

// Default handles messages on the $default route.
func (b *Backend) Default(h RouteHandler) { b.Route("$default", h) }

// respond answers a request, if it is one: data, or the error header.
func (b *Backend) respond(m *nats.Msg, data []byte, herr error, hdrs ...nats.Header) {
	if !wantsReply(m) {
		return
	}
	r := &nats.Msg{Subject: m.Reply, Data: data, Header: nats.Header{}}
	for _, h := range hdrs {
		for k, v := range h {
			r.Header[k] = v
		}
	}
	if herr != nil {
		r.Data = nil
		r.Header.Set(HeaderError, protocol.ErrorText(herr.Error()))
	}
	if err := b.nc.PublishMsg(r); err != nil {
		b.log.Warn("backend: reply failed", "subject", m.Subject, "err", err)
	}
}

// Start subscribes every handler and waits until the server has them. ctx's
// values (not its cancellation) reach the handlers.
func (b *Backend) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	if b.started {
		return errors.New("backend: already started")
	}
	b.started = true
	base := context.WithoutCancel(ctx)
	for _, r := range b.handlers {
		h := r.h
		sub, err := b.nc.QueueSubscribe(r.subject, b.queue, func(m *nats.Msg) { h(base, m) })
		if err != nil {
			b.unsubscribeLocked()
			return fmt.Errorf("backend: subscribe %s: %w", r.subject, err)
		}
		b.subs = append(b.subs, sub)
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second) // FlushWithContext needs a deadline
	defer cancel()
	if err := b.nc.FlushWithContext(fctx); err != nil {
		b.unsubscribeLocked()
		return fmt.Errorf("backend: flush subscriptions: %w", err)
	}
	return nil
}

func (b *Backend) unsubscribeLocked() {
	for _, s := range b.subs {
		_ = s.Unsubscribe()
	}
	b.subs = nil
}

// Run starts the backend and serves until ctx ends, then drains. A ctx
// that ends while it is still starting ends it too, with nil.
func (b *Backend) Run(ctx context.Context) error {
	if err := b.Start(ctx); err != nil {
		if ctx.Err() == nil {
			return err
		}
		// Start unsubscribed what it had subscribed; the server hears it
		// before Run returns, as after a drain.
		_ = b.nc.FlushTimeout(time.Second)
		return nil
	}
	<-ctx.Done()
	return b.Drain()
}

// Drain stops taking new messages and returns once the handlers have
// finished the ones already delivered (bounded by 30s). Safe to call twice.
func (b *Backend) Drain() error {
	b.mu.Lock()
	subs := b.subs
	b.subs = nil
	b.mu.Unlock()
	var errs []error
	var waits []<-chan nats.SubStatus
	for _, s := range subs {
		closed := s.StatusChanged(nats.SubscriptionClosed)
		if err := s.Drain(); err != nil {
			if !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
				errs = append(errs, err)
			}
			continue
		}
		waits = append(waits, closed)
	}
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for _, w := range waits {
		select {
		case <-w:
		case <-timeout.C:
			return errors.Join(append(errs, errors.New("backend: drain timed out"))...)
		}
	}
	return errors.Join(errs...)
}

func decodeEvent(m *nats.Msg, e *Event) error {
	pe, err := protocol.DecodeEvent(m.Data)
	if err != nil {
		return err
	}
	e.APIGatewayWebsocketProxyRequest, e.Switchboard, e.Subject = pe.APIGatewayWebsocketProxyRequest, pe.Switchboard, m.Subject
	return nil
}

// wantsReply reports whether m is a request (a two-way route, $connect):
// one-way messages may carry a reply subject that expects nothing.
func wantsReply(m *nats.Msg) bool {
	return m.Reply != "" && m.Header.Get(HeaderOneWay) != "true"
}
