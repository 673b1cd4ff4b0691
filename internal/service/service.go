// Package service holds the one lifecycle every long-running part of a node
// follows: New allocates and starts nothing; Run(ctx) owns every goroutine
// the part needs until ctx ends or Shutdown is called; Shutdown stops Run and
// waits for it. A part that was built but never run (a failed start) is
// stopped by Shutdown at once, with nothing left behind.
package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrRunTwice is returned by Start for a second Run, or a Run after Shutdown.
var ErrRunTwice = errors.New("Run called twice or after Shutdown")

// Gate is the bookkeeping of that lifecycle for one part; its zero value is
// ready to use. Run calls Start first and defers Finish, and returns when
// Stopping is closed; Shutdown calls Stop.
type Gate struct {
	mu      sync.Mutex
	ran     bool // Start succeeded
	stopped bool // Stop was called
	stop    chan struct{}
	done    chan struct{}
}

func (g *Gate) init() {
	if g.stop == nil {
		g.stop = make(chan struct{})
		g.done = make(chan struct{})
	}
}

// Start marks Run as begun. name prefixes the error ("cluster: node").
func (g *Gate) Start(name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.init()
	if g.ran || g.stopped {
		return fmt.Errorf("%s: %w", name, ErrRunTwice)
	}
	g.ran = true
	return nil
}

// Finish marks Run as returned; Run defers it right after Start succeeds.
func (g *Gate) Finish() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.done)
}

// Stopping is closed once Shutdown has been called.
func (g *Gate) Stopping() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.init()
	return g.stop
}

// Stop tells Run to return and waits for it, or for ctx. A part never run is
// stopped at once. Safe to call more than once.
func (g *Gate) Stop(ctx context.Context, name string) error {
	g.Close()
	return g.Wait(ctx, name)
}

// Close is the first half of Stop, for a Shutdown with work to do between
// telling Run to end and waiting for it: it closes Stopping, makes a later
// Start fail, and reports whether Run had started.
func (g *Gate) Close() (ran bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.init()
	if !g.stopped {
		g.stopped = true
		close(g.stop)
	}
	return g.ran
}

// Wait is the second half of Stop: it waits until a started Run has
// returned, or ctx ends.
func (g *Gate) Wait(ctx context.Context, name string) error {
	g.mu.Lock()
	g.init()
	ran, done := g.ran, g.done
	g.mu.Unlock()
	if !ran {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: shutdown: %w", name, ctx.Err())
	}
}
