package edge

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/rules"
)

// Connection states.
const (
	statePending int32 = iota // $connect running; posts are held
	stateOpen                 // upgraded and in the reactor
	stateClosed               // torn down
)

// Conn is one client connection. An idle Conn owns no goroutine and no
// buffer: reads happen on a reactor worker when the socket is readable, and a
// writer goroutine exists only while the client has a backlog.
type Conn struct {
	srv *Server
	id  string
	nc  net.Conn
	raw rawConn
	fd  int
	gen uint32

	connectedAt time.Time
	sourceIP    string
	userAgent   string

	// Set during the handshake, before the connection is published to the
	// reactor; read-only afterwards.
	subprotocol string
	userID      string
	value       any

	state       atomic.Int32
	established atomic.Bool
	// handlerOwned: Connect accepted, so the Handler hears exactly one Close.
	handlerOwned bool
	lastActive   atomic.Int64 // unix nanos of the last frame from the client
	pingSent     atomic.Int64 // unix nanos of an unanswered server ping, 0 if none
	partialAt    atomic.Int64 // unix nanos since a partial frame sits in the buffer

	// Read side, owned by the one worker running onReadable (EPOLLONESHOT).
	readMu     sync.Mutex
	in         *[]byte // pooled buffer; nil while no partial frame is buffered
	inLen      int
	unparsed   bool   // in holds bytes not yet parsed (handshake leftovers)
	msg        []byte // fragments being reassembled
	msgBinary  bool
	fragmented bool
	ctrlTAT    int64 // ControlRate's state: theoretical arrival time, unix nanos

	// Write side. Everything queued for the client counts against its
	// bound: wq holds every byte not yet written, those a writer is on
	// included, and pong is the one pong waiting behind a backlog (nil
	// unless one is: an idle connection pays a pointer, not a buffer).
	wmu      sync.Mutex
	wq       []byte  // bytes not yet written, in order
	pong     *[]byte // pooled; the answer to the latest ping not yet written
	flushing bool    // a writer goroutine owns the socket's write side
	closing  bool    // a close is in progress: no more writes

	armMu sync.Mutex // orders re-arming against teardown (fd reuse)

	closeOnce   sync.Once
	closeCode   int
	closeReason string
	closeWhy    CloseReason
}

// ID is the connection's ID, unique in the cluster.
func (c *Conn) ID() string { return c.id }

// ConnectedAt is when the upgrade request arrived.
func (c *Conn) ConnectedAt() time.Time { return c.connectedAt }

// SourceIP is the client's address as the edge sees it.
func (c *Conn) SourceIP() string { return c.sourceIP }

// UserAgent is the User-Agent of the upgrade request.
func (c *Conn) UserAgent() string { return c.userAgent }

// Subprotocol is the negotiated Sec-WebSocket-Protocol, if any.
func (c *Conn) Subprotocol() string { return c.subprotocol }

// UserID is the user the $connect handler attached, if any.
func (c *Conn) UserID() string { return c.userID }

// Value is what the Handler attached in Connect (Accept.Value).
func (c *Conn) Value() any { return c.value }

// Established reports whether the 101 response was sent.
func (c *Conn) Established() bool { return c.established.Load() }

// LastActiveAt is when the client last sent a frame (or connected).
func (c *Conn) LastActiveAt() time.Time { return time.Unix(0, c.lastActive.Load()) }

// Info reports the connection as GET /@connections/{id} shows it.
func (c *Conn) Info() conn.Info {
	return conn.Info{
		ID: c.id, Node: c.srv.nodeID, ConnectedAt: c.connectedAt, LastActiveAt: c.LastActiveAt(),
		SourceIP: c.sourceIP, UserAgent: c.userAgent, UserID: c.userID,
	}
}

// Send writes data as one text or binary message.
func (c *Conn) Send(data []byte, binary bool) error {
	if len(data) > c.srv.cfg.MaxMessageBytes {
		return conn.ErrTooLarge
	}
	op := byte(opText)
	if binary {
		op = opBinary
	}
	var hdr [10]byte
	return c.write(appendHeader(hdr[:0], true, op, len(data)), data, dataFrame)
}

// SendFrame writes a complete frame made by AppendFrame. Fan-out encodes the
// frame once and hands the same bytes to every member.
func (c *Conn) SendFrame(frame []byte) error { return c.write(frame, nil, dataFrame) }

// Close closes the connection with a close frame carrying code and reason,
// after whatever is already queued.
func (c *Conn) Close(code int, reason string, why CloseReason) {
	c.closeWith(code, reason, why)
}

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

// queued is what the connection holds for the client. Called with wmu held.
func (c *Conn) queued() int {
	n := len(c.wq)
	if c.pong != nil {
		n += len(*c.pong)
	}
	return n
}

// write queues or writes a+b. Every byte queued counts against the
// connection's bound; control frames may use controlAllowance above it.
func (c *Conn) write(a, b []byte, kind frameKind) error {
	size := len(a) + len(b)
	c.wmu.Lock()
	if c.closing || c.state.Load() == stateClosed {
		c.wmu.Unlock()
		return conn.ErrGone
	}
	if c.state.Load() == statePending {
		// Posted while $connect runs: held and sent right after the 101
		// (or refused like API Gateway does, if so configured).
		limit := c.srv.cfg.PendingQueueBytes
		if kind != dataFrame {
			limit = max(limit, 0) + controlAllowance
		}
		if limit < 0 {
			c.wmu.Unlock()
			return conn.ErrGone
		}
		if len(c.wq)+size > limit {
			c.wmu.Unlock()
			c.srv.metrics.pendingDropped.Inc()
			return conn.ErrBufferFull
		}
		c.wq = append(append(c.wq, a...), b...)
		c.wmu.Unlock()
		return nil
	}
	if c.flushing || len(c.wq) > 0 {
		limit := c.srv.cfg.MaxQueueBytes
		if kind != dataFrame {
			limit += controlAllowance
		}
		extra := size
		if kind == pongFrame && c.pong != nil {
			extra -= len(*c.pong) // replaces the pending one
		}
		if c.queued()+extra > limit {
			c.wmu.Unlock()
			c.abort(CodePolicy, "slow consumer", ReasonSlowConsumer)
			return conn.ErrBufferFull
		}
		if kind == pongFrame {
			c.setPong(a, b)
			c.wmu.Unlock()
			return nil
		}
		c.wq = append(append(c.wq, a...), b...)
		c.wmu.Unlock()
		c.srv.metrics.framesOut.Inc()
		c.srv.metrics.bytesOut.Add(float64(size))
		return nil
	}
	n, err := c.writeNow(a, b)
	if err != nil {
		c.wmu.Unlock()
		c.abort(CodeAbnormal, "write error", ReasonIOError)
		return conn.ErrGone
	}
	c.srv.metrics.framesOut.Inc()
	c.srv.metrics.bytesOut.Add(float64(size))
	if n < size {
		c.queueRest(a, b, n)
	}
	c.wmu.Unlock()
	return nil
}

// setPong makes a+b the one pong waiting behind the backlog, replacing a
// pong not yet written: RFC 6455 §5.5.3 allows answering only the most
// recent ping, so a client that pings and never reads costs at most one
// control frame, not one per ping. Called with wmu held, while a writer
// owns the socket.
func (c *Conn) setPong(a, b []byte) {
	if c.pong == nil {
		c.pong = pongPool.Get().(*[]byte)
	} else {
		c.srv.metrics.pongsCoalesced.Inc()
	}
	*c.pong = append(append((*c.pong)[:0], a...), b...)
	c.startFlusher()
}

// queuePong moves the pending pong to the end of wq, where the writer
// sends it: wq always ends at a frame boundary. Called with wmu held.
func (c *Conn) queuePong() {
	if c.pong == nil {
		return
	}
	c.wq = append(c.wq, *c.pong...)
	c.srv.metrics.framesOut.Inc()
	c.srv.metrics.bytesOut.Add(float64(len(*c.pong)))
	c.dropPong()
}

// dropPong returns the pending-pong slot to its pool. Called with wmu held.
func (c *Conn) dropPong() {
	if c.pong != nil {
		*c.pong = (*c.pong)[:0]
		pongPool.Put(c.pong)
		c.pong = nil
	}
}

// queueRest queues what writeNow could not write and starts a writer. Called
// with wmu held.
func (c *Conn) queueRest(a, b []byte, n int) {
	if n < len(a) {
		c.wq = append(append(c.wq, a[n:]...), b...)
	} else {
		c.wq = append(c.wq, b[n-len(a):]...)
	}
	c.startFlusher()
}

// startFlusher starts the goroutine that owns the write side while a backlog
// exists. Called with wmu held.
func (c *Conn) startFlusher() {
	if c.flushing {
		return
	}
	c.flushing = true
	c.srv.wg.Add(1)
	go c.flush()
}

// writeNow writes without blocking; it returns how much was written. EAGAIN
// is not an error: the caller queues the rest.
func (c *Conn) writeNow(a, b []byte) (int, error) {
	op := ioOps.Get().(*ioOp)
	op.a, op.b, op.n, op.err = a, b, 0, nil
	err := c.raw.Write(op.write)
	n, werr := op.n, op.err
	op.a, op.b, op.iov = nil, nil, [2][]byte{}
	ioOps.Put(op)
	if err != nil {
		return n, err
	}
	return n, werr
}

// ioOp carries one raw read or write through RawConn's callback. Pooled,
// with its callbacks bound once, so the hot paths do not allocate a
// closure per call.
type ioOp struct {
	a, b  []byte
	n     int
	err   error
	iov   [2][]byte
	write func(fd uintptr) bool
	read  func(fd uintptr) bool
}

var ioOps = sync.Pool{New: func() any {
	op := &ioOp{}
	op.write, op.read = op.doWrite, op.doRead
	return op
}}

func (op *ioOp) doWrite(fd uintptr) bool {
	a, b := op.a, op.b
	for {
		var m int
		if len(b) == 0 || op.n >= len(a) {
			rest := a[min(op.n, len(a)):]
			if op.n >= len(a) {
				rest = b[op.n-len(a):]
			}
			if len(rest) == 0 {
				return true
			}
			m, op.err = unix.Write(int(fd), rest)
		} else {
			op.iov[0], op.iov[1] = a[op.n:], b
			m, op.err = unix.Writev(int(fd), op.iov[:])
		}
		if m > 0 {
			op.n += m
		}
		if op.err == unix.EINTR {
			continue
		}
		if op.err == unix.EAGAIN {
			op.err = nil
			return true
		}
		if op.err != nil || op.n == len(a)+len(b) {
			return true
		}
	}
}

func (op *ioOp) doRead(fd uintptr) bool {
	for {
		op.n, op.err = unix.Read(int(fd), op.a)
		if op.err != unix.EINTR {
			return true
		}
	}
}

// flush writes the backlog with blocking writes bounded by WriteTimeout, then
// exits. It tears the connection down if a close was waiting for the backlog.
// The bytes being written stay in wq until they are written, so the queue
// bound covers them too: a client that does not read holds at most
// MaxQueueBytes (plus controlAllowance), never that much again per write.
func (c *Conn) flush() {
	defer c.srv.wg.Done()
	for {
		c.wmu.Lock()
		c.queuePong()
		buf := c.wq
		if len(buf) == 0 {
			c.wq = nil // let the backing array go
			c.flushing = false
			closing := c.closing
			c.wmu.Unlock()
			if closing {
				c.teardown()
			}
			return
		}
		c.wmu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
		_, err := c.nc.Write(buf)
		if err != nil {
			why, reason := ReasonIOError, "write error"
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				why, reason = ReasonWriteTimeout, "write timeout"
			}
			c.wmu.Lock()
			c.flushing = false
			c.wq = nil
			c.dropPong()
			c.wmu.Unlock()
			c.abort(CodeAbnormal, reason, why)
			return
		}
		c.wmu.Lock()
		// Writers only appended after buf meanwhile, unless teardown
		// emptied the queue.
		if len(c.wq) >= len(buf) {
			c.wq = c.wq[len(buf):]
		} else {
			c.wq = nil
		}
		c.wmu.Unlock()
	}
}

// closeWith starts a graceful close: a close frame after the queued data,
// then teardown (by the writer goroutine if one is flushing).
func (c *Conn) closeWith(code int, reason string, why CloseReason) {
	c.closeReport(code, code, reason, why)
}

// closeReport sends code in the close frame but reports reported to the
// Handler (a client's close without a code is echoed as 1000, reported 1005).
func (c *Conn) closeReport(code, reported int, reason string, why CloseReason) {
	c.wmu.Lock()
	if c.closing || c.state.Load() == stateClosed {
		c.wmu.Unlock()
		return
	}
	c.closing = true
	c.setCloseInfo(reported, reason, why)
	if c.state.Load() == statePending {
		c.wq = nil // the handshake goroutine sees closing and gives up
		c.wmu.Unlock()
		return
	}
	p := closePayload(code, reason)
	var hdr [10]byte
	h := appendHeader(hdr[:0], true, opClose, len(p))
	if c.flushing || len(c.wq) > 0 {
		c.queuePong() // nothing may follow the close frame
		if len(c.wq)+len(h)+len(p) > c.srv.cfg.MaxQueueBytes+controlAllowance {
			// Even the close frame does not fit: the client is not
			// reading, so it would never see it. Cut it off.
			c.wmu.Unlock()
			c.teardown()
			return
		}
		c.wq = append(append(c.wq, h...), p...)
		c.startFlusher()
		c.wmu.Unlock()
		return
	}
	n, err := c.writeNow(h, p)
	if err == nil && n < len(h)+len(p) {
		c.queueRest(h, p, n)
		c.wmu.Unlock()
		return
	}
	c.wmu.Unlock()
	c.teardown()
}

// abort tears the connection down at once, without a close frame (or with
// one only if it can be written without waiting).
func (c *Conn) abort(code int, reason string, why CloseReason) {
	c.wmu.Lock()
	if !c.closing {
		c.closing = true
		c.setCloseInfo(code, reason, why)
		if !c.flushing && len(c.wq) == 0 && c.state.Load() == stateOpen && code != CodeAbnormal {
			p := closePayload(code, reason)
			var hdr [10]byte
			_, _ = c.writeNow(appendHeader(hdr[:0], true, opClose, len(p)), p)
		}
	}
	c.wmu.Unlock()
	c.teardown()
}

func (c *Conn) setCloseInfo(code int, reason string, why CloseReason) {
	c.closeCode, c.closeReason, c.closeWhy = code, reason, why
}

// teardown releases the connection exactly once and reports it to the Handler.
func (c *Conn) teardown() {
	c.closeOnce.Do(func() {
		c.armMu.Lock()
		wasOpen := c.state.Swap(stateClosed) == stateOpen
		if wasOpen {
			c.srv.reactor.remove(c)
		}
		c.armMu.Unlock()
		c.srv.hub.remove(c)
		_ = c.nc.Close()
		c.wmu.Lock()
		code, reason, why := c.closeCode, c.closeReason, c.closeWhy
		if !c.closing { // torn down without closeWith/abort (cannot happen; be safe)
			code, why = CodeAbnormal, ReasonIOError
		}
		c.closing = true
		c.wq = nil
		c.dropPong()
		c.wmu.Unlock()
		c.srv.metrics.closed.WithLabelValues(why.String()).Inc()
		if c.established.Load() {
			c.srv.metrics.open.Dec()
		}
		c.srv.log.Debug("connection closed", "conn", c.id, "code", code, "reason", reason, "why", why.String())
		if c.srv.handler != nil && c.handlerOwned {
			c.srv.handler.Close(c, code, reason, why)
		}
		c.srv.connWG.Done()
	})
}

// onReadable runs on a reactor worker when the socket is readable. It reads
// what has arrived, handles every complete frame and keeps a partial one for
// later. It reports whether the connection should be re-armed.
func (c *Conn) onReadable() bool {
	if c.unparsed {
		// Frames that arrived together with the handshake.
		c.unparsed = false
		c.process()
	}
	for round := 0; round < 4; round++ {
		if c.state.Load() != stateOpen {
			break
		}
		if c.in == nil {
			c.takeIn()
		}
		space := (*c.in)[c.inLen:]
		n, err := c.readNow(space)
		if n > 0 {
			c.inLen += n
			c.srv.metrics.bytesIn.Add(float64(n))
			c.process()
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil || n == 0 {
			c.abort(CodeAbnormal, "", ReasonPeerGone)
			break
		}
		if n < len(space) {
			break
		}
	}
	if c.state.Load() != stateOpen {
		c.releaseIn()
		return false
	}
	if c.inLen == 0 {
		c.releaseIn()
		c.partialAt.Store(0)
	} else if c.partialAt.Load() == 0 {
		c.partialAt.Store(time.Now().UnixNano())
	}
	return true
}

// takeIn borrows a read buffer for a partial frame; releaseIn returns it.
// The pool holds the *[]byte itself, so neither allocates.
func (c *Conn) takeIn() {
	c.in = c.srv.bufPool.Get().(*[]byte)
	c.inLen = 0
}

func (c *Conn) releaseIn() {
	if c.in != nil {
		c.srv.bufPool.Put(c.in)
		c.in, c.inLen = nil, 0
	}
}

// readNow reads without blocking. It returns EAGAIN when nothing is there.
func (c *Conn) readNow(p []byte) (int, error) {
	op := ioOps.Get().(*ioOp)
	op.a, op.n, op.err = p, 0, nil
	err := c.raw.Read(op.read)
	n, rerr := op.n, op.err
	op.a = nil
	ioOps.Put(op)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		n = 0
	}
	if rerr == nil && n == 0 {
		return 0, io.EOF
	}
	return n, rerr
}

// process handles every complete frame in the input buffer.
func (c *Conn) process() {
	off := 0
	now := time.Now().UnixNano()
	for c.state.Load() == stateOpen {
		buf := (*c.in)[off:c.inLen]
		h, err := parseHeader(buf)
		if err == errIncomplete {
			break
		}
		if err != nil {
			c.closeWith(CodeProtocolError, "invalid frame length", ReasonProtocolError)
			return
		}
		if !c.checkHeader(&h) {
			return
		}
		total := h.hdrSize + int(h.length)
		if len(buf) < total {
			break
		}
		payload := buf[h.hdrSize:total]
		unmask(payload, h.mask)
		off += total
		c.lastActive.Store(now)
		c.pingSent.Store(0)
		c.srv.metrics.framesIn.Inc()
		c.handleFrame(&h, payload, now)
	}
	if off > 0 {
		c.inLen = copy(*c.in, (*c.in)[off:c.inLen])
		// FrameTimeout measures one frame's age: a frame completed, so the
		// bytes left over (if any) are a new frame that began with this
		// read. A client streaming frames whose reads end mid-frame is
		// never "stuck"; one that stalls inside a frame still is.
		if c.inLen == 0 {
			c.partialAt.Store(0)
		} else {
			c.partialAt.Store(now)
		}
	}
}

// checkHeader enforces the RFC 6455 rules a header alone can break.
func (c *Conn) checkHeader(h *frameHeader) bool {
	switch {
	case h.rsv != 0:
		c.closeWith(CodeProtocolError, "reserved bits set", ReasonProtocolError)
	case !h.masked:
		c.closeWith(CodeProtocolError, "client frames must be masked", ReasonProtocolError)
	case h.op >= 0x8 && (h.length > 125 || !h.fin):
		c.closeWith(CodeProtocolError, "invalid control frame", ReasonProtocolError)
	case h.op != opContinuation && h.op != opText && h.op != opBinary && h.op != opClose && h.op != opPing && h.op != opPong:
		c.closeWith(CodeProtocolError, "unknown opcode", ReasonProtocolError)
	case h.length > int64(c.srv.cfg.MaxFrameBytes):
		c.closeWith(CodeTooBig, "frame too big", ReasonTooBig)
	default:
		return true
	}
	return false
}

func (c *Conn) handleFrame(h *frameHeader, payload []byte, now int64) {
	cfg := &c.srv.cfg
	switch h.op {
	case opPing:
		if !c.allowControl(now) {
			return
		}
		var hdr [10]byte
		_ = c.write(appendHeader(hdr[:0], true, opPong, len(payload)), payload, pongFrame)
	case opPong:
		// Liveness only; lastActive and pingSent were updated by the caller.
		// Unsolicited pongs are allowed (RFC 6455 §5.5.3) but cost a
		// worker's time like pings do, so they count against the rate.
		c.allowControl(now)
	case opClose:
		c.onClose(payload)
	case opText, opBinary:
		if c.fragmented {
			c.closeWith(CodeProtocolError, "new message inside a fragmented message", ReasonProtocolError)
			return
		}
		if h.fin {
			c.deliver(payload, h.op == opBinary)
			return
		}
		c.fragmented = true
		c.msgBinary = h.op == opBinary
		c.msg = append(make([]byte, 0, min(cfg.MaxMessageBytes, 2*len(payload)+512)), payload...)
	case opContinuation:
		if !c.fragmented {
			c.closeWith(CodeProtocolError, "continuation without a message", ReasonProtocolError)
			return
		}
		if len(c.msg)+len(payload) > cfg.MaxMessageBytes {
			c.msg, c.fragmented = nil, false
			c.closeWith(CodeTooBig, "message too big", ReasonTooBig)
			return
		}
		c.msg = append(c.msg, payload...)
		if h.fin {
			msg := c.msg
			c.msg, c.fragmented = nil, false
			c.deliver(msg, c.msgBinary)
		}
	}
}

// allowControl counts a ping or pong from the client against ControlRate
// (GCRA, as in internal/admission: ctrlTAT is the whole state). Over the
// rate the client is cut off at once with 1008 — with a close frame if it
// can be written without waiting: a flooder that does not read is not
// given WriteTimeout to drain a graceful close. Runs on the read worker.
func (c *Conn) allowControl(now int64) bool {
	rate := c.srv.cfg.ControlRate
	if rate < 0 {
		return true
	}
	// Rates below one per hour are clamped to that (and cannot overflow).
	iv := int64(min(max(1, float64(time.Second)/rate), float64(time.Hour)))
	tolerance := iv * int64(max(c.srv.cfg.ControlBurst, 1)-1)
	t := max(c.ctrlTAT, now)
	if t-now > tolerance {
		c.abort(CodePolicy, "control frame rate exceeded", ReasonControlRate)
		return false
	}
	c.ctrlTAT = t + iv
	return true
}

func (c *Conn) deliver(data []byte, binary bool) {
	if !binary && !utf8.Valid(data) {
		c.closeWith(CodeInvalidPayload, "invalid UTF-8", ReasonInvalidUTF8)
		return
	}
	c.srv.metrics.messagesIn.Inc()
	if p := c.srv.cfg.AppPing; p != "" && !binary && string(data) == p {
		c.srv.metrics.appPings.Inc()
		_ = c.Send([]byte(c.srv.cfg.AppPong), false)
		return
	}
	if c.srv.handler != nil {
		c.srv.handler.Message(c, data, binary)
	}
}

// onClose answers a client's close frame and ends the connection with the
// client's code.
func (c *Conn) onClose(p []byte) {
	code, reason := CodeNoStatus, ""
	switch {
	case len(p) == 1:
		c.closeWith(CodeProtocolError, "invalid close frame", ReasonProtocolError)
		return
	case len(p) >= 2:
		code = int(p[0])<<8 | int(p[1])
		if !rules.ValidCloseCode(code) {
			c.closeWith(CodeProtocolError, "invalid close code", ReasonProtocolError)
			return
		}
		if !utf8.Valid(p[2:]) {
			c.closeWith(CodeInvalidPayload, "invalid UTF-8 in close reason", ReasonInvalidUTF8)
			return
		}
		reason = string(p[2:])
	}
	// Echo the code (RFC 6455 §5.5.1), then report what the client said.
	echo := code
	if echo == CodeNoStatus {
		echo = CodeNormal
	}
	c.closeReport(echo, code, reason, ReasonClientClose)
}

// unmask XORs payload with the client's mask.
func unmask(p []byte, mask [4]byte) {
	if len(p) == 0 {
		return
	}
	ws.Cipher(p, mask, 0)
}

type rawConn = syscall.RawConn
