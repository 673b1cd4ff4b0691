package nodecmd_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/nodecmd"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// directOwner runs a server for node with a direct listener and an "echo"
// command; handled counts the commands its handler ran.
func directOwner(t *testing.T, r *rig, node string, handled *atomic.Int64) *nodecmd.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := nodecmd.NewServer(nodecmd.ServerConfig{Node: node}, nodecmd.ServerDeps{NC: r.nt.Connect(t), Direct: ln})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Handle(nodecmd.Lane{Name: "test", Workers: 4, Handlers: map[string]nodecmd.Handler{
		"echo": func(_ context.Context, req, reply *nats.Msg) error {
			handled.Add(1)
			reply.Data = append([]byte("echo "), req.Data...)
			reply.Header.Set("Sb-Id-Back", req.Header.Get(nodecmd.HdrID))
			return nil
		},
		"gone": func(context.Context, *nats.Msg, *nats.Msg) error { return conn.ErrGone },
	}}); err != nil {
		t.Fatal(err)
	}
	return srv
}

func directCaller(t *testing.T, r *rig) *nodecmd.Client {
	t.Helper()
	c, err := nodecmd.NewClient(nodecmd.ClientConfig{Timeout: 2 * time.Second, Direct: true}, r.nt.Connect(t), r.reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// A caller with Direct learns the owner's direct address over NATS at its
// first command, and from then on needs no NATS at all: with the NATS
// server gone, concurrent commands are answered, each with its own reply,
// and an owner's error comes back as the same conn error.
func TestDirectCommandsNeedNoNATSOnceKnown(t *testing.T) {
	r := newRig(t)
	node := "direct-1"
	r.lease(t, node, true)
	var handled atomic.Int64
	runServer(t, directOwner(t, r, node, &handled))
	c := directCaller(t, r)
	if _, err := c.Call(t.Context(), node, nodecmd.NewRequest("echo", conn.NewID())); err != nil {
		t.Fatal(err)
	}
	r.nt.Shutdown()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := range 50 {
				id := conn.NewID()
				m := nodecmd.NewRequest("echo", id)
				m.Data = fmt.Appendf(nil, "%d-%d", w, i)
				reply, err := c.Call(t.Context(), node, m)
				switch {
				case err != nil:
					errs <- err
					return
				case string(reply.Data) != fmt.Sprintf("echo %d-%d", w, i) || reply.Header.Get("Sb-Id-Back") != id:
					errs <- fmt.Errorf("call %d-%d for %s got %q (%s)", w, i, id, reply.Data, reply.Header.Get("Sb-Id-Back"))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := handled.Load(); n != 1+16*50 {
		t.Fatalf("handler ran %d times, want %d", n, 1+16*50)
	}
	if _, err := c.Call(t.Context(), node, nodecmd.NewRequest("gone", conn.NewID())); !errors.Is(err, conn.ErrGone) {
		t.Fatalf("the owner's ErrGone through the direct path: %v", err)
	}
}

// The direct listener serves only those who learnt its secret over NATS.
func TestDirectListenerRefusesAWrongSecret(t *testing.T) {
	r := newRig(t)
	var handled atomic.Int64
	srv := directOwner(t, r, "direct-2", &handled)
	runServer(t, srv)
	c, err := net.Dial("tcp", srv.DirectAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bad := "SBDC1\n" + fmt.Sprintf("%064x", 0) + "\n"
	if _, err := c.Write([]byte(bad)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := bufio.NewReader(c).Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a connection with a wrong secret, want it closed", n)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the connection with a wrong secret stayed open")
	}
	if handled.Load() != 0 {
		t.Fatal("a command ran")
	}
}

// An owner that restarts (new process, new secret, new port) breaks the
// direct connection: the next commands go through NATS, and the caller
// finds the new direct address later by itself.
func TestDirectFallsBackToNATSWhenTheOwnerRestarts(t *testing.T) {
	r := newRig(t)
	node := "direct-3"
	r.lease(t, node, true)
	var handled atomic.Int64
	first := directOwner(t, r, node, &handled)
	ctx := context.Background()
	ran := make(chan error, 1)
	go func() { ran <- first.Run(ctx) }()
	<-first.Ready()
	c := directCaller(t, r)
	if _, err := c.Call(t.Context(), node, nodecmd.NewRequest("echo", conn.NewID())); err != nil {
		t.Fatal(err)
	}
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	runServer(t, directOwner(t, r, node, &handled))
	testenv.Eventually(t, "a command answered by the restarted owner", func() bool {
		_, err := c.Call(t.Context(), node, nodecmd.NewRequest("echo", conn.NewID()))
		return err == nil
	})
}
