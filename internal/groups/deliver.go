package groups

import (
	"context"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/edge"
)

// Coalescing bounds: messages for one subject that are already queued
// together are written to each member with one write, up to these limits.
const (
	maxBatch    = 256
	maxRunBytes = 64 << 10
)

// deliverLoop writes fan-out messages to local members. Each message's frame
// is encoded once into a buffer the worker reuses, and the same bytes go to
// every member; consecutive messages for the same subject (a burst) are
// concatenated so that each member gets them in one write.
func (s *Service) deliverLoop(in chan *nats.Msg) {
	defer s.wg.Done()
	d := &deliverer{s: s}
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
func (d *deliverer) write(subject string, excluded []byte, frames int) {
	d.members = d.s.idx.snapshot(subject, excluded, d.members[:0])
	ok, failed := 0, 0
	for _, c := range d.members {
		if c.SendFrame(&d.frame) == nil {
			ok++
		} else {
			failed++
		}
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
