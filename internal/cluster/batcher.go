package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrClosed: the batcher (or node) has shut down.
var ErrClosed = errors.New("cluster: closed")

// BatcherConfig configures the write coalescer.
type BatcherConfig struct {
	// MaxBatch is the most writes in one pipelined round trip. Default 512.
	MaxBatch int
	// Workers is how many round trips may be in flight at once. Default 4.
	Workers int
	// WriteTimeout bounds one round trip. Default 2s.
	WriteTimeout time.Duration
	// QueueSize bounds writes waiting for a worker; callers block beyond it.
	// Default 8192.
	QueueSize int
}

// Validate rejects negative values.
func (c BatcherConfig) Validate() error {
	if c.MaxBatch < 0 || c.Workers < 0 || c.WriteTimeout < 0 || c.QueueSize < 0 {
		return errors.New("cluster: batcher config: negative value")
	}
	return nil
}

func (c BatcherConfig) withDefaults() BatcherConfig {
	if c.MaxBatch == 0 {
		c.MaxBatch = 512
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 2 * time.Second
	}
	if c.QueueSize == 0 {
		c.QueueSize = 8192
	}
	return c
}

// Batcher coalesces registrations and removals from many goroutines into
// pipelined registry calls: whatever queued up while the previous round trip
// was in flight goes out in the next one, so a burst of thousands of connects
// costs a handful of round trips and an idle one costs no added delay. Each
// caller blocks until its own write is durable or failed.
type Batcher struct {
	cfg BatcherConfig
	reg Registry
	m   *Metrics

	queue chan *write
	stop  chan struct{} // closed by Shutdown
	done  chan struct{} // closed when Run's workers have exited
	once  sync.Once
	ran   sync.Once
}

type write struct {
	rec    ConnRecord // registration, or for a removal: ID and Node only
	remove bool
	err    chan error // buffered, one send
}

// NewBatcher returns a batcher writing to reg. Call Run to start it.
func NewBatcher(cfg BatcherConfig, reg Registry, m *Metrics) (*Batcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if reg == nil {
		return nil, errors.New("cluster: batcher needs a registry")
	}
	cfg = cfg.withDefaults()
	return &Batcher{
		cfg:   cfg,
		reg:   reg,
		m:     m.orNop(),
		queue: make(chan *write, cfg.QueueSize),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}, nil
}

// Run writes batches until ctx ends or Shutdown; writes already queued are
// written before it returns.
func (b *Batcher) Run(ctx context.Context) error {
	started := false
	b.ran.Do(func() { started = true })
	if !started {
		return errors.New("cluster: batcher: Run called twice")
	}
	defer close(b.done)
	var wg sync.WaitGroup
	for i := 0; i < b.cfg.Workers; i++ {
		wg.Go(func() { b.work(ctx) })
	}
	wg.Wait()
	return nil
}

// Shutdown stops the batcher and waits (bounded by ctx) until queued writes
// are done. Safe to call more than once.
func (b *Batcher) Shutdown(ctx context.Context) error {
	b.once.Do(func() { close(b.stop) })
	started := true
	b.ran.Do(func() { started = false; close(b.done) })
	if !started {
		return nil
	}
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cluster: batcher shutdown: %w", ctx.Err())
	}
}

// Register writes rec and returns once it is durable.
func (b *Batcher) Register(ctx context.Context, rec ConnRecord) error {
	if err := checkRecord(rec); err != nil {
		return err
	}
	return b.submit(ctx, &write{rec: rec, err: make(chan error, 1)})
}

// Unregister removes node's connection id and returns once it is done.
func (b *Batcher) Unregister(ctx context.Context, node, id string) error {
	return b.submit(ctx, &write{rec: ConnRecord{ID: id, Node: node}, remove: true, err: make(chan error, 1)})
}

func (b *Batcher) submit(ctx context.Context, w *write) error {
	select {
	case <-b.stop:
		return ErrClosed
	default:
	}
	select {
	case b.queue <- w:
	case <-b.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-w.err:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-b.done:
		// Workers drain the queue before exiting, so the answer is there
		// unless the write slipped in after the last drain.
		select {
		case err := <-w.err:
			return err
		default:
			return ErrClosed
		}
	}
}

func (b *Batcher) work(ctx context.Context) {
	batch := make([]*write, 0, b.cfg.MaxBatch)
	for {
		select {
		case w := <-b.queue:
			batch = append(batch[:0], w)
		case <-b.stop:
			b.drain(ctx, batch)
			return
		case <-ctx.Done():
			b.drain(ctx, batch)
			return
		}
	fill:
		for len(batch) < b.cfg.MaxBatch {
			select {
			case w := <-b.queue:
				batch = append(batch, w)
			default:
				break fill
			}
		}
		b.flush(ctx, batch)
	}
}

// drain writes what is still queued, so that no caller waits in vain.
func (b *Batcher) drain(ctx context.Context, batch []*write) {
	for {
		batch = batch[:0]
	fill:
		for len(batch) < b.cfg.MaxBatch {
			select {
			case w := <-b.queue:
				batch = append(batch, w)
			default:
				break fill
			}
		}
		if len(batch) == 0 {
			return
		}
		b.flush(ctx, batch)
	}
}

// flush writes one batch: all registrations in one pipeline, removals grouped
// by node.
func (b *Batcher) flush(ctx context.Context, batch []*write) {
	b.m.batchSize.Observe(float64(len(batch)))
	// Not the caller's context: a batch serves many callers, and writes
	// already queued at shutdown should still land.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.WriteTimeout)
	defer cancel()
	var regs []ConnRecord
	var removals map[string][]string
	for _, w := range batch {
		if w.remove {
			if removals == nil {
				removals = make(map[string][]string)
			}
			removals[w.rec.Node] = append(removals[w.rec.Node], w.rec.ID)
		} else {
			regs = append(regs, w.rec)
		}
	}
	var regErr error
	if len(regs) > 0 {
		regErr = b.reg.Register(wctx, regs...)
	}
	remErr := make(map[string]error, len(removals))
	for node, ids := range removals {
		remErr[node] = b.reg.Unregister(wctx, node, ids...)
	}
	for _, w := range batch {
		if w.remove {
			w.err <- remErr[w.rec.Node]
		} else {
			w.err <- regErr
		}
	}
}
