package baseline

import (
	"github.com/switchboardgw/switchboard/internal/testenv"

	"context"
	"errors"
	"log/slog"
	"runtime"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for name, c := range map[string]Config{
		"bad listen":      {Listen: "nowhere"},
		"negative buffer": {ReadBufferSize: -1},
	} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}
