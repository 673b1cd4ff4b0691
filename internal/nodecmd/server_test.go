package nodecmd_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/nodecmd"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// request sends a raw request, as another node would, and returns the
// reply's status and message.
func request(t *testing.T, nc *nats.Conn, node, cmd, id string) (status, msg string) {
	t.Helper()
	m := nats.NewMsg(nodecmd.Subject(nodecmd.DefaultPrefix, node))
	m.Header.Set(nodecmd.HdrCommand, cmd)
	m.Header.Set(nodecmd.HdrID, id)
	reply, err := nc.RequestMsg(m, testenv.WaitFor)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return reply.Header.Get(nodecmd.HdrStatus), reply.Header.Get(nodecmd.HdrError)
}

// served counts what the server reports answering.
type served struct {
	mu sync.Mutex
	n  map[string]int // "cmd status"
}

func (s *served) add(cmd, status string) {
	s.mu.Lock()
	s.n[cmd+" "+status]++
	s.mu.Unlock()
}

func (s *served) get(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[key]
}

// A lane whose commands wait (connection commands behind the fence) holds
// up neither the other lanes nor, once its queue is full, its own senders:
// they get "unavailable" at once.
func TestServerLanesAreIndependentAndBounded(t *testing.T) {
	nt := testenv.StartNATS(t)
	nc := nt.Connect(t)
	node := "lanes-1"
	counts := &served{n: map[string]int{}}
	srv, err := nodecmd.NewServer(nodecmd.ServerConfig{Node: node}, nodecmd.ServerDeps{NC: nt.Connect(t), Served: counts.add})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	started := make(chan struct{}, 8)
	if err := srv.Handle(nodecmd.Lane{Name: "waiting", Workers: 1, QueueSize: 1, Handlers: map[string]nodecmd.Handler{
		"wait": func(ctx context.Context, _, _ *nats.Msg) error {
			started <- struct{}{}
			<-release
			return nil
		},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Handle(nodecmd.Lane{Name: "quick", Workers: 1, Handlers: map[string]nodecmd.Handler{
		"echo": func(_ context.Context, req, reply *nats.Msg) error {
			reply.Data = append([]byte("echo "), req.Header.Get(nodecmd.HdrID)...)
			return nil
		},
		"fail": func(context.Context, *nats.Msg, *nats.Msg) error {
			return fmt.Errorf("wrapped: %w", conn.ErrTooManyGroups)
		},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Handle(nodecmd.Lane{Name: "again", Handlers: map[string]nodecmd.Handler{"echo": nil}}); err == nil {
		t.Fatal("a command registered twice was accepted")
	}
	runServer(t, srv)
	if err := srv.Handle(nodecmd.Lane{Name: "late", Handlers: map[string]nodecmd.Handler{"late": nil}}); err == nil {
		t.Fatal("a lane registered after Run was accepted")
	}
	released := sync.OnceFunc(func() { close(release) })
	defer released()

	// One worker and a queue of one: of five commands sent at once, at most
	// two are taken; the others are answered "unavailable" without waiting.
	waiting := make(chan string, 5)
	for range 5 {
		go func() {
			m := nodecmd.NewRequest("wait", conn.NewID())
			m.Subject = nodecmd.Subject(nodecmd.DefaultPrefix, node)
			reply, err := nc.RequestMsg(m, testenv.WaitFor)
			if err != nil {
				waiting <- err.Error()
				return
			}
			waiting <- reply.Header.Get(nodecmd.HdrStatus)
		}()
	}
	<-started
	for range 3 {
		if st := <-waiting; st != "unavailable" {
			t.Fatalf("a command beyond the full queue: %q, want unavailable", st)
		}
	}
	id := conn.NewID()
	for _, c := range []struct{ cmd, id, status, msg string }{
		{"echo", id, "ok", ""},
		{"fail", id, "too_many_groups", "wrapped: connection is in too many groups"},
		{"nope", id, "error", `unknown command "nope"`},
		{"echo", "not an id", "invalid_id", "invalid connection id"},
		{"nope\r\nX-Injected: 1", "a.b", "invalid_id", "invalid connection id"},
	} {
		st, msg := request(t, nc, node, c.cmd, c.id)
		if st != c.status || msg != c.msg {
			t.Errorf("%q for %q: %q %q, want %q %q", c.cmd, c.id, st, msg, c.status, c.msg)
		}
	}
	released()
	oks := 0
	for range 2 {
		switch st := <-waiting; st {
		case "ok":
			oks++
		case "unavailable":
		default:
			t.Fatalf("a waiting command got %q", st)
		}
	}
	if oks == 0 {
		t.Fatal("the command in the worker was not answered ok")
	}
	if counts.get("unknown error") != 1 || counts.get("unknown invalid_id") != 1 || counts.get("echo ok") != 1 || counts.get("wait unavailable") < 1 {
		t.Fatalf("served counts %v", counts.n)
	}
}

// Shutdown answers what already arrived, then senders get "no responders"
// at once; nothing the server started outlives it, and a server that never
// ran leaves nothing either.
func TestServerShutdownAnswersWhatArrivedAndLeavesNothing(t *testing.T) {
	nt := testenv.StartNATS(t)
	nc := nt.Connect(t)
	srvNC := nt.Connect(t)
	// The first request starts the client's reply subscription: not ours.
	if _, err := nc.Request("warm-up", nil, testenv.WaitFor); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()

	idle, err := nodecmd.NewServer(nodecmd.ServerConfig{Node: "never-run"}, nodecmd.ServerDeps{NC: srvNC})
	if err != nil {
		t.Fatal(err)
	}
	if err := idle.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := idle.Run(t.Context()); err == nil {
		t.Fatal("Run after Shutdown succeeded")
	}

	srv, err := nodecmd.NewServer(nodecmd.ServerConfig{Node: "drain-1"}, nodecmd.ServerDeps{NC: srvNC})
	if err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	inside := make(chan struct{}, 16)
	if err := srv.Handle(nodecmd.Lane{Name: "gated", Workers: 1, QueueSize: 16, Handlers: map[string]nodecmd.Handler{
		"gated": func(context.Context, *nats.Msg, *nats.Msg) error {
			inside <- struct{}{}
			<-gate
			return nil
		},
	}}); err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(context.Background()) }()
	<-srv.Ready()
	answers := make(chan string, 3)
	for range 3 {
		go func() {
			st, _ := request(t, nc, "drain-1", "gated", conn.NewID())
			answers <- st
		}()
	}
	<-inside
	testenv.Eventually(t, "all three commands to arrive", func() bool {
		return srvNC.Stats().InMsgs >= 3
	})
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	testenv.Eventually(t, "the subscription to end", func() bool { return srvNC.NumSubscriptions() == 0 })
	m := nodecmd.NewRequest("gated", conn.NewID())
	m.Subject = nodecmd.Subject(nodecmd.DefaultPrefix, "drain-1")
	if _, err := nc.RequestMsg(m, testenv.WaitFor); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("a command after Shutdown: %v, want no responders", err)
	}
	close(gate)
	for range 3 {
		if st := <-answers; st != "ok" {
			t.Fatalf("a command that arrived before Shutdown got %q", st)
		}
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the server's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

func TestServerConfigIsChecked(t *testing.T) {
	nc := testenv.StartNATS(t).Connect(t)
	for _, cfg := range []nodecmd.ServerConfig{{}, {Node: "a.b"}, {Node: "ok", Prefix: "bad prefix"}} {
		if _, err := nodecmd.NewServer(cfg, nodecmd.ServerDeps{NC: nc}); err == nil || !strings.Contains(err.Error(), "nodecmd") {
			t.Errorf("NewServer(%+v) = %v, want an error", cfg, err)
		}
	}
	if _, err := nodecmd.NewServer(nodecmd.ServerConfig{Node: "ok"}, nodecmd.ServerDeps{}); err == nil {
		t.Error("NewServer without NATS succeeded")
	}
	if _, err := nodecmd.NewClient(nodecmd.ClientConfig{Timeout: -time.Second}, nc, nil); err == nil {
		t.Error("NewClient with a negative timeout succeeded")
	}
}
