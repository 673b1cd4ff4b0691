package baseline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboardgw/switchboard/bench/connectd"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

var waitFor = testenv.Eventually

func TestEchoesEachMessageWithOneGoroutinePerConnectionAndClosesOnShutdown(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := New(Config{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0"},
		Deps{Logger: slog.New(slog.DiscardHandler), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()

	url := "ws://" + s.Addr().String() + "/"
	const n = 20
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	waitFor(t, "every connection counted open", func() bool { return testutil.ToFloat64(s.open) == n })
	withConns := runtime.NumGoroutine()

	for _, mt := range []int{websocket.TextMessage, websocket.BinaryMessage} {
		if err := conns[0].WriteMessage(mt, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		got, body, err := conns[0].ReadMessage()
		if err != nil || got != mt || string(body) != "hello" {
			t.Fatalf("echo: type %d body %q err %v; want type %d hello", got, body, err, mt)
		}
	}
	// Counted once the echo is written: the client may read it first.
	waitFor(t, "both messages counted", func() bool { return testutil.ToFloat64(s.messages) == 2 })

	// Closing one client ends its handler goroutine.
	_ = conns[n-1].WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	waitFor(t, "the closed connection to leave", func() bool { return testutil.ToFloat64(s.open) == n-1 })
	waitFor(t, "its goroutine to exit", func() bool { return runtime.NumGoroutine() < withConns })

	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	_, _, err = conns[0].ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Errorf("after Shutdown a client read %v, want close 1001", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if testutil.ToFloat64(s.open) != 0 {
		t.Errorf("open gauge %v after shutdown", testutil.ToFloat64(s.open))
	}
	if _, _, err := websocket.DefaultDialer.Dial(url, nil); err == nil {
		t.Error("dialled the server after Shutdown")
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", problems, err)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, ok := range []Config{{}, {ConnectURL: "http://127.0.0.1:9/c"}, {ConnectURL: "https://auth.example/c"}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	for name, c := range map[string]Config{
		"bad listen":           {Listen: "nowhere"},
		"negative buffer":      {ReadBufferSize: -1},
		"connect URL not http": {ConnectURL: "ftp://127.0.0.1/connect"},
		"connect URL no host":  {ConnectURL: "http:///connect"},
		"connect URL relative": {ConnectURL: "/connect"},
	} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

// startWithBackend runs a server that asks connectURL before each upgrade.
func startWithBackend(t *testing.T, connectURL string) *Server {
	t.Helper()
	s, err := New(Config{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", ConnectURL: connectURL},
		Deps{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

func TestAsksTheConnectBackendBeforeEachUpgrade(t *testing.T) {
	// connectd's own handler: the answer Centrifugo's proxy gets.
	var calls atomic.Int64
	var bad atomic.Value // the first malformed connect request, if any
	allow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var req connectRequest
		err := json.NewDecoder(r.Body).Decode(&req)
		if err != nil || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
			req.Transport != "websocket" || req.Client == "" {
			bad.CompareAndSwap(nil, fmt.Sprintf("%s %s %+v %v", r.Method, r.Header.Get("Content-Type"), req, err))
		}
		r.Body = io.NopCloser(strings.NewReader(""))
		connectd.ProxyHandler().ServeHTTP(w, r)
	}))
	defer allow.Close()
	s := startWithBackend(t, allow.URL+"/baseline/connect")
	url := "ws://" + s.Addr().String() + "/"
	conns := make([]*websocket.Conn, 3)
	for i := range conns {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatalf("allowed connection: %v", err)
		}
		defer c.Close()
		conns[i] = c
	}
	if err := conns[2].WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, body, err := conns[2].ReadMessage(); err != nil || string(body) != "hi" {
		t.Fatalf("echo on an allowed connection: %q, %v", body, err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d connect calls for 3 connections", n)
	}
	if b := bad.Load(); b != nil {
		t.Errorf("connect request %v: want a JSON POST of a websocket client", b)
	}
	waitFor(t, "the connections counted open", func() bool { return testutil.ToFloat64(s.open) == 3 })
	// A plain GET is no upgrade: refused by gorilla without a call.
	resp, err := http.Get("http://" + s.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || calls.Load() != 3 {
		t.Errorf("plain GET: %s after %d calls; want 400 and no call", resp.Status, calls.Load())
	}
}

func TestRefusesTheUpgradeUnlessTheBackendAllows(t *testing.T) {
	reply := func(status int, body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // its port now refuses connections
	for _, c := range []struct {
		name, url string
		want      int
	}{
		{"error", reply(200, `{"error":{"code":101,"message":"unauthorized"}}`), http.StatusForbidden},
		{"disconnect", reply(200, `{"disconnect":{"code":4500,"reason":"bye"}}`), http.StatusForbidden},
		{"no result", reply(200, `{}`), http.StatusForbidden},
		{"backend down", down.URL, http.StatusBadGateway},
		{"backend failing", reply(500, "oops"), http.StatusBadGateway},
		{"no connect reply", reply(200, "<html>"), http.StatusBadGateway},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := startWithBackend(t, c.url)
			conn, resp, err := websocket.DefaultDialer.Dial("ws://"+s.Addr().String()+"/", nil)
			if err == nil {
				conn.Close()
				t.Fatal("the upgrade went through")
			}
			if resp == nil || resp.StatusCode != c.want {
				t.Fatalf("dial: %v, response %v; want status %d", err, resp, c.want)
			}
			if n := testutil.ToFloat64(s.accepted); n != 0 {
				t.Errorf("%v connections accepted", n)
			}
		})
	}
}
