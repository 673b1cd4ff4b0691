package edge

import (
	"net"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// phase is where a connection is in its life. Every change of phase is a
// method in this file, made with Conn.mu held; readers on the hot paths
// load it without the lock.
//
//	handshaking ──accept/upgrade──────────────────────────► open
//	    │  close, abort                                      │  close: frame written at once ─┐
//	    ▼                                                    │  close: frame queued           │
//	closeHeld ──upgrade: Open, then close(cause)──► open     ▼                                │
//	    │                                                 closing ──backlog written──┐        │
//	    │ (the handshake goroutine ends it)                  │ abort, write error    │        │
//	    ▼                                                    ▼                       ▼        ▼
//	  closed ◄───────────────────── teardown (exactly once) ◄────────────────────────────────┘
//	                                     ▲
//	open ──abort (socket lost), resumable──► detached ──resume: new socket──► open
//	                                          │ window over, close, queue full
//	                                          └──────────────► teardown
//
// A connection the handshake goroutine still owns (handshaking, closeHeld)
// is never torn down by anyone else: a close or abort from elsewhere is
// held as its cause, and the handshake goroutine ends it — with 410 before
// the 101, or with the close frame right after Open once the client has
// the 101. That is what makes a close landing between the 101 and the
// reactor keep its close frame and code, and makes Connect's outcome and
// a concurrent close unable to both finish the connection.
type phase uint32

const (
	handshaking phase = iota // $connect running or the 101 on its way; posts held (PendingQueueBytes)
	closeHeld                // a close or abort arrived during the handshake; its cause waits for the handshake's end
	open                     // upgraded: in the reactor, writes go to the socket
	closing                  // the close frame is queued behind the backlog; no more writes; torn down once written
	closed                   // torn down
	detached                 // resumable, socket lost: waits for its client within ResumeWindow (detach.go)
)

// Flags kept in the same word as the phase; set once, never cleared.
const (
	phaseMask    = 0xff
	flagOwned    = 1 << 8  // Connect accepted: the Handler hears exactly one Close
	flagUpgraded = 1 << 9  // the 101 was sent (Established)
	flagServed   = 1 << 10 // resumable: Open ran and the reactor has it, so a resume may take it over
)

var phaseNames = [...]string{"handshaking", "closeHeld", "open", "closing", "closed", "detached"}

func (p phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return "unknown"
}

// reading reports whether the reactor reads the connection and the sweeper
// watches it: from the upgrade until teardown, a graceful close included
// (the client's reply and its going away are still noticed).
func (p phase) reading() bool { return p == open || p == closing }

func (c *Conn) phase() phase { return phase(c.st.Load() & phaseMask) }

// setPhase changes the phase, keeping the flags. Called with mu held.
func (c *Conn) setPhase(p phase) { c.st.Store(c.st.Load()&^phaseMask | uint32(p)) }

// setFlag sets a flag. Called with mu held.
func (c *Conn) setFlag(f uint32) { c.st.Store(c.st.Load() | f) }

func (c *Conn) has(f uint32) bool { return c.st.Load()&f != 0 }

// hold queues a+b posted while $connect runs, to be sent right after the
// 101 (or refuses it like API Gateway does, if so configured). Called with
// mu held, in phase handshaking.
func (c *Conn) hold(a, b []byte, kind frameKind) error {
	bound := c.srv.cfg.PendingQueueBytes
	if bound < 0 && kind == dataFrame {
		return conn.ErrGone
	}
	// Nothing is written before the 101, so pongs are not coalesced: every
	// frame counts in full (fits with dataFrame).
	limit := max(bound, 0)
	if kind != dataFrame {
		limit += controlAllowance
	}
	if !c.out.fits(dataFrame, len(a)+len(b), limit) {
		c.srv.metrics.pendingDropped.Inc()
		return conn.ErrBufferFull
	}
	if kind == dataFrame {
		c.keep(a, b)
	}
	c.out.push(a, b)
	return nil
}

// acceptConnect records that Connect accepted c, so the Handler now owns
// one Close for it. It reports whether a close arrived while Connect ran:
// then that close wins and the caller tears c down instead of upgrading.
func (c *Conn) acceptConnect() (held bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setFlag(flagOwned)
	return c.phase() == closeHeld
}

// refuse ends a connection $connect refused: it never existed, so nobody
// hears of its end and it is not counted as closed. The caller answers
// and closes the socket.
func (c *Conn) refuse() {
	c.mu.Lock()
	if c.phase() == closed {
		c.mu.Unlock()
		return
	}
	if c.out.reset() > 0 {
		c.srv.metrics.pendingDropped.Inc()
	}
	c.setPhase(closed)
	c.mu.Unlock()
	c.srv.hub.remove(c)
	c.srv.connWG.Done()
}

// upgrade moves c, whose 101 was sent, to open and starts writing what was
// posted during $connect. If a close arrived during the handshake it
// returns that cause, which the caller applies after Open.
func (c *Conn) upgrade() (held closeCause, wasHeld bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if wasHeld = c.phase() == closeHeld; wasHeld {
		held = c.cause
	}
	c.setFlag(flagUpgraded)
	c.setPhase(open)
	c.srv.metrics.accepted.Inc()
	c.srv.metrics.open.Inc()
	c.srv.upgrades.Add(1)
	c.announceSession()
	if c.out.busy() {
		c.startWriter()
	}
	return held, wasHeld
}

// holdCause records cause as the connection's cause, unless one is
// recorded already: the first cause wins. Called with mu held.
func (c *Conn) holdCause(cause closeCause) {
	if c.cause.code == 0 {
		c.cause = cause
	}
}

// close starts a graceful close: a close frame after whatever is queued,
// then teardown (by the writer if the frame has to wait).
func (c *Conn) close(cause closeCause) {
	c.mu.Lock()
	switch c.phase() {
	case handshaking:
		// The handshake goroutine sees it and gives up (or, after the 101,
		// sends the close frame right after Open).
		c.cause = cause
		c.setPhase(closeHeld)
		c.out.reset()
		c.mu.Unlock()
		return
	case open:
	case detached: // no socket to send a frame on: it ends now, with this cause
		c.cause = cause
		c.mu.Unlock()
		c.teardown()
		return
	default: // closing already, or closed
		c.mu.Unlock()
		return
	}
	c.cause = cause
	c.setPhase(closing)
	p := cause.payload()
	var hdr [10]byte
	h := appendHeader(hdr[:0], true, opClose, len(p))
	if c.out.busy() {
		c.sealPong() // nothing may follow the close frame
		if !c.out.fits(controlFrame, len(h)+len(p), c.srv.cfg.MaxQueueBytes) {
			// Even the close frame does not fit: the client is not
			// reading, so it would never see it. Cut it off.
			c.mu.Unlock()
			c.teardown()
			return
		}
		c.out.push(h, p)
		c.startWriter()
		c.mu.Unlock()
		return
	}
	n, err := c.writeNow(h, p)
	if err == nil && n < len(h)+len(p) {
		c.out.pushRest(h, p, n)
		c.startWriter()
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.teardown()
}

// abort ends the connection at once, without a close frame (or with one
// only if it can be written without waiting). A connection still in its
// handshake is not torn down here: its socket is cut, so the handshake
// goroutine's next read or write fails at once, and that goroutine tears
// it down with this cause.
func (c *Conn) abort(cause closeCause) { c.abortFrom(nil, cause) }

// abortFrom is abort for a failure of socket nc, found without the lock
// held: if the connection has another socket by now (it was detached and
// resumed meanwhile), the failure is not the new socket's and is ignored.
// nil means the connection's socket, whichever it is.
func (c *Conn) abortFrom(nc net.Conn, cause closeCause) {
	c.mu.Lock()
	if nc != nil && c.nc != nc {
		c.mu.Unlock()
		return
	}
	switch c.phase() {
	case handshaking, closeHeld:
		c.holdCause(cause)
		c.setPhase(closeHeld)
		c.out.reset()
		c.mu.Unlock()
		_ = c.nc.Close()
		return
	case open:
		if c.mayDetach(cause) {
			fd, nc := c.detachLocked(cause)
			c.mu.Unlock()
			c.dropSocket(fd, nc)
			return
		}
		c.cause = cause
		c.setPhase(closing)
		if !c.out.busy() && cause.sendsFrame() {
			p := cause.payload()
			var hdr [10]byte
			_, _ = c.writeNow(appendHeader(hdr[:0], true, opClose, len(p)), p)
		}
	case closed, detached: // detached: a late error of the lost socket
		c.mu.Unlock()
		return
	}
	// closing: the cause recorded first stays.
	c.mu.Unlock()
	c.teardown()
}

// endHandshake ends a connection from the handshake goroutine, which owns
// it until the upgrade: with cause, unless a close held meanwhile has one.
// Once upgraded, it is an abort like any other.
func (c *Conn) endHandshake(cause closeCause) {
	c.mu.Lock()
	if p := c.phase(); p != handshaking && p != closeHeld {
		c.mu.Unlock()
		c.abort(cause)
		return
	}
	c.holdCause(cause)
	c.mu.Unlock()
	c.teardown()
}

// writerFailed ends the writer's turn on a write error: the client is cut
// off (the cause of a close already under way stays).
func (c *Conn) writerFailed(nc net.Conn, cause closeCause) {
	c.mu.Lock()
	if c.nc != nc || c.phase() == detached {
		// The socket this writer wrote to is gone already (detached, or
		// resumed on a new one): nothing of the connection's is its.
		c.mu.Unlock()
		return
	}
	c.out.reset()
	c.mu.Unlock()
	c.abortFrom(nc, cause)
}

// teardown releases the connection exactly once and reports it to the
// Handler: the only way to closed, apart from refuse.
func (c *Conn) teardown() {
	c.mu.Lock()
	was := c.phase()
	if was == closed {
		c.mu.Unlock()
		return
	}
	c.setPhase(closed)
	if was == detached {
		c.srv.resume.detached.Dec()
	}
	c.holdCause(causeUnknownTeardown)
	cause := c.cause
	c.out.reset()
	c.mu.Unlock()
	if was.reading() {
		// After the phase changed: a re-arm that races this sees closed,
		// or is undone by the socket's close (see reactor.arm).
		c.srv.reactor.remove(c)
	}
	c.srv.hub.remove(c)
	_ = c.nc.Close()
	c.srv.metrics.closed.WithLabelValues(cause.why.String()).Inc()
	if c.has(flagUpgraded) {
		c.srv.metrics.open.Dec()
	}
	c.srv.log.Debug("connection closed", "conn", c.id, "code", cause.code, "reason", cause.reason, "why", cause.why.String())
	if c.srv.handler != nil && c.has(flagOwned) {
		c.srv.handler.Close(c, cause.code, cause.reason, cause.why)
	}
	c.srv.connWG.Done()
}
