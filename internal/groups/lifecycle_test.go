package groups

import (
	"context"
	"runtime"
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
