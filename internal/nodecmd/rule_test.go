package nodecmd_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/switchboardgw/switchboard/internal/cluster"
	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/nodecmd"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// callTimeout is the caller's patience in these tests: an owner "slow"
// takes longer than this to answer.
const callTimeout = 300 * time.Millisecond

// rig is a caller and the registry it asks, on real NATS and Redis.
type rig struct {
	nt     *testenv.NATS
	redis  *testenv.Redis
	reg    *cluster.RedisRegistry
	caller *nodecmd.Client
	slow   chan struct{} // closed at the end: releases slow handlers
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{nt: testenv.StartNATS(t), redis: testenv.StartRedis(t), slow: make(chan struct{})}
	rdb := redis.NewClient(&redis.Options{Addr: r.redis.Addr(), DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	var err error
	if r.reg, err = cluster.NewRedisRegistry(cluster.RedisConfig{KeyPrefix: testenv.UniquePrefix(t)}, rdb); err != nil {
		t.Fatal(err)
	}
	if r.caller, err = nodecmd.NewClient(nodecmd.ClientConfig{Timeout: callTimeout}, r.nt.Connect(t), r.reg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(r.slow) })
	return r
}

// owner runs a node answering "ping" at once, "slow" only after the caller
// gave up, and "gone" with conn.ErrGone.
func (r *rig) owner(t *testing.T, node string) {
	t.Helper()
	srv, err := nodecmd.NewServer(nodecmd.ServerConfig{Node: node}, nodecmd.ServerDeps{NC: r.nt.Connect(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Handle(nodecmd.Lane{Name: "test", Workers: 2, Timeout: 2 * callTimeout, Handlers: map[string]nodecmd.Handler{
		"ping": func(context.Context, *nats.Msg, *nats.Msg) error { return nil },
		"gone": func(context.Context, *nats.Msg, *nats.Msg) error { return conn.ErrGone },
		"slow": func(ctx context.Context, _, _ *nats.Msg) error {
			select {
			case <-r.slow:
			case <-ctx.Done():
			}
			return nil
		},
	}}); err != nil {
		t.Fatal(err)
	}
	runServer(t, srv)
}

func runServer(t *testing.T, srv *nodecmd.Server) {
	t.Helper()
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-ran:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(testenv.WaitFor):
		t.Fatal("server not ready")
	}
}

// lease gives node a lease that is held, or one that has expired (no
// janitor has removed it yet: the registry still knows the node).
func (r *rig) lease(t *testing.T, node string, held bool) {
	t.Helper()
	ttl := time.Minute
	if !held {
		ttl = 50 * time.Millisecond
	}
	if _, err := r.reg.RenewLease(t.Context(), node, cluster.Incarnation{}, ttl); err != nil {
		t.Fatal(err)
	}
	if !held {
		testenv.Eventually(t, node+"'s lease to expire", func() bool {
			alive, err := r.reg.NodeAlive(t.Context(), node)
			return err == nil && !alive
		})
	}
}

func (r *rig) call(t *testing.T, node, cmd string) error {
	t.Helper()
	_, err := r.caller.Call(t.Context(), node, nodecmd.NewRequest(cmd, conn.NewID()))
	return err
}

// The dead-owner rule (docs/cluster.md, "One command protocol"): an answer
// is the owner's; no answer is decided by the owner's lease alone.
func TestDeadOwnerRule(t *testing.T) {
	r := newRig(t)
	for _, c := range []struct {
		name    string
		runs    bool // the owner's process serves its subject
		held    bool // its lease is current
		noLease bool // it never had one
		cmd     string
		want    error
		answer  bool // the error is the owner's answer, not the rule's
	}{
		{name: "owner answers", runs: true, held: true, cmd: "ping"},
		{name: "owner answers gone", runs: true, held: true, cmd: "gone", want: conn.ErrGone, answer: true},
		{name: "owner answers, lease expired: its answer stands", runs: true, held: false, cmd: "ping"},
		{name: "owner slow, lease held: unavailable", runs: true, held: true, cmd: "slow", want: conn.ErrUnavailable},
		{name: "owner slow, lease expired: gone", runs: true, held: false, cmd: "slow", want: conn.ErrGone},
		{name: "owner process gone, lease held: unavailable", runs: false, held: true, cmd: "ping", want: conn.ErrUnavailable},
		{name: "owner process gone, lease expired: gone", runs: false, held: false, cmd: "ping", want: conn.ErrGone},
		{name: "owner process gone, never had a lease: gone", runs: false, noLease: true, cmd: "ping", want: conn.ErrGone},
	} {
		t.Run(c.name, func(t *testing.T) {
			node := cluster.NewNodeID("owner")
			if c.runs {
				r.owner(t, node)
			}
			if !c.noLease {
				r.lease(t, node, c.held)
			}
			start := time.Now()
			err := r.call(t, node, c.cmd)
			if c.want == nil {
				if err != nil {
					t.Fatalf("Call: %v, want success", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Call: %v, want %v", err, c.want)
			}
			if c.want == conn.ErrUnavailable && errors.Is(err, conn.ErrGone) {
				t.Fatalf("Call: %v is both unavailable and gone", err)
			}
			if c.answer && time.Since(start) >= callTimeout {
				t.Fatalf("an answer took %v: the caller waited for its timeout", time.Since(start))
			}
		})
	}
	t.Run("registry unreachable: unavailable, whatever the lease said", func(t *testing.T) {
		node := cluster.NewNodeID("owner")
		r.lease(t, node, false)
		r.redis.Kill()
		if err := r.call(t, node, "ping"); !errors.Is(err, conn.ErrUnavailable) || errors.Is(err, conn.ErrGone) {
			t.Fatalf("Call with the registry down: %v, want only ErrUnavailable", err)
		}
	})
}
