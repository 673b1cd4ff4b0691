package lifecycle

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/internal/testenv"
)

// testFence is a lease in doubt that the test resolves by hand.
type testFence struct {
	epoch atomic.Uint64
	mu    sync.Mutex
	open  chan struct{} // closed while the lease is held
}

func newTestFence() *testFence {
	f := &testFence{open: make(chan struct{})}
	close(f.open)
	return f
}

func (f *testFence) doubt() {
	f.mu.Lock()
	f.open = make(chan struct{})
	f.mu.Unlock()
}

func (f *testFence) resolve(revoked bool) {
	if revoked {
		f.epoch.Add(1)
	}
	f.mu.Lock()
	close(f.open)
	f.mu.Unlock()
}

func (f *testFence) Wait(ctx context.Context) error {
	f.mu.Lock()
	open := f.open
	f.mu.Unlock()
	select {
	case <-open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *testFence) Epoch() uint64 { return f.epoch.Load() }

func TestFenceHoldsEventsWhileTheLeaseIsInDoubtAndDropsRevokedOnes(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := n.Connect(t)
	f := newTestFence()
	l, _ := newLC(t, Config{Fence: f}, nc)
	got := collect(t, nc, "switchboard.event.>")

	// Renewed after the doubt: what was held is published.
	f.doubt()
	if err := l.Connected(meta()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // nothing to poll for: it must not arrive
	if got.count() != 0 {
		t.Fatal("an event was published while the lease was in doubt")
	}
	f.resolve(false)
	got.wait(t, 1)

	// Revoked: what was queued before belongs to announced connections.
	f.doubt()
	m := meta()
	if err := l.Disconnected(m, 1000, ""); err != nil {
		t.Fatal(err)
	}
	f.resolve(true)
	eventually(t, "the held DISCONNECT dropped as fenced", func() bool {
		return dropped(l, dropFenced) == 1
	})
	// Events of the new epoch flow.
	if err := l.Connected(meta()); err != nil {
		t.Fatal(err)
	}
	got.wait(t, 2)
	if c := got.count(); c != 2 {
		t.Fatalf("%d events published, want 2", c)
	}
}

// The janitor announces other nodes' connections: this node's revocation
// does not cover them, and nobody else would announce them.
func TestFenceNeverDropsTheJanitorsDisconnects(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := n.Connect(t)
	f := newTestFence()
	l, _ := newLC(t, Config{Fence: f}, nc)
	got := collect(t, nc, "switchboard.event.disconnect")

	f.doubt()
	if err := l.DisconnectedWait(context.Background(), meta(), 1006, "node lost"); err != nil {
		t.Fatal(err)
	}
	if err := l.Disconnected(meta(), 1000, ""); err != nil { // one of this node's own
		t.Fatal(err)
	}
	f.resolve(true)
	got.wait(t, 1)
	eventually(t, "this node's own DISCONNECT dropped as fenced", func() bool {
		return dropped(l, dropFenced) == 1
	})
	if c := got.count(); c != 1 {
		t.Fatalf("%d DISCONNECTs published, want only the janitor's", c)
	}
}

func TestShutdownEndsAFenceWait(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := n.Connect(t)
	f := newTestFence()
	l, _ := newLC(t, Config{Fence: f}, nc)
	f.doubt()
	if err := l.Connected(meta()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := l.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown reported success with an event held by the fence")
	}
	if v := dropped(l, dropShutdown); v != 1 {
		t.Fatalf("dropped{shutdown} = %v, want 1", v)
	}
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}
