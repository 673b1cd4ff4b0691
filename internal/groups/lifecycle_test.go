package groups

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/testenv"
)

// New allocates only: no subscription, no goroutine, so a construction that
// fails after it (or a Service never run) leaves nothing behind. Run owns
// the broadcast subscription and the workers; Shutdown ends them all.
func TestNewStartsNothingAndShutdownEndsWhatRunStarted(t *testing.T) {
	nc := testenv.StartNATS(t).Connect(t)
	newService := func() *Service {
		s, err := New(Config{NodeID: "node-1"}, Deps{NC: nc, Store: NewMemoryStore(), Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := runtime.NumGoroutine()

	idle := newService()
	if n := nc.NumSubscriptions(); n != 0 {
		t.Fatalf("New subscribed %d subjects", n)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("New started %d goroutines", n-before)
	}
	if err := idle.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	_ = idle.Run(t.Context()) // refused: already shut down
	if n := nc.NumSubscriptions(); n != 0 {
		t.Fatalf("Run after Shutdown subscribed %d subjects", n)
	}

	svc := newService()
	ran := make(chan error, 1)
	go func() { ran <- svc.Run(context.Background()) }()
	select {
	case <-svc.Ready():
	case err := <-ran:
		t.Fatalf("Run returned early: %v", err)
	}
	if n := nc.NumSubscriptions(); n != 1 {
		t.Fatalf("a running Service with no members holds %d subscriptions, want 1 (broadcast)", n)
	}
	if err := svc.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if n := nc.NumSubscriptions(); n != 0 {
		t.Fatalf("%d subscriptions after Shutdown", n)
	}
	testenv.Eventually(t, "the workers to end", func() bool { return runtime.NumGoroutine() <= before })
}

// removals counts the RemoveConn calls that reach a Store.
type removals struct {
	*MemoryStore
	mu  sync.Mutex
	ids []string
}

func (r *removals) RemoveConn(ctx context.Context, id, user string) error {
	r.mu.Lock()
	r.ids = append(r.ids, id)
	r.mu.Unlock()
	return r.MemoryStore.RemoveConn(ctx, id, user)
}

// Closing a connection that never had a user or a group asks the Store
// nothing (in Redis mode that is two round trips per close saved in a
// disconnect storm); one that had either, even a group since left, is
// removed from it.
func TestUntrackAsksTheStoreOnlyForConnectionsItHolds(t *testing.T) {
	store := &removals{MemoryStore: NewMemoryStore()}
	svc, err := New(Config{NodeID: "node-1"}, Deps{NC: testenv.StartNATS(t).Connect(t), Store: store, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- svc.Run(context.Background()) }()
	<-svc.Ready()
	for _, tc := range []struct {
		id, user string
		groups   []string
	}{{"plain", "", nil}, {"user", "u1", nil}, {"grouped", "", []string{"g"}}, {"left", "", nil}} {
		if err := svc.Track(fakeConn(tc.id), tc.user, tc.groups); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.addLocal(t.Context(), "g2", "left"); err != nil {
		t.Fatal(err)
	}
	if err := svc.removeLocal(t.Context(), "g2", "left"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"plain", "user", "grouped", "left"} {
		svc.Untrack(id)
	}
	if err := svc.Shutdown(t.Context()); err != nil { // drains the store queues
		t.Fatal(err)
	}
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	slices.Sort(store.ids)
	if want := []string{"grouped", "left", "user"}; !slices.Equal(store.ids, want) {
		t.Fatalf("RemoveConn for %v, want %v", store.ids, want)
	}
}
