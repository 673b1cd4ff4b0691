package testenv

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/internal/service"
)

// Service is a part with the project's lifecycle (see internal/service).
type Service interface {
	Run(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// Run runs p in the background for the rest of the test. When the test
// ends it shuts p down and fails the test if Run reported an error or did
// not return. Shutdown's own error is the test's to check: a test may have
// shut p down itself, and Run may then not have started at all.
func Run(t testing.TB, name string, p Service) {
	t.Helper()
	ran := make(chan error, 1)
	go func() { ran <- p.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
		select {
		case err := <-ran:
			if err != nil && !errors.Is(err, service.ErrRunTwice) {
				t.Errorf("%s: run: %v", name, err)
			}
		case <-ctx.Done():
			t.Errorf("%s: Run did not return after Shutdown", name)
		}
	})
}
