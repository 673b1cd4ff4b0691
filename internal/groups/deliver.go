package groups

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/edge"
)

// Coalescing bounds: messages for one subject that are already queued
// together are written to each member with one write, up to these limits.
const (
	maxBatch    = 256
	maxRunBytes = 64 << 10
)

// newWriterQueues makes the fan-out writers' queues, one per writer beside
// the delivery worker. A delivery worker has at most one share out per
// writer at a time, so a queue of Workers never blocks it.
func newWriterQueues(cfg Config) []chan fanTask {
	qs := make([]chan fanTask, cfg.FanoutWriters-1)
	for i := range qs {
		qs[i] = make(chan fanTask, cfg.Workers)
	}
	return qs
}

// startDelivery starts the fan-out writers and a delivery worker per inbox.
// The writers outlive the delivery workers, which may be waiting for them:
// their queues close once the last worker is gone.
func (s *Service) startDelivery() {
	for _, ch := range s.writers {
		s.wg.Add(1)
		go s.writeLoop(ch)
	}
	var delivering sync.WaitGroup
	for _, ch := range s.inbox {
		delivering.Add(1)
		go func() { defer delivering.Done(); s.deliverLoop(ch) }()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		delivering.Wait()
		for _, ch := range s.writers {
			close(ch)
		}
	}()
}

// deliverLoop writes fan-out messages to local members. Each message's frame
// is encoded once into a buffer the worker reuses, and the same bytes go to
// every member; consecutive messages for the same subject (a burst) are
// concatenated so that each member gets them in one write. A big group's
// members are written by the fan-out writers together (write).
func (s *Service) deliverLoop(in chan *nats.Msg) {
	d := s.newDeliverer()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	batch := make([]*nats.Msg, 0, maxBatch)
	for {
		select {
		case <-s.stop:
			return
		case m := <-in:
			batch = append(batch[:0], m)
		}
	more:
		for len(batch) < maxBatch {
			select {
			case m := <-in:
				batch = append(batch, m)
			default:
				break more
			}
		}
		if f := s.deps.Fence; f != nil {
			// Held, not dropped, while the lease is in doubt: if it is
			// renewed they are delivered; if it was revoked the members are
			// closed by then and nothing reaches them.
			if f.Wait(ctx) != nil {
				return // stopping
			}
		}
		d.deliver(batch)
		clear(batch) // let the messages be collected
	}
}

// deliverer holds one worker's reusable buffers.
type deliverer struct {
	s       *Service
	frame   edge.Frame
	members []Conn
	tallies []tally // the writers' shares of a message (none: the worker writes alone)
	shares  sync.WaitGroup
}

func (s *Service) newDeliverer() *deliverer {
	return &deliverer{s: s, tallies: make([]tally, len(s.writers))}
}

// tally counts one share's writes.
type tally struct{ ok, failed int }

// fanTask is one writer's share of a message: the frame, read-only and
// shared by every share, and the members to write it to.
type fanTask struct {
	frame   *edge.Frame
	members []Conn
	out     *tally
	done    *sync.WaitGroup
}

// writeLoop is a fan-out writer: it writes the shares it is handed until the
// delivery workers are gone.
func (s *Service) writeLoop(tasks chan fanTask) {
	defer s.wg.Done()
	for t := range tasks {
		*t.out = sendAll(t.frame, t.members)
		t.done.Done()
	}
}

func sendAll(frame *edge.Frame, members []Conn) (t tally) {
	for _, c := range members {
		if c.SendFrame(frame) == nil {
			t.ok++
		} else {
			t.failed++
		}
	}
	return t
}

func (d *deliverer) deliver(batch []*nats.Msg) {
	for i := 0; i < len(batch); {
		m := batch[i]
		env, err := decodeEnvelope(m.Data)
		if err != nil {
			d.s.log.Warn("groups: dropped a malformed fan-out message", "subject", m.Subject, "err", err)
			i++
			continue
		}
		if env.op == opClose {
			d.close(m.Subject, env.code, string(env.payload))
			i++
			continue
		}
		d.frame.Reset()
		d.frame.Append(env.op == opBinary, env.payload)
		j := i + 1
		for ; j < len(batch) && d.frame.Len() < maxRunBytes && batch[j].Subject == m.Subject; j++ {
			next, err := decodeEnvelope(batch[j].Data)
			if err != nil || next.op == opClose || string(next.excluded) != string(env.excluded) {
				break
			}
			d.frame.Append(next.op == opBinary, next.payload)
		}
		d.write(m.Subject, env.excluded, j-i)
		i = j
	}
	d.frame.Reset() // one huge message must not pin its buffer forever
}

// write sends d.frame (frames encoded messages) to subject's local members.
// A big group is split in shares, one per writer, the worker writing the
// first itself; it waits for every share before the next message, so a
// member gets a subject's messages in order whichever writer wrote them
// (SendFrame writes or queues before it returns). A share is a stretch of
// the target's dense member list: between membership changes a member stays
// with its writer, and its socket with that writer's core.
func (d *deliverer) write(subject string, excluded []byte, frames int) {
	d.members = d.s.idx.snapshot(subject, excluded, d.members[:0])
	n := len(d.members)
	parts := max(1, min(1+len(d.tallies), n/d.s.cfg.FanoutMinShare))
	d.shares.Add(parts - 1)
	for i := 1; i < parts; i++ {
		d.s.writers[i-1] <- fanTask{frame: &d.frame, members: d.members[i*n/parts : (i+1)*n/parts], out: &d.tallies[i-1], done: &d.shares}
	}
	own := sendAll(&d.frame, d.members[:n/parts])
	d.shares.Wait()
	ok, failed := own.ok, own.failed
	for _, t := range d.tallies[:parts-1] {
		ok += t.ok
		failed += t.failed
	}
	clear(d.members)
	if ok > 0 {
		d.s.m.delivered.Add(float64(ok * frames))
	}
	if failed > 0 {
		d.s.m.failed.Add(float64(failed * frames))
	}
}

func (d *deliverer) close(subject string, code int, reason string) {
	d.members = d.s.idx.snapshot(subject, nil, d.members[:0])
	for _, c := range d.members {
		c.Close(code, reason, edge.ReasonAPIClose)
	}
	clear(d.members)
}
