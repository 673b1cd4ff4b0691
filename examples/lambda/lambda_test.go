package main

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/coder/websocket"

	"github.com/switchboardgw/switchboard/internal/apptest"
	"github.com/switchboardgw/switchboard/pkg/connections"
)

// startRunner runs the handler through the adapter until the returned stop
// is called (or the test ends).
func startRunner(t *testing.T, e apptest.Edge) (stop func()) {
	t.Helper()
	r, err := newRunner(Config{NATSURL: e.NATSURL()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
	}
	t.Cleanup(stop)
	select {
	case <-r.Ready():
	case err := <-done:
		t.Fatalf("runner stopped before ready: %v", err)
	}
	return stop
}

// setup starts a gateway and points the handler's AWS SDK at its
// @connections API, the one change versus AWS. The table starts empty.
func setup(t *testing.T) apptest.Edge {
	e := apptest.StartEdge(t, "-connect-mode", "required")
	t.Setenv("APIGW_ENDPOINT", e.APIURL())
	table.Lock()
	clear(table.ids)
	table.Unlock()
	return e
}

// dial connects a client and returns its connection ID, as the handler
// stored it on $connect.
func dial(t *testing.T, e apptest.Edge) (*websocket.Conn, string) {
	t.Helper()
	before := scanConnections()
	c := apptest.Dial(t, e.WSURL())
	var id string
	apptest.Eventually(t, "$connect stored the connection", func() bool {
		for _, x := range scanConnections() {
			if !slices.Contains(before, x) {
				id = x
				return true
			}
		}
		return false
	})
	return c, id
}

func TestSendMessageReachesEveryClientThroughTheAWSSDK(t *testing.T) {
	e := setup(t)
	startRunner(t, e)
	a, _ := dial(t, e)
	b, _ := dial(t, e)
	c, _ := dial(t, e)

	apptest.Send(t, a, `{"action":"sendmessage","data":"hello everyone"}`)
	for i, cl := range []*websocket.Conn{a, b, c} {
		if got := apptest.Read(t, cl); got != "hello everyone" {
			t.Fatalf("client %d got %q", i, got)
		}
	}
}

func TestDisconnectRemovesTheConnection(t *testing.T) {
	e := setup(t)
	startRunner(t, e)
	a, idA := dial(t, e)
	_, idB := dial(t, e)
	if err := a.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, "$disconnect deleted the connection", func() bool {
		ids := scanConnections()
		return !slices.Contains(ids, idA) && slices.Contains(ids, idB)
	})
}

// A client whose $disconnect was missed (the handler was down when it
// closed, as a best-effort $disconnect can be lost on AWS) stays in the
// table until a post gets GoneException; the handler then deletes it and
// the others still get the message.
func TestGoneConnectionIsDroppedAfterGoneException(t *testing.T) {
	e := setup(t)
	stop := startRunner(t, e)
	a, idA := dial(t, e)
	b, idB := dial(t, e)
	c, idC := dial(t, e)

	stop() // handler down: c's DISCONNECT reaches nobody
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatal(err)
	}
	api, err := connections.New(e.APIURL(), connections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, "c closed at the gateway", func() bool {
		ok, err := api.Exists(context.Background(), idC)
		return err == nil && !ok
	})
	if !slices.Contains(scanConnections(), idC) {
		t.Fatal("c left the table without a $disconnect: the test no longer covers GoneException")
	}

	startRunner(t, e)
	apptest.Send(t, a, `{"action":"sendmessage","data":"still here?"}`)
	for i, cl := range []*websocket.Conn{a, b} {
		if got := apptest.Read(t, cl); got != "still here?" {
			t.Fatalf("client %d got %q", i, got)
		}
	}
	apptest.Eventually(t, "the gone connection deleted", func() bool {
		ids := scanConnections()
		return !slices.Contains(ids, idC) && slices.Contains(ids, idA) && slices.Contains(ids, idB)
	})
}

func TestDefaultRouteAnswersWithAHintAndConnectionInfo(t *testing.T) {
	e := setup(t)
	startRunner(t, e)
	a, _ := dial(t, e)
	apptest.Send(t, a, `not json`)
	got := apptest.Read(t, a)
	if !strings.HasPrefix(got, "Use the sendmessage route to send a message. Your info: ") || !strings.Contains(got, `"sourceIp":"127.0.0.1"`) {
		t.Fatalf("$default answered %q", got)
	}
}

func TestCallbackEndpointIsBuiltAsOnAWSUnlessOverridden(t *testing.T) {
	rc := events.APIGatewayWebsocketProxyRequestContext{DomainName: "ws.example.com", Stage: "prod"}
	t.Setenv("APIGW_ENDPOINT", "")
	if got := callbackEndpoint(rc); got != "https://ws.example.com/prod" {
		t.Fatalf("without APIGW_ENDPOINT: %q, want AWS's https://{domainName}/{stage}", got)
	}
	t.Setenv("APIGW_ENDPOINT", "http://127.0.0.1:9090/prod")
	if got := callbackEndpoint(rc); got != "http://127.0.0.1:9090/prod" {
		t.Fatalf("with APIGW_ENDPOINT: %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero Config: %v", err)
	}
	for _, c := range []Config{{NATSURL: "::bad"}, {Prefix: "a.*"}} {
		if c.Validate() == nil {
			t.Fatalf("%+v: valid, want an error", c)
		}
	}
}
