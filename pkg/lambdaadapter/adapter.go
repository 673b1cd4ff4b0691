// Package lambdaadapter runs an unchanged AWS Lambda WebSocket handler as a
// Switchboard backend over NATS. The handler is any function lambda.Start
// accepts, typically
//
//	func(ctx context.Context, req events.APIGatewayWebsocketProxyRequest) (events.APIGatewayProxyResponse, error)
//
// It is invoked, as on AWS, for $connect (its statusCode decides: ≥ 300
// rejects with that status), for $disconnect and for every message route.
// On a two-way route the response body is sent back to the client. CONNECT
// notifications of established connections (<prefix>.event.connect) are
// not delivered, since AWS has no such invocation: the handler already saw
// $connect. Nor are RESUME events (docs/resume.md) unless Options.Resume
// asks for them: an unchanged handler would take the unknown route key
// "$resume" for a message.
package lambdaadapter

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/pkg/backend"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// Options configures an Adapter. The zero value is valid.
type Options struct {
	// Prefix is the gateway's subject prefix. Default "switchboard".
	Prefix string
	// Queue is the queue group of every subscription. Default "switchboard-lambda".
	Queue string
	// Routes limits the message routes handled (route keys, "$default"
	// included). Default: every route (<prefix>.route.>).
	Routes []string
	// NoConnect: do not answer $connect (another backend does). Default false.
	NoConnect bool
	// Resume: invoke the handler for RESUME events too, with route key
	// "$resume" (a detached connection came back with the same ID; no
	// $disconnect or second $connect is sent for it). Its result is
	// ignored. Default false: they are not delivered.
	Resume bool
	// Logger receives handler errors. Default: discard.
	Logger *slog.Logger
}

// Adapter invokes a Lambda handler for Switchboard's requests and events.
type Adapter struct {
	b   *backend.Backend
	h   lambda.Handler
	log *slog.Logger
}

// response is what the adapter reads from a handler's result: an
// events.APIGatewayProxyResponse, or anything JSON with those fields.
type response struct {
	StatusCode      int    `json:"statusCode"`
	Body            string `json:"body"`
	IsBase64Encoded bool   `json:"isBase64Encoded"`
}

// New wraps handler, which must be a function with a signature lambda.Start
// accepts.
func New(nc *nats.Conn, handler any, opts Options) (*Adapter, error) {
	if handler == nil || reflect.TypeOf(handler).Kind() != reflect.Func {
		return nil, errors.New("lambdaadapter: handler must be a function")
	}
	if opts.Queue == "" {
		opts.Queue = "switchboard-lambda"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	toks := make([]string, 0, len(opts.Routes))
	for _, r := range opts.Routes {
		tok := protocol.RouteToken(r)
		if tok == "" {
			return nil, fmt.Errorf("lambdaadapter: %w: %q", backend.ErrInvalidRouteKey, r)
		}
		toks = append(toks, tok)
	}
	b, err := backend.New(nc, backend.Options{Prefix: opts.Prefix, Queue: opts.Queue, Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("lambdaadapter: %w", err)
	}
	a := &Adapter{b: b, h: lambda.NewHandler(handler), log: opts.Logger}
	if !opts.NoConnect {
		b.HandleRaw(protocol.SuffixConnect, a.onConnect)
	}
	b.HandleRaw(protocol.SuffixEventDisconnect, a.onEvent)
	if opts.Resume {
		b.HandleRaw(protocol.SuffixEventResume, a.onEvent)
	}
	if len(toks) == 0 {
		b.HandleRaw(protocol.SuffixAllRoutes, a.onRoute)
	}
	for _, tok := range toks {
		b.HandleRaw(protocol.SuffixRoute+tok, a.onRoute)
	}
	return a, nil
}

// invoke runs the handler on the raw event, as the Lambda runtime would:
// the event JSON is the payload, the event ID the request ID.
func (a *Adapter) invoke(ctx context.Context, m *nats.Msg) ([]byte, error) {
	ctx = lambdacontext.NewContext(ctx, &lambdacontext.LambdaContext{AwsRequestID: m.Header.Get(protocol.HeaderMsgID)})
	return a.h.Invoke(ctx, m.Data)
}

func (a *Adapter) onConnect(ctx context.Context, m *nats.Msg) {
	out, err := a.invoke(ctx, m)
	if err != nil {
		// The Lambda failed: API Gateway answers the client 500.
		a.log.Warn("lambdaadapter: $connect handler failed", "err", err)
		out = []byte(`{"statusCode":500}`)
	}
	// The gateway reads the Lambda response shape directly (docs/protocol.md).
	if rerr := m.Respond(out); rerr != nil {
		a.log.Warn("lambdaadapter: $connect reply failed", "err", rerr)
	}
}

func (a *Adapter) onEvent(ctx context.Context, m *nats.Msg) {
	if _, err := a.invoke(ctx, m); err != nil {
		a.log.Warn("lambdaadapter: handler failed", "subject", m.Subject, "err", err)
	}
}

func (a *Adapter) onRoute(ctx context.Context, m *nats.Msg) {
	out, err := a.invoke(ctx, m)
	var body []byte
	var binary bool
	if err == nil {
		body, binary, err = replyBody(out)
	}
	if err != nil {
		a.log.Warn("lambdaadapter: route handler failed", "subject", m.Subject, "err", err)
	}
	if m.Reply == "" || m.Header.Get(backend.HeaderOneWay) == "true" {
		return // one-way: as with AWS_PROXY without a route response, the body is dropped
	}
	r := nats.NewMsg(m.Reply)
	if err != nil {
		r.Header.Set(backend.HeaderError, "handler failed")
	} else {
		r.Data = body
		if binary {
			r.Header.Set(backend.HeaderBinary, "true")
		}
	}
	if rerr := m.RespondMsg(r); rerr != nil {
		a.log.Warn("lambdaadapter: reply failed", "subject", m.Subject, "err", rerr)
	}
}

// replyBody extracts the body a two-way route sends to the client. A
// non-2xx statusCode is a failure, as API Gateway treats it. A base64 body
// is sent as a binary frame.
func replyBody(out []byte) (body []byte, binary bool, err error) {
	if len(out) == 0 || string(out) == "null" {
		return nil, false, nil
	}
	var r response
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, false, fmt.Errorf("lambdaadapter: handler result is not a proxy response: %w", err)
	}
	if r.StatusCode != 0 && (r.StatusCode < 200 || r.StatusCode > 299) {
		return nil, false, fmt.Errorf("lambdaadapter: handler returned status %d", r.StatusCode)
	}
	if r.IsBase64Encoded {
		body, err = base64.StdEncoding.DecodeString(r.Body)
		return body, true, err
	}
	return []byte(r.Body), false, nil
}

// Start subscribes and waits until the server has the subscriptions.
func (a *Adapter) Start(ctx context.Context) error { return a.b.Start(ctx) }

// Run serves until ctx ends, then drains.
func (a *Adapter) Run(ctx context.Context) error { return a.b.Run(ctx) }

// Drain stops taking requests and waits for running invocations.
func (a *Adapter) Drain() error { return a.b.Drain() }
