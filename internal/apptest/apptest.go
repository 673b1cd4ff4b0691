// Package apptest starts a real single-node Switchboard gateway inside a
// test (the same code as `go run ./cmd/edge`, every listener on a random
// loopback port, NATS embedded) and drives real WebSocket clients against
// it. The examples' tests and the docs' examples (internal/doctest) use it.
package apptest

import (
	"github.com/switchboardgw/switchboard/internal/testenv"

	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboardgw/switchboard/internal/app"
)

// Deadline bounds every wait: generous, because CI machines are slow and shared.
const Deadline = 30 * time.Second

// Edge is a running gateway owned by one test.
type Edge struct {
	*app.Edge
}

// WSURL is the URL WebSocket clients dial.
func (e Edge) WSURL() string { return "ws://" + e.WSAddr() + "/" }

// APIURL is the @connections endpoint with a stage prefix, as the AWS SDK
// is given it.
func (e Edge) APIURL() string { return "http://" + e.APIAddr() + "/prod" }

// StartEdge starts a gateway with the edge's defaults plus args (edge flags,
// e.g. "-two-way-routes", "rooms") and stops it when the test ends.
func StartEdge(t testing.TB, args ...string) Edge {
	t.Helper()
	var cfg app.EdgeConfig
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	base := []string{"-listen", "127.0.0.1:0", "-api-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0",
		"-nats-embedded-listen", "127.0.0.1:0", "-drain-window", "50ms"}
	// The environment is ignored so a developer's SWITCHBOARD_* settings cannot change the test.
	if err := app.Parse(fs, append(base, args...), func(string) string { return "" }); err != nil {
		t.Fatalf("edge flags: %v", err)
	}
	e, err := app.NewEdge(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("new edge: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge run: %v", err)
		}
	})
	Eventually(t, "gateway ready", func() bool {
		resp, err := http.Get("http://" + e.AdminAddr() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return Edge{e}
}

// Eventually polls cond until it holds, failing the test after Deadline.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, what, cond)
}

// Dial opens a WebSocket to url; the connection is closed when the test ends.
func Dial(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	c, status, err := TryDial(url)
	if err != nil {
		t.Fatalf("dial %s: status %d: %v", url, status, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// TryDial dials url and reports the HTTP status of the handshake's answer
// (101 on success), so a test can see a $connect denial.
func TryDial(url string) (*websocket.Conn, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), Deadline)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil)
	status := 0
	if resp != nil {
		status = resp.StatusCode
		if resp.Body != nil {
			resp.Body.Close()
		}
	}
	return c, status, err
}

// Send writes one text message.
func Send(t testing.TB, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Deadline)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
}

// Read returns the next text message.
func Read(t testing.TB, c *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Deadline)
	defer cancel()
	typ, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("got a %v frame %q, want text", typ, data)
	}
	return string(data)
}

// ReadJSON decodes the next text message into v.
func ReadJSON(t testing.TB, c *websocket.Conn, v any) {
	t.Helper()
	s := Read(t, c)
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("message %q is not JSON: %v", s, err)
	}
}
