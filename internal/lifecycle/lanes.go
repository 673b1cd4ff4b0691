package lifecycle

import (
	"context"
	"errors"

	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// The publisher's queue is two lanes under one lock (qmu):
//
//   - the lifecycle lane holds CONNECT and DISCONNECT events. It never drops
//     one to make room: a DISCONNECT is always queued, and a CONNECT is
//     queued for a connection that was admitted while the lane had room
//     (Authorize waits for room). Each connection makes at most one of
//     each, so the lane stays within Config.LifecycleQueueLen plus the
//     handshakes in progress plus the open connections.
//   - the message lane holds MESSAGE events and two-way requests, within
//     QueueLen and QueueBytes overall and ConnQueueLen and ConnQueueBytes
//     per connection: a connection sending faster than NATS takes its
//     messages loses its own messages first (conn_queue_full) and leaves
//     room for everybody else's.
//
// One publisher takes the lifecycle lane first. Per connection the order
// of enqueueing is kept: its CONNECT is queued (Open) before any of its
// messages can be, and is taken first; its DISCONNECT, while it still has
// messages queued, is parked on its connQueue and moved to the lifecycle
// lane when the publisher takes its last message, so it is published after
// them.

// connQueue is what the message lane holds of one connection, kept by
// value in perConn (no allocation per message). It exists only while the
// connection has messages queued: idle connections cost nothing here.
type connQueue struct {
	n     int
	bytes int
	disc  *job // its DISCONNECT, parked until the messages above are taken
}

// ErrConnQueueFull: the connection already has ConnQueueLen messages (or
// ConnQueueBytes) waiting; this one was shed. It wraps ErrDropped.
var ErrConnQueueFull = errConnQueueFull{}

type errConnQueueFull struct{}

func (errConnQueueFull) Error() string        { return "lifecycle: connection's message queue full" }
func (errConnQueueFull) Is(target error) bool { return target == ErrDropped }

// errConnectBacklog: too many $connect requests are stuck in the NATS client.
var errConnectBacklog = errors.New("lifecycle: too many $connect requests outstanding")

// ring is a FIFO of jobs that grows as needed and lets its buffer go when
// it empties after a burst.
type ring struct {
	buf  []job
	head int
	n    int
}

func (r *ring) push(j job) {
	if r.n == len(r.buf) {
		nb := make([]job, max(16, 2*len(r.buf)))
		for i := range r.n {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = j
	r.n++
}

func (r *ring) pop() job {
	j := r.buf[r.head]
	r.buf[r.head] = job{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	if r.n == 0 {
		r.head = 0
		if len(r.buf) > 1024 {
			r.buf = nil // a burst is over: give its memory back
		}
	}
	return j
}

// stamp records the Fence epoch a job was queued in.
func (l *Lifecycle) stamp(j *job) {
	if f := l.cfg.Fence; f != nil {
		j.epoch = f.Epoch()
	}
}

// wakeLocked wakes the publisher if it waits for work. qmu held.
func (l *Lifecycle) wakeLocked() {
	if l.idle {
		l.idle = false
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// lifeLenLocked is the lifecycle lane's length, parked DISCONNECTs included.
func (l *Lifecycle) lifeLenLocked() int { return l.life.n + l.parked }

// enqueueLife queues a CONNECT or DISCONNECT. With ctx nil it never drops
// (except after Shutdown): the caller was admitted, or the event must not
// be lost. With ctx it first waits, within ctx, for the lane to have room:
// the janitor paces itself that way.
func (l *Lifecycle) enqueueLife(ctx context.Context, j job) error {
	l.stamp(&j)
	l.qmu.Lock()
	for ctx != nil && !l.closed && l.lifeLenLocked() >= l.cfg.LifecycleQueueLen {
		if err := l.awaitRoomLocked(ctx); err != nil {
			return err
		}
	}
	if l.closed {
		l.qmu.Unlock()
		l.drop(dropShutdown, j.typ)
		return ErrDropped
	}
	if j.typ == protocol.EventDisconnect {
		if q, ok := l.perConn[j.connID]; ok && q.disc == nil {
			q.disc = &j
			l.perConn[j.connID] = q
			l.parked++
			l.qmu.Unlock()
			return nil
		}
	}
	l.life.push(j)
	l.wakeLocked()
	l.qmu.Unlock()
	return nil
}

// awaitRoomLocked waits until the lifecycle lane may have room (or
// Shutdown), or ctx ends. Called and returns with qmu held, except on
// error, when qmu is released.
func (l *Lifecycle) awaitRoomLocked(ctx context.Context) error {
	if l.room == nil {
		l.room = make(chan struct{})
	}
	ch := l.room
	l.waiting++
	l.qmu.Unlock()
	var err error
	select {
	case <-ch:
	case <-ctx.Done():
		err = ctx.Err()
	}
	l.qmu.Lock()
	l.waiting--
	if err != nil {
		l.qmu.Unlock()
	}
	return err
}

// waitRoom waits, within ctx, until the lifecycle lane has room for a new
// connection's events. ErrDropped after Shutdown.
func (l *Lifecycle) waitRoom(ctx context.Context) error {
	l.qmu.Lock()
	for {
		if l.closed {
			l.qmu.Unlock()
			return ErrDropped
		}
		if l.lifeLenLocked() < l.cfg.LifecycleQueueLen {
			l.qmu.Unlock()
			return nil
		}
		if err := l.awaitRoomLocked(ctx); err != nil {
			return err
		}
	}
}

// enqueueMsg queues a MESSAGE event or two-way request without blocking,
// within the connection's bounds and then the lane's.
func (l *Lifecycle) enqueueMsg(j job) error {
	n := len(j.data)
	l.stamp(&j)
	l.qmu.Lock()
	if l.closed {
		l.qmu.Unlock()
		l.drop(dropShutdown, j.typ)
		return ErrDropped
	}
	q, ok := l.perConn[j.connID]
	if ok && (q.n >= l.cfg.ConnQueueLen || q.bytes+n > l.cfg.ConnQueueBytes) {
		l.qmu.Unlock()
		l.drop(dropConnQueueFull, j.typ)
		return ErrConnQueueFull
	}
	if l.msgs.n >= l.cfg.QueueLen || l.msgBytes+n > l.cfg.QueueBytes {
		l.qmu.Unlock()
		l.drop(dropQueueFull, j.typ)
		return ErrDropped
	}
	q.n++
	q.bytes += n
	l.perConn[j.connID] = q
	l.msgBytes += n
	l.msgs.push(j)
	l.wakeLocked()
	l.qmu.Unlock()
	return nil
}

// next takes the job to publish next, the lifecycle lane first; ok false
// once Shutdown closed the lanes and both are empty.
func (l *Lifecycle) next() (j job, ok bool) {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	for l.life.n == 0 && l.msgs.n == 0 {
		if l.closed {
			return job{}, false
		}
		l.idle = true
		l.qmu.Unlock()
		<-l.wake
		l.qmu.Lock()
	}
	if l.life.n > 0 {
		j = l.life.pop()
		if l.room != nil && l.lifeLenLocked() < l.cfg.LifecycleQueueLen {
			close(l.room)
			l.room = nil
		}
		return j, true
	}
	j = l.msgs.pop()
	n := len(j.data)
	l.msgBytes -= n
	if q, ok := l.perConn[j.connID]; ok {
		q.n--
		q.bytes -= n
		switch {
		case q.n > 0:
			l.perConn[j.connID] = q
		default:
			delete(l.perConn, j.connID)
			if q.disc != nil {
				// Taken after this message, which the caller publishes
				// before it asks for the next job.
				l.life.push(*q.disc)
				l.parked--
			}
		}
	}
	return j, true
}

// closeLanes refuses new events and wakes the publisher and every waiter.
func (l *Lifecycle) closeLanes() {
	l.qmu.Lock()
	l.closed = true
	if l.room != nil {
		close(l.room)
		l.room = nil
	}
	l.idle = false
	select {
	case l.wake <- struct{}{}:
	default:
	}
	l.qmu.Unlock()
}

// queued returns the jobs waiting in each lane (parked DISCONNECTs count as
// lifecycle).
func (l *Lifecycle) queued() (life, msgs int) {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	return l.lifeLenLocked(), l.msgs.n
}
