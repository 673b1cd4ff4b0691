package nodecmd_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/nodecmd"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// Many callers at once share one reply subscription: each gets the reply
// to its own command, also when replies to calls that gave up arrive
// meanwhile, and its payload is its own.
func TestConcurrentCallsEachGetTheirOwnReply(t *testing.T) {
	r := newRig(t)
	node := "replies-1"
	r.lease(t, node, true)
	late := make(chan struct{}) // closed once the late calls gave up
	srv, err := nodecmd.NewServer(nodecmd.ServerConfig{Node: node}, nodecmd.ServerDeps{NC: r.nt.Connect(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Handle(nodecmd.Lane{Name: "test", Workers: 8, Timeout: 2 * callTimeout, Handlers: map[string]nodecmd.Handler{
		"echo": func(_ context.Context, req, reply *nats.Msg) error {
			reply.Data = append([]byte("echo "), req.Header.Get(nodecmd.HdrID)...)
			return nil
		},
		// Answers only after the caller gave up: a late reply.
		"late": func(ctx context.Context, _, _ *nats.Msg) error {
			select {
			case <-late:
			case <-ctx.Done():
			}
			return nil
		},
	}}); err != nil {
		t.Fatal(err)
	}
	runServer(t, srv)

	var wg, lateCalls sync.WaitGroup
	for range 3 {
		lateCalls.Go(func() {
			err := r.call(t, node, "late")
			if !errors.Is(err, conn.ErrUnavailable) {
				t.Errorf("a call answered too late: %v, want unavailable (the owner's lease is held)", err)
			}
		})
	}
	// Their replies go out while the others call.
	go func() { lateCalls.Wait(); close(late) }()
	errs := make(chan error, 64)
	for range 16 {
		wg.Go(func() {
			for range 40 {
				id := conn.NewID()
				reply, err := r.caller.Call(t.Context(), node, nodecmd.NewRequest("echo", id))
				switch {
				case err != nil:
					errs <- err
					return
				case string(reply.Data) != "echo "+id:
					errs <- fmt.Errorf("call for %s got %q", id, reply.Data)
					return
				}
			}
		})
	}
	wg.Wait()
	lateCalls.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Later calls still get their own.
	for range 10 {
		id := conn.NewID()
		reply, err := r.caller.Call(t.Context(), node, nodecmd.NewRequest("echo", id))
		if err != nil || string(reply.Data) != "echo "+id {
			t.Fatalf("a call after late replies: %q, %v", replyData(reply), err)
		}
	}
}

func replyData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}

// A caller whose context ends gets its error at once, as with nats.go's
// own requests; a context done already sends nothing.
func TestCallEndsWithItsContext(t *testing.T) {
	r := newRig(t)
	node := "ctx-1"
	r.lease(t, node, true)
	r.owner(t, node)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := r.caller.Call(ctx, node, nodecmd.NewRequest("ping", conn.NewID())); !errors.Is(err, context.Canceled) {
		t.Fatalf("call with a canceled context: %v", err)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.caller.Call(ctx, node, nodecmd.NewRequest("slow", conn.NewID()))
	if !errors.Is(err, conn.ErrUnavailable) || time.Since(start) > callTimeout {
		t.Fatalf("call with a short deadline: %v after %v, want unavailable before the client's timeout", err, time.Since(start))
	}
	if err := r.call(t, node, "ping"); err != nil {
		t.Fatalf("a call after: %v", err)
	}
}

// A Now handler answers as the command arrives, with no worker free; one
// that cannot (ok false) leaves the command to the lane's Handler; a Now
// handler without a Handler is refused.
func TestNowHandlersAnswerWithoutAWorker(t *testing.T) {
	nt := testenv.StartNATS(t)
	nc := nt.Connect(t)
	node := "now-1"
	srv, err := nodecmd.NewServer(nodecmd.ServerConfig{Node: node}, nodecmd.ServerDeps{NC: nt.Connect(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Handle(nodecmd.Lane{Name: "bad", Handlers: map[string]nodecmd.Handler{"x": nil},
		Now: map[string]nodecmd.NowHandler{"y": func(*nats.Msg, *nats.Msg) (bool, error) { return true, nil }}}); err == nil {
		t.Fatal("a Now handler without a Handler was accepted")
	}
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{}, 1)
	var mu sync.Mutex
	now := true
	if err := srv.Handle(nodecmd.Lane{Name: "conn", Workers: 1, Handlers: map[string]nodecmd.Handler{
		"block": func(context.Context, *nats.Msg, *nats.Msg) error {
			started <- struct{}{}
			<-release
			return nil
		},
		"post": func(_ context.Context, _, reply *nats.Msg) error {
			reply.Data = []byte("worker")
			return nil
		},
	}, Now: map[string]nodecmd.NowHandler{
		"post": func(_, reply *nats.Msg) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			if !now {
				return false, nil
			}
			reply.Data = []byte("now")
			return true, conn.ErrGone
		},
	}}); err != nil {
		t.Fatal(err)
	}
	runServer(t, srv)
	block := nodecmd.NewRequest("block", conn.NewID())
	block.Subject = nodecmd.Subject(nodecmd.DefaultPrefix, node)
	go func() { _, _ = nc.RequestMsg(block, testenv.WaitFor) }()
	<-started // the lane's only worker is taken
	m := nodecmd.NewRequest("post", conn.NewID())
	m.Subject = nodecmd.Subject(nodecmd.DefaultPrefix, node)
	reply, err := nc.RequestMsg(m, testenv.WaitFor)
	if err != nil {
		t.Fatal(err)
	}
	if st := reply.Header.Get(nodecmd.HdrStatus); st != "gone" || string(reply.Data) != "now" {
		t.Fatalf("post with the worker busy: %q %q, want gone from the Now handler", st, reply.Data)
	}
	mu.Lock()
	now = false
	mu.Unlock()
	release <- struct{}{} // frees the worker (the deferred close ends the test's)
	m = nodecmd.NewRequest("post", conn.NewID())
	m.Subject = nodecmd.Subject(nodecmd.DefaultPrefix, node)
	if reply, err = nc.RequestMsg(m, testenv.WaitFor); err != nil {
		t.Fatal(err)
	}
	if st := reply.Header.Get(nodecmd.HdrStatus); st != "ok" || string(reply.Data) != "worker" {
		t.Fatalf("post the Now handler declined: %q %q, want ok from the worker", st, reply.Data)
	}
}
