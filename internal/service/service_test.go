package service_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/internal/service"
)

// part is the smallest component that follows the lifecycle.
type part struct{ gate service.Gate }

func (p *part) Run(ctx context.Context) error {
	if err := p.gate.Start("part"); err != nil {
		return err
	}
	defer p.gate.Finish()
	select {
	case <-ctx.Done():
	case <-p.gate.Stopping():
	}
	return nil
}

func (p *part) Shutdown(ctx context.Context) error { return p.gate.Stop(ctx, "part") }

func TestShutdownStopsRunAndWaitsForIt(t *testing.T) {
	p := &part{}
	ran := make(chan error, 1)
	go func() { ran <- p.Run(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Shutdown may come before Run has started: either way Run ends.
	for {
		if err := p.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		select {
		case err := <-ran:
			if err != nil && !errors.Is(err, service.ErrRunTwice) {
				t.Fatalf("Run: %v", err)
			}
			if err := p.Shutdown(ctx); err != nil {
				t.Fatalf("second Shutdown: %v", err)
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestANeverRunPartStopsAtOnce(t *testing.T) {
	p := &part{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no time at all: nothing may be waited for
	for i := 0; i < 2; i++ {
		if err := p.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown %d of a part never run: %v", i+1, err)
		}
	}
	if err := p.Run(context.Background()); !errors.Is(err, service.ErrRunTwice) {
		t.Fatalf("Run after Shutdown = %v, want ErrRunTwice", err)
	}
}

func TestRunTwiceIsAnError(t *testing.T) {
	p := &part{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	if err := p.Run(ctx); !errors.Is(err, service.ErrRunTwice) {
		t.Fatalf("second Run = %v, want ErrRunTwice", err)
	}
}

func TestShutdownGivesUpWithItsContext(t *testing.T) {
	var g service.Gate
	if err := g.Start("stuck"); err != nil {
		t.Fatal(err)
	}
	defer g.Finish()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := g.Stop(ctx, "stuck"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop of a Run that never returns = %v, want the context's error", err)
	}
}
