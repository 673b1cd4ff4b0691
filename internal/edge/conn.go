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

// Conn is one client connection. An idle Conn owns no goroutine and no
// buffer: reads happen on a reactor worker when the socket is readable, and a
// writer goroutine exists only while the client has a backlog.
type Conn struct {
	srv *Server
	id  string
	nc  net.Conn
	raw rawConn
	fd  int

	connectedAt int64 // unix nanos
	sourceIP    string
	userAgent   string

	// Set during the handshake, before the connection is published to the
	// reactor; read-only afterwards.
	subprotocol string
	userID      string
	value       any

	gen uint32 // the reactor's generation of fd (reactor.add)
	// st is the phase of the connection's life and its flags (state.go);
	// it changes only with mu held.
	st         atomic.Uint32
	lastActive atomic.Int64 // unix nanos of the last frame from the client
	pingSent   atomic.Int64 // unix nanos of an unanswered server ping, 0 if none
	partialAt  atomic.Int64 // unix nanos since a partial frame sits in the buffer

	// Read side, owned by the one worker running onReadable (EPOLLONESHOT).
	readMu  sync.Mutex
	in      *[]byte // pooled buffer; nil while no partial frame is buffered
	inLen   int
	frag    *reassembly // the fragmented message being reassembled; nil if none
	ctrlTAT int64       // ControlRate's state: theoretical arrival time, unix nanos

	// Next to each other so that they share one word (the Conn's size is
	// per idle connection).
	deflate  bool // permessage-deflate was negotiated (deflate.go); set during the handshake
	unparsed bool // read side: in holds bytes not yet parsed (handshake leftovers)

	// Write side: mu guards st's changes, the outbox and the cause.
	mu    sync.Mutex
	out   outbox
	cause closeCause // why it ends; the first one recorded wins
	rs    *resumable // resume state (resume.go); nil unless the client asked for it
}

// reassembly is a fragmented message's state, kept only while one is being
// reassembled (rare: its fields would cost every idle Conn a word more).
type reassembly struct {
	msg     []byte // the fragments so far
	binary  bool
	deflate bool // compressed (RSV1 on its first frame)
}

// ID is the connection's ID, unique in the cluster.
func (c *Conn) ID() string { return c.id }

// ConnectedAt is when the upgrade request arrived.
func (c *Conn) ConnectedAt() time.Time { return time.Unix(0, c.connectedAt) }

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
func (c *Conn) Established() bool { return c.has(flagUpgraded) }

// LastActiveAt is when the client last sent a frame (or connected).
func (c *Conn) LastActiveAt() time.Time { return time.Unix(0, c.lastActive.Load()) }

// Info reports the connection as GET /@connections/{id} shows it.
func (c *Conn) Info() conn.Info {
	return conn.Info{
		ID: c.id, Node: c.srv.nodeID, ConnectedAt: c.ConnectedAt(), LastActiveAt: c.LastActiveAt(),
		SourceIP: c.sourceIP, UserAgent: c.userAgent, UserID: c.userID, Detached: c.phase() == detached,
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
	if c.deflate && c.srv.deflate.compressible(len(data)) {
		return c.sendDeflated(op, data)
	}
	var hdr [10]byte
	return c.write(appendHeader(hdr[:0], true, op, len(data)), data, dataFrame)
}

// sendDeflated compresses data for this connection alone (a post, a
// two-way reply) and writes it; data that does not shrink goes plain.
func (c *Conn) sendDeflated(op byte, data []byte) error {
	d := c.srv.deflate
	buf := d.scratch()
	z, ok := d.appendDeflated(*buf, data, false)
	*buf = z[:0]
	defer d.release(buf)
	var hdr [10]byte
	if !ok {
		return c.write(appendHeader(hdr[:0], true, op, len(data)), data, dataFrame)
	}
	h := appendHeader(hdr[:0], true, op, len(z))
	h[0] |= rsv1
	return c.write(h, z, dataFrame)
}

// Close closes the connection with a close frame carrying code and reason,
// after whatever is already queued.
func (c *Conn) Close(code int, reason string, why CloseReason) {
	c.close(closeCause{code, reason, why})
}

// write queues or writes a+b. Every byte queued counts against the
// connection's bound; control frames may use controlAllowance above it.
func (c *Conn) write(a, b []byte, kind frameKind) error {
	size := len(a) + len(b)
	c.mu.Lock()
	switch c.phase() {
	case open:
	case handshaking:
		err := c.hold(a, b, kind)
		c.mu.Unlock()
		return err
	case detached:
		return c.queueDetached(a, b, kind) // unlocks
	default:
		c.mu.Unlock()
		return conn.ErrGone
	}
	bound := c.srv.cfg.MaxQueueBytes
	if c.rs != nil {
		bound += c.rs.credit
	}
	if c.out.busy() {
		if !c.out.fits(kind, size, bound) {
			c.mu.Unlock()
			c.abort(causeSlowConsumer)
			return conn.ErrBufferFull
		}
		if kind == pongFrame {
			if c.out.setPong(a, b) {
				c.srv.metrics.pongsCoalesced.Inc()
			}
			c.startWriter()
			c.mu.Unlock()
			return nil
		}
		if kind == dataFrame {
			c.keep(a, b)
		}
		c.out.push(a, b)
		c.mu.Unlock()
		c.srv.metrics.framesOut.Inc()
		c.srv.metrics.bytesOut.Add(float64(size))
		return nil
	}
	if kind == dataFrame {
		c.keep(a, b)
	}
	n, err := c.writeNow(a, b)
	if err != nil {
		nc := c.nc
		c.mu.Unlock()
		c.abortFrom(nc, causeWriteError)
		if c.rs != nil && kind == dataFrame && c.phase() != closed {
			return nil // kept: it is sent again on resume
		}
		return conn.ErrGone
	}
	c.srv.metrics.framesOut.Inc()
	c.srv.metrics.bytesOut.Add(float64(size))
	if n < size {
		c.out.pushRest(a, b, n)
		c.startWriter()
	}
	c.mu.Unlock()
	return nil
}

// sealPong moves the pending pong behind the backlog, where the writer sends
// it, and counts it as sent. Called with mu held.
func (c *Conn) sealPong() {
	if n := c.out.sealPong(); n > 0 {
		c.srv.metrics.framesOut.Inc()
		c.srv.metrics.bytesOut.Add(float64(n))
	}
}

// startWriter starts the goroutine that owns the write side while a backlog
// exists, unless one runs. Called with mu held.
func (c *Conn) startWriter() {
	if c.out.startWriter() {
		c.srv.wg.Add(1)
		go c.flush(c.nc)
	}
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
// The bytes being written stay in the outbox until they are written, so the
// queue bound covers them too. A writer belongs to one socket, nc: once a
// resumed connection writes to a new one, the old writer leaves the outbox
// alone.
func (c *Conn) flush(nc net.Conn) {
	defer c.srv.wg.Done()
	for {
		c.mu.Lock()
		if c.nc != nc {
			c.mu.Unlock()
			return
		}
		c.sealPong()
		buf, ok := c.out.take()
		// Read with the turn's end, in one critical section: a close that
		// comes later writes its frame itself or starts a new writer.
		closeWaited := !ok && c.phase() == closing
		if !ok && c.rs != nil {
			// Everything is written: the usual bound again, and the
			// replay window back to its size.
			c.rs.credit = 0
			c.rs.trim(c.srv.cfg.ResumeReplayBytes, 0)
		}
		c.mu.Unlock()
		if !ok {
			if closeWaited {
				c.teardown()
			}
			return
		}
		_ = nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
		_, err := nc.Write(buf)
		if err != nil {
			cause := causeWriteError
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				cause = causeWriteTimeout
			}
			c.writerFailed(nc, cause)
			return
		}
		c.mu.Lock()
		if c.nc == nc {
			c.out.written(len(buf))
		}
		c.mu.Unlock()
	}
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
		if !c.phase().reading() {
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
			c.abort(causePeerGone)
			break
		}
		if n < len(space) {
			break
		}
	}
	if !c.phase().reading() {
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
	for c.phase().reading() {
		buf := (*c.in)[off:c.inLen]
		h, err := parseHeader(buf)
		if err == errIncomplete {
			break
		}
		if err != nil {
			c.close(causeBadLength)
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
	rsv := h.rsv
	if rsv == rsv1>>4 && c.deflate && (h.op == opText || h.op == opBinary) {
		// The first frame of a compressed message (RFC 7692 §6); on a
		// continuation or control frame RSV1 stays a protocol error.
		rsv = 0
	}
	switch {
	case rsv != 0:
		c.close(causeReservedBits)
	case !h.masked:
		c.close(causeUnmasked)
	case h.op >= 0x8 && (h.length > 125 || !h.fin):
		c.close(causeBadControl)
	case h.op != opContinuation && h.op != opText && h.op != opBinary && h.op != opClose && h.op != opPing && h.op != opPong:
		c.close(causeUnknownOpcode)
	case h.length > int64(c.srv.cfg.MaxFrameBytes):
		c.close(causeFrameTooBig)
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
		if c.frag != nil {
			c.close(causeNestedMessage)
			return
		}
		deflated := h.rsv != 0 // checkHeader let RSV1 through only if negotiated
		if h.fin {
			if deflated {
				c.deliverDeflated(payload, h.op == opBinary)
				return
			}
			c.deliver(payload, h.op == opBinary)
			return
		}
		c.frag = &reassembly{
			msg:    append(make([]byte, 0, min(cfg.MaxMessageBytes, 2*len(payload)+512)), payload...),
			binary: h.op == opBinary, deflate: deflated,
		}
	case opContinuation:
		f := c.frag
		if f == nil {
			c.close(causeLoneContinue)
			return
		}
		if len(f.msg)+len(payload) > cfg.MaxMessageBytes {
			c.frag = nil
			c.close(causeMessageTooBig)
			return
		}
		f.msg = append(f.msg, payload...)
		if h.fin {
			c.frag = nil
			if f.deflate {
				c.deliverDeflated(f.msg, f.binary)
				return
			}
			c.deliver(f.msg, f.binary)
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
		c.abort(causeControlRate)
		return false
	}
	c.ctrlTAT = t + iv
	return true
}

func (c *Conn) deliver(data []byte, binary bool) {
	if !binary && !utf8.Valid(data) {
		c.close(causeInvalidUTF8)
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

// deliverDeflated inflates a compressed message, bounded by
// MaxMessageBytes (close 1009 past it), and delivers it.
func (c *Conn) deliverDeflated(z []byte, binary bool) {
	buf, err := c.srv.deflate.inflate(z, c.srv.cfg.MaxMessageBytes)
	switch {
	case errors.Is(err, errInflateTooBig):
		c.close(causeMessageTooBig)
		return
	case err != nil:
		c.close(causeBadCompression)
		return
	}
	c.deliver(*buf, binary)
	c.srv.deflate.release(buf)
}

// onClose answers a client's close frame and ends the connection with the
// client's code.
func (c *Conn) onClose(p []byte) {
	code, reason := CodeNoStatus, ""
	switch {
	case len(p) == 1:
		c.close(causeBadCloseFrame)
		return
	case len(p) >= 2:
		code = int(p[0])<<8 | int(p[1])
		if !rules.ValidCloseCode(code) {
			c.close(causeBadCloseCode)
			return
		}
		if !utf8.Valid(p[2:]) {
			c.close(causeCloseUTF8)
			return
		}
		reason = string(p[2:])
	}
	// Echo the code (RFC 6455 §5.5.1), then report what the client said.
	c.close(clientClose(code, reason))
}

// unmask XORs payload with the client's mask.
func unmask(p []byte, mask [4]byte) {
	if len(p) == 0 {
		return
	}
	ws.Cipher(p, mask, 0)
}

type rawConn = syscall.RawConn
