package groups

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/edge"
)

// Coalescing bounds. Messages for one subject that are queued together (a
// run) are written to each member with one write, up to maxBatch messages
// and about maxRunBytes; a run also takes in the subject's messages that
// arrive while it is being written (deliverer.grow): at most maxGrowth
// times, as a burst's messages may trickle in one by one, and while the
// frames made for it hold at most maxGrownBytes, since each growth makes a
// frame of the whole run so far.
const (
	maxBatch      = 256
	maxRunBytes   = 64 << 10
	maxGrowth     = 32
	maxGrownBytes = 1 << 20
	// pollEvery is how many members the delivery worker writes between two
	// looks at its inbox while a run may grow: often enough that a burst
	// arriving over a few milliseconds joins the run while most members
	// are still to be written, rarely enough to cost nothing (a look is a
	// non-blocking channel receive, a write about 10 µs).
	pollEvery = 32
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
	d.in = in
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
		if d.held != nil {
			batch, d.held = append(batch[:0], d.held), nil
		} else {
			select {
			case <-s.stop:
				return
			case m := <-in:
				batch = append(batch[:0], m)
			}
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
			// closed by then and nothing reaches them. Messages a run takes
			// in while it is written go out under this same check, as the
			// rest of the run's members do.
			if f.Wait(ctx) != nil {
				return // stopping
			}
		}
		d.deliver(batch)
		clear(batch) // let the messages be collected
	}
}

// deliverer is one delivery worker's state and reusable buffers.
type deliverer struct {
	s       *Service
	writers int              // fan-out writers it may hand shares to
	in      <-chan *nats.Msg // its inbox; nil: runs do not grow
	held    *nats.Msg        // taken from in while growing, not the run's: the next batch's first
	done    chan struct{}    // a writer finished its share

	// The run being written: one subject's messages, excluding one
	// connection or none, and the frames made of them.
	subject    string
	excluded   []byte
	msgs       []runMsg
	bytes      int
	growing    bool // the run may still take in messages from in
	grown      int  // how many times it did
	grownBytes int  // the size of the frames made as it grew
	// cur is the frame of msgs[:n] that members not yet written get; the
	// writers load it before each member. vs holds its versions, frame
	// the first one's bytes (reused from run to run).
	cur   atomic.Pointer[version]
	vs    [maxGrowth + 1]version
	frame edge.Frame
	tails []tail        // frames of msgs[n:], for members written before the run grew
	spare []*edge.Frame // frames for grown versions and tails, reused
	used  []*edge.Frame

	members []Conn
	shares  []share // [0] is the worker's own
}

func (s *Service) newDeliverer() *deliverer {
	return &deliverer{s: s, writers: len(s.writers), done: make(chan struct{}, len(s.writers))}
}

type runMsg struct {
	binary  bool
	payload []byte
}

// appendRun adds msgs to f, each a complete frame.
func appendRun(f *edge.Frame, msgs []runMsg) {
	for _, m := range msgs {
		f.Append(m.binary, m.payload)
	}
}

// version is the run's frame at one size: the first n messages.
type version struct {
	frame *edge.Frame
	n     int
}

type tail struct {
	from  int
	frame *edge.Frame
}

// share is one writer's stretch of a run's members, and what it wrote.
type share struct {
	members []Conn
	// marks: from members[marks[k].at] on, the writer sent the first
	// marks[k].n messages of the run (the version current then).
	marks      []mark
	ok, failed int // messages written, and not (the member is gone)
}

type mark struct{ at, n int }

// fanTask is a writer's share of a run to write: its first pass, or the
// catch-up that sends the rest of a grown run to the members written before
// it grew.
type fanTask struct {
	d       *deliverer
	sh      *share
	catchUp bool
}

// writeLoop is a fan-out writer: it writes the shares it is handed until the
// delivery workers are gone.
func (s *Service) writeLoop(tasks chan fanTask) {
	defer s.wg.Done()
	for t := range tasks {
		if t.catchUp {
			t.d.catchUp(t.sh)
		} else {
			t.d.pass(t.sh, false)
		}
		t.d.done <- struct{}{}
	}
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
		d.subject, d.excluded = m.Subject, env.excluded
		d.msgs, d.bytes = append(d.msgs[:0], runMsg{env.op == opBinary, env.payload}), len(env.payload)
		j := i + 1
		for j < len(batch) && d.join(batch[j]) {
			j++
		}
		// Only the batch's last run may take in later messages: the
		// others' come after the rest of the batch.
		d.growing = d.in != nil && j == len(batch)
		d.write()
		i = j
	}
	d.frame.Reset() // one huge message must not pin its buffer forever
}

// write sends the run to the subject's local members. A big group is split
// in shares, one per writer, the worker writing the first itself; it waits
// for every share before the next run, so a member gets a subject's
// messages in order whichever writer wrote them (SendFrame writes or queues
// before it returns). A share is a stretch of the target's dense member
// list: between membership changes a member stays with its writer, and its
// socket with that writer's core.
//
// While the worker writes its share it takes in the subject's messages
// that have arrived since (grow): members not yet written get them in the
// same write as the rest, and the few written before get them in a
// catch-up. A burst sent at once thus costs each member about one write,
// however its messages trickle in, with no wait added to a message sent
// alone.
func (d *deliverer) write() {
	d.members = d.s.idx.snapshot(d.subject, d.excluded, d.members[:0])
	n := len(d.members)
	parts := max(1, min(1+d.writers, n/d.s.cfg.FanoutMinShare))
	if len(d.shares) < parts {
		d.shares = make([]share, parts)
	}
	d.frame.Reset()
	appendRun(&d.frame, d.msgs)
	d.grown, d.grownBytes = 0, 0
	d.vs[0] = version{&d.frame, len(d.msgs)}
	d.cur.Store(&d.vs[0])
	for i := range parts {
		d.shares[i] = share{members: d.members[i*n/parts : (i+1)*n/parts], marks: d.shares[i].marks[:0]}
	}
	for i := 1; i < parts; i++ {
		d.s.writers[i-1] <- fanTask{d: d, sh: &d.shares[i]}
	}
	d.pass(&d.shares[0], true)
	d.growing = false
	for range parts - 1 {
		<-d.done
	}
	if d.grown > 0 {
		d.catchUps(parts)
		d.recycle()
	}
	ok, failed := 0, 0
	for i := range parts {
		ok += d.shares[i].ok
		failed += d.shares[i].failed
		d.shares[i].members = nil
	}
	clear(d.members)
	clear(d.msgs) // let the messages be collected
	if ok > 0 {
		d.s.m.delivered.Add(float64(ok))
	}
	if failed > 0 {
		d.s.m.failed.Add(float64(failed))
	}
}

// pass writes the run's current frame to each of sh's members, noting where
// it changed; poll: the worker's own share, which takes in arrivals.
func (d *deliverer) pass(sh *share, poll bool) {
	v := d.cur.Load()
	sh.marks = append(sh.marks, mark{0, v.n})
	for i, c := range sh.members {
		if poll && i%pollEvery == pollEvery-1 {
			d.grow()
		}
		if nv := d.cur.Load(); nv != v {
			v = nv
			sh.marks = append(sh.marks, mark{i, v.n})
		}
		if c.SendFrame(v.frame) == nil {
			sh.ok += v.n
		} else {
			sh.failed += v.n
		}
	}
}

// grow takes the run's next messages from the inbox if they are already
// there, and makes the frame that the members not yet written get. The
// first message that cannot join (another subject, a close, a full run) is
// held for the next batch and ends the growing.
func (d *deliverer) grow() {
	had := len(d.msgs)
	for d.growing {
		var m *nats.Msg
		select {
		case m = <-d.in:
		default:
		}
		if m == nil {
			break
		}
		if !d.join(m) {
			d.held, d.growing = m, false
		}
	}
	if len(d.msgs) == had {
		return
	}
	f := d.newFrame()
	appendRun(f, d.msgs)
	d.grown++
	d.grownBytes += f.Len()
	d.vs[d.grown] = version{f, len(d.msgs)}
	d.cur.Store(&d.vs[d.grown])
	if d.grown == maxGrowth || d.grownBytes >= maxGrownBytes {
		d.growing = false
	}
}

// join adds m to the run if it is one more message to the same members,
// within the run's bounds: for the batch's messages and for arrivals alike.
func (d *deliverer) join(m *nats.Msg) bool {
	if m.Subject != d.subject || len(d.msgs) >= maxBatch || d.bytes >= maxRunBytes {
		return false
	}
	env, err := decodeEnvelope(m.Data)
	if err != nil || env.op == opClose || string(env.excluded) != string(d.excluded) {
		return false // deliver handles it in the next batch
	}
	d.msgs = append(d.msgs, runMsg{env.op == opBinary, env.payload})
	d.bytes += len(env.payload)
	return true
}

// catchUps sends the rest of a grown run to the members written before it
// grew, each share by the writer that wrote its first pass.
func (d *deliverer) catchUps(parts int) {
	all := len(d.msgs)
	d.tails = d.tails[:0]
	for i := range parts {
		for _, mk := range d.shares[i].marks {
			if mk.n < all && d.tail(mk.n) == nil {
				f := d.newFrame()
				appendRun(f, d.msgs[mk.n:])
				d.tails = append(d.tails, tail{mk.n, f})
			}
		}
	}
	for i := 1; i < parts; i++ {
		d.s.writers[i-1] <- fanTask{d: d, sh: &d.shares[i], catchUp: true}
	}
	d.catchUp(&d.shares[0])
	for range parts - 1 {
		<-d.done
	}
}

// catchUp sends sh's members that got the first n messages of the run the
// rest of them.
func (d *deliverer) catchUp(sh *share) {
	all := len(d.msgs)
	for k, mk := range sh.marks {
		if mk.n == all {
			continue
		}
		end := len(sh.members)
		if k+1 < len(sh.marks) {
			end = sh.marks[k+1].at
		}
		f := d.tail(mk.n)
		for _, c := range sh.members[mk.at:end] {
			if c.SendFrame(f) == nil {
				sh.ok += all - mk.n
			} else {
				sh.failed += all - mk.n
			}
		}
	}
}

// tail is the frame of the run's messages from the nth on, once made.
func (d *deliverer) tail(n int) *edge.Frame {
	for _, t := range d.tails {
		if t.from == n {
			return t.frame
		}
	}
	return nil
}

func (d *deliverer) newFrame() *edge.Frame {
	var f *edge.Frame
	if k := len(d.spare); k > 0 {
		f, d.spare = d.spare[k-1], d.spare[:k-1]
	} else {
		f = new(edge.Frame)
	}
	d.used = append(d.used, f)
	return f
}

// Spare frames a deliverer keeps for the next grown run: a few small ones,
// what a burst of short messages needs; the rest are left to the GC, so
// that a burst of big messages does not pin its frames.
const (
	maxSpares     = 8
	maxSpareBytes = 16 << 10
)

// recycle resets the frames a grown run used, for the next one.
func (d *deliverer) recycle() {
	for _, f := range d.used {
		if len(d.spare) < maxSpares && f.Cap() <= maxSpareBytes {
			f.Reset()
			d.spare = append(d.spare, f)
		}
	}
	clear(d.used)
	d.used = d.used[:0]
	clear(d.tails)
	d.tails = d.tails[:0]
	for i := range d.vs {
		d.vs[i] = version{}
	}
}

func (d *deliverer) close(subject string, code int, reason string) {
	d.members = d.s.idx.snapshot(subject, nil, d.members[:0])
	for _, c := range d.members {
		c.Close(code, reason, edge.ReasonAPIClose)
	}
	clear(d.members)
}
