package relay

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/service"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

func newTestService(t *testing.T, cfg Config) *Service {
	t.Helper()
	ns := testenv.StartNATS(t)
	s, err := New(cfg, Deps{NC: ns.Connect(t), Logger: slog.New(slog.DiscardHandler),
		Call: func(context.Context, *nats.Msg) (*nats.Msg, error) { return nil, conn.ErrGone },
		Resume: func(edge.RemoteAsk, func(*edge.Conn) error, net.Conn) (edge.RelayedResume, error) {
			return edge.RelayedResume{}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConfigRefusesANegativePipeBound(t *testing.T) {
	if err := (Config{MaxPipes: -1}).ValidateSettings(); err == nil {
		t.Fatal("-relay-max-pipes -1 accepted")
	}
	if _, err := New(Config{NodeID: "a.b"}, Deps{}); err == nil {
		t.Fatal("a node ID with a dot accepted: it would be two subject tokens")
	}
}

func TestPipesAreBoundedAndEndWithTheService(t *testing.T) {
	s := newTestService(t, Config{NodeID: "n1", MaxPipes: 2, Keepalive: testKeepalive})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	var pipes []*pipe
	for range 2 {
		p, err := s.openPipe()
		if err != nil {
			t.Fatal(err)
		}
		pipes = append(pipes, p)
	}
	if _, err := s.openPipe(); !errors.Is(err, errFull) || !errors.Is(err, conn.ErrUnavailable) {
		t.Fatalf("a third pipe with -relay-max-pipes 2: %v, want unavailable", err)
	}
	// One ends: its place is free again.
	pipes[0].end("test")
	p, err := s.openPipe()
	if err != nil {
		t.Fatalf("after one ended: %v", err)
	}
	pipes = append(pipes[1:], p)
	// A started pipe ends with the service, closing the socket it carries.
	outer, inner := pipeSockets(t)
	defer outer.Close()
	pipes[0].setPeer("switchboard.relay.n2.x")
	pipes[0].start(inner, nil, &s.wg)
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := s.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := <-ran; err != nil && !errors.Is(err, service.ErrRunTwice) { // Shutdown may come before Run starts
		t.Fatal(err)
	}
	for _, p := range pipes {
		ended(t, p, time.Second)
	}
	if _, err := s.openPipe(); !errors.Is(err, errStopped) {
		t.Fatalf("a pipe after Shutdown: %v, want refused", err)
	}
}
