package lambdaadapter_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/lifecycle"
	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/backend"
	"github.com/switchboardgw/switchboard/pkg/lambdaadapter"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

const deadline = 30 * time.Second

// chatLambda is written exactly as for AWS: it knows nothing of Switchboard.
type chatLambda struct {
	mu          sync.Mutex
	disconnects []events.APIGatewayWebsocketProxyRequest
	requestIDs  []string
}

func (c *chatLambda) Handle(ctx context.Context, req events.APIGatewayWebsocketProxyRequest) (events.APIGatewayProxyResponse, error) {
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		c.mu.Lock()
		c.requestIDs = append(c.requestIDs, lc.AwsRequestID)
		c.mu.Unlock()
	}
	switch req.RequestContext.RouteKey {
	case "$connect":
		if req.QueryStringParameters["token"] != "letmein" {
			return events.APIGatewayProxyResponse{StatusCode: 403, Body: "Forbidden"}, nil
		}
		proto := strings.Split(req.Headers["Sec-WebSocket-Protocol"], ",")[0]
		return events.APIGatewayProxyResponse{StatusCode: 200, Headers: map[string]string{"Sec-WebSocket-Protocol": proto}}, nil
	case "$disconnect":
		c.mu.Lock()
		c.disconnects = append(c.disconnects, req)
		c.mu.Unlock()
		return events.APIGatewayProxyResponse{StatusCode: 200}, nil
	case "sendmessage":
		return events.APIGatewayProxyResponse{StatusCode: 200, Body: "got " + req.Body + " from " + req.RequestContext.ConnectionID}, nil
	case "crash":
		return events.APIGatewayProxyResponse{}, errors.New("boom")
	case "notfound":
		return events.APIGatewayProxyResponse{StatusCode: 404}, nil
	}
	// $default: echo binary back as binary.
	return events.APIGatewayProxyResponse{StatusCode: 200, Body: req.Body, IsBase64Encoded: req.IsBase64Encoded}, nil
}

func setup(t *testing.T, handler any, opts lambdaadapter.Options) *lifecycle.Lifecycle {
	t.Helper()
	n := testenv.StartNATS(t)
	a, err := lambdaadapter.New(n.Connect(t), handler, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Drain() })
	l, err := lifecycle.New(lifecycle.Config{TwoWayRoutes: []string{"*"}, Prefix: opts.Prefix}, n.Connect(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, "lifecycle", l)
	return l
}

func meta(query string) *lifecycle.ConnMeta {
	return &lifecycle.ConnMeta{
		ID: conn.NewID(), ConnectedAt: time.Now(), SourceIP: "192.0.2.5", UserAgent: "ua",
		Headers: []lifecycle.Pair{{Name: "Sec-WebSocket-Protocol", Value: "graphql-ws,other"}},
		Query:   lifecycle.ParseQuery(query), Subprotocols: []string{"graphql-ws", "other"},
	}
}

func call(t *testing.T, l *lifecycle.Lifecycle, m *lifecycle.ConnMeta, payload []byte, binary bool) string {
	t.Helper()
	got := make(chan string, 1)
	l.Message(m, payload, binary, func(data []byte, bin bool) { got <- fmt.Sprintf("%v:%s", bin, data) })
	select {
	case s := <-got:
		return s
	case <-time.After(deadline):
		t.Fatalf("no reply to %q", payload)
		return ""
	}
}

func TestLambdaHandlerRunsUnchanged(t *testing.T) {
	h := &chatLambda{}
	l := setup(t, h.Handle, lambdaadapter.Options{Prefix: "chat"})

	d, err := l.Authorize(context.Background(), meta("token=letmein"))
	if err != nil {
		t.Fatal(err)
	}
	if !d.Allow || d.Header.Get("Sec-WebSocket-Protocol") != "graphql-ws" {
		t.Fatalf("allowed $connect: %+v", d)
	}
	d, err = l.Authorize(context.Background(), meta("token=wrong"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Allow || d.Status != 403 || string(d.Body) != "Forbidden" {
		t.Fatalf("denied $connect: %+v", d)
	}

	m := meta("")
	if got := call(t, l, m, []byte(`{"action":"sendmessage","text":"hi"}`), false); got != `false:got {"action":"sendmessage","text":"hi"} from `+m.ID {
		t.Fatalf("two-way sendmessage: %q", got)
	}
	if got := call(t, l, m, []byte{1, 2, 3}, true); got != "true:\x01\x02\x03" {
		t.Fatalf("binary $default: %q", got)
	}
	for _, route := range []string{"crash", "notfound"} {
		if got := call(t, l, m, []byte(`{"action":"`+route+`"}`), false); !strings.Contains(got, "Internal server error") {
			t.Fatalf("%s: %q", route, got)
		}
	}

	if err := l.Disconnected(m, 1001, "going away"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the $disconnect invocation", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.disconnects) == 1
	})
	dc := h.disconnects[0].RequestContext
	if dc.ConnectionID != m.ID || dc.EventType != "DISCONNECT" || dc.DisconnectStatusCode != 1001 || *dc.DisconnectReason != "going away" {
		t.Fatalf("$disconnect event %+v", dc)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range h.requestIDs {
		if id == "" {
			t.Fatal("lambdacontext without AwsRequestID")
		}
	}
}

func TestOtherLambdaSignatures(t *testing.T) {
	got := make(chan string, 1)
	// func(ctx, event) error: no response; $connect allows.
	handler := func(_ context.Context, req events.APIGatewayWebsocketProxyRequest) error {
		if req.RequestContext.EventType == "MESSAGE" {
			got <- req.Body
		}
		return nil
	}
	l := setup(t, handler, lambdaadapter.Options{Routes: []string{"$default"}})
	d, err := l.Authorize(context.Background(), meta(""))
	if err != nil || !d.Allow {
		t.Fatalf("%+v %v", d, err)
	}
	l.Message(meta(""), []byte("plain text"), false, nil)
	select {
	case body := <-got:
		if body != "plain text" {
			t.Fatalf("body %q", body)
		}
	case <-time.After(deadline):
		t.Fatal("handler not invoked")
	}
}

func TestNewRejectsNonFunctions(t *testing.T) {
	n := testenv.StartNATS(t)
	if _, err := lambdaadapter.New(n.Connect(t), "not a func", lambdaadapter.Options{}); err == nil {
		t.Fatal("want an error")
	}
}

func TestNewRejectsRouteKeysTheGatewayNeverRoutesTo(t *testing.T) {
	n := testenv.StartNATS(t)
	handler := func(context.Context, events.APIGatewayWebsocketProxyRequest) (events.APIGatewayProxyResponse, error) {
		return events.APIGatewayProxyResponse{}, nil
	}
	for _, key := range []string{"", "a.b", "chat.*", ">", "$connect", "_default", "with space", "caf\xc3\xa9"} {
		_, err := lambdaadapter.New(n.Connect(t), handler, lambdaadapter.Options{Routes: []string{"ok", key}})
		if !errors.Is(err, backend.ErrInvalidRouteKey) || !strings.Contains(err.Error(), fmt.Sprintf("%q", key)) {
			t.Errorf("Routes %q: %v, want ErrInvalidRouteKey naming it", key, err)
		}
	}
	if _, err := lambdaadapter.New(n.Connect(t), handler, lambdaadapter.Options{Prefix: "sb.*"}); err == nil || !strings.Contains(err.Error(), "subject prefix") {
		t.Errorf("prefix sb.*: %v, want a subject prefix error", err)
	}
}

func TestResumeIsTheRouteKeyResumeWhenAskedFor(t *testing.T) {
	got := make(chan events.APIGatewayWebsocketProxyRequest, 1)
	handler := func(_ context.Context, req events.APIGatewayWebsocketProxyRequest) error {
		got <- req
		return nil
	}
	l := setup(t, handler, lambdaadapter.Options{Prefix: "rs", Resume: true})
	m := meta("")
	if err := l.Resumed(m, 2140*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	select {
	case req := <-got:
		rc := req.RequestContext
		if rc.RouteKey != "$resume" || rc.EventType != "RESUME" || rc.ConnectionID != m.ID {
			t.Fatalf("RESUME invocation %+v", rc)
		}
	case <-time.After(deadline):
		t.Fatal("handler not invoked for RESUME")
	}
}

func TestResumeIsNotDeliveredByDefault(t *testing.T) {
	// An unchanged AWS handler would take "$resume" for a message: without
	// Options.Resume the adapter does not even subscribe.
	n := testenv.StartNATS(t)
	handler := func(context.Context, events.APIGatewayWebsocketProxyRequest) error {
		t.Error("handler invoked for RESUME")
		return nil
	}
	a, err := lambdaadapter.New(n.Connect(t), handler, lambdaadapter.Options{Prefix: "rs"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Drain() })
	_, err = n.Connect(t).Request("rs."+protocol.SuffixEventResume, []byte(`{}`), deadline)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request to the RESUME subject: %v, want no responders", err)
	}
}
