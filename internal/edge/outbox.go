package edge

import "sync"

// frameKind says how a frame counts against a connection's queue bound.
type frameKind uint8

const (
	dataFrame    frameKind = iota // messages, error frames, replies: MaxQueueBytes (PendingQueueBytes before the upgrade)
	controlFrame                  // server pings: may use controlAllowance above the bound
	pongFrame                     // answers to client pings: coalesced while a backlog exists
)

// maxControlFrame is the largest control frame the edge sends: a 2-byte
// header and the 125-byte payload limit of RFC 6455 §5.5.
const maxControlFrame = 2 + 125

// controlAllowance is how far control frames may take a connection's queue
// above its bound, so that a pong, a ping or the close frame is not refused
// for its few bytes: room for one server ping, the one pending pong and the
// close frame. It is fixed whatever the client sends, because pongs
// coalesce into one slot and the close frame is queued once.
const controlAllowance = 2 + 2*maxControlFrame

// pongPool holds the pending-pong slots: only connections with a backlog
// and an unanswered ping hold one.
var pongPool = sync.Pool{New: func() any { b := make([]byte, 0, maxControlFrame); return &b }}

// outbox is what a connection holds for its client: the bytes not yet
// written, in order, and the one pong waiting behind them. It is the whole
// of the write queue's byte accounting, and nothing else: no socket, no
// lock, no goroutine (the Conn's mutex guards it; the Conn's writer drains
// it). Empty, it holds no buffer, so an idle connection pays three words.
//
// Every byte not yet written counts against the bound, those a writer is on
// included (next hands them out, written drops them once the socket took
// them): a client that does not read holds at most bound+controlAllowance,
// never that much again per write. The pong slot is counted too, and
// replaced, not added to, by a later pong.
//
// Frames enter as header and body (push) and leave as the bytes the socket
// took (written). Both seams are where later work hooks in: a pre-encoded
// frame shared by many connections (fan-out encoded once, a compressed
// frame) can enter by reference instead of by copy behind push, and a replay
// window can keep what written drops instead of letting it go. Today push
// copies (callers reuse their buffers: group fan-out does) and written
// forgets.
type outbox struct {
	buf      []byte  // bytes not yet written, in order; always ends at a frame boundary
	pong     *[]byte // pooled; the answer to the latest ping not yet written
	flushing bool    // a writer goroutine owns the socket's write side
}

// held is how many bytes the outbox holds for the client.
func (o *outbox) held() int {
	n := len(o.buf)
	if o.pong != nil {
		n += len(*o.pong)
	}
	return n
}

// busy reports whether a write must queue behind others: a writer owns the
// socket, or bytes wait for one.
func (o *outbox) busy() bool { return o.flushing || len(o.buf) > 0 }

// fits reports whether a frame of size bytes and kind may join the outbox
// under bound: data frames up to the bound, control frames up to
// controlAllowance above it; a pong replaces the pending one, so only the
// difference counts.
func (o *outbox) fits(kind frameKind, size, bound int) bool {
	limit := bound
	if kind != dataFrame {
		limit += controlAllowance
	}
	if kind == pongFrame && o.pong != nil {
		size -= len(*o.pong)
	}
	return o.held()+size <= limit
}

// push appends a frame, a header and a body, to the outbox.
func (o *outbox) push(a, b []byte) { o.buf = append(append(o.buf, a...), b...) }

// pushRest appends what is left of a+b after its first n bytes were written.
func (o *outbox) pushRest(a, b []byte, n int) {
	if n < len(a) {
		o.push(a[n:], b)
	} else {
		o.buf = append(o.buf, b[n-len(a):]...)
	}
}

// setPong makes a+b the one pong waiting behind the backlog, replacing a
// pong not yet written: RFC 6455 §5.5.3 allows answering only the most
// recent ping, so a client that pings and never reads costs at most one
// control frame, not one per ping. It reports whether it replaced one.
func (o *outbox) setPong(a, b []byte) (replaced bool) {
	if o.pong == nil {
		o.pong = pongPool.Get().(*[]byte)
	} else {
		replaced = true
	}
	*o.pong = append(append((*o.pong)[:0], a...), b...)
	return replaced
}

// sealPong moves the pending pong to the end of the queue, where the writer
// sends it, and returns its size (0 if there was none): the pong goes out
// after everything queued before it, and nothing queued after it (the close
// frame) can overtake it.
func (o *outbox) sealPong() int {
	if o.pong == nil {
		return 0
	}
	n := len(*o.pong)
	o.buf = append(o.buf, *o.pong...)
	o.dropPong()
	return n
}

func (o *outbox) dropPong() {
	if o.pong != nil {
		*o.pong = (*o.pong)[:0]
		pongPool.Put(o.pong)
		o.pong = nil
	}
}

// startWriter claims the socket's write side for a writer goroutine. It
// reports false if one already owns it.
func (o *outbox) startWriter() bool {
	if o.flushing {
		return false
	}
	o.flushing = true
	return true
}

// take returns the bytes the writer should write now. The writer writes
// them without the lock: later pushes only append after them. Once nothing
// waits, the writer's turn ends (ok false): the buffer goes, so a
// connection that drained holds none, and the next write goes straight to
// the socket again.
func (o *outbox) take() (buf []byte, ok bool) {
	if len(o.buf) == 0 {
		o.buf = nil
		o.flushing = false
		return nil, false
	}
	return o.buf, true
}

// written drops the first n bytes, which the socket took (unless reset
// dropped them meanwhile).
func (o *outbox) written(n int) { o.buf = o.buf[min(n, len(o.buf)):] }

// reset forgets everything queued and returns what it held.
func (o *outbox) reset() int {
	n := o.held()
	o.buf = nil
	o.dropPong()
	o.flushing = false
	return n
}
