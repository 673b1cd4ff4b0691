package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/switchboardgw/switchboard/internal/conn"
)

// The detached phase (docs/resume.md): a resumable connection whose socket
// ended without a close handshake keeps its ID, its Handler state and its
// place in the hub for ResumeWindow, with no socket. Sends to it are kept
// (resumable.record) and sent on resume; a resume handshake with its token
// gives it a new socket. Every change is made with Conn.mu held, like the
// other phases' (state.go).

// detaches reports whether a connection ending with cause may be resumed:
// the socket went away (end of stream, reset, no pong, a write that failed
// or timed out). Every close someone decided (the client's close frame,
// the node's policies, a DELETE, a drain) ends it as before.
func (c closeCause) detaches() bool {
	switch c.why {
	case ReasonPeerGone, ReasonPingTimeout, ReasonWriteTimeout, ReasonIOError:
		return true
	}
	return false
}

// mayDetach reports whether an open c ending with cause detaches instead.
// Called with mu held.
func (c *Conn) mayDetach(cause closeCause) bool {
	return c.rs != nil && c.srv.cfg.ResumeWindow > 0 && cause.detaches() && !c.srv.draining.Load()
}

// detachLocked moves an open c to detached and returns its socket, which
// the caller drops (dropSocket) once mu is released. What the write queue
// held is dropped: every message in it is kept in c.rs too. Called with mu
// held.
func (c *Conn) detachLocked(cause closeCause) (fd int, nc net.Conn) {
	c.setPhase(detached)
	c.out.reset()
	c.rs.detachedAt = time.Now().UnixNano()
	c.rs.detachCode = cause
	c.rs.queued, c.rs.credit = 0, 0
	c.srv.resume.detached.Inc()
	c.srv.resume.detaches.Inc()
	c.srv.log.Debug("connection detached", "conn", c.id, "why", cause.why.String())
	return c.fd, c.nc
}

// dropSocket unregisters and closes the socket a detach took from c. The
// fd is the one detachLocked returned: by now c may hold a new one.
func (c *Conn) dropSocket(fd int, nc net.Conn) {
	r := c.srv.reactor
	_ = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	r.mu.Lock()
	if fd < len(r.conns) && r.conns[fd] == c {
		r.conns[fd] = nil
	}
	r.mu.Unlock()
	_ = nc.Close()
}

// served marks a resumable c as handed over by its handshake goroutine
// (Open done, in the reactor): only then may a resume take over its
// socket, so that Resumed never overlaps Open.
func (c *Conn) served() {
	if c.rs != nil {
		c.mu.Lock()
		c.setFlag(flagServed)
		c.mu.Unlock()
	}
}

// keep records the messages of a+b for resume. Called with mu held.
func (c *Conn) keep(a, b []byte) {
	if c.rs != nil && c.srv.cfg.ResumeWindow > 0 {
		c.record(a, b, len(c.out.buf))
	}
}

// record keeps a+b as the messages it holds: one frame (a header, b its
// payload), or with b empty one or more complete frames, as fan-out writes
// them (a Frame may hold several messages, and the client counts each).
// It reports false when the detached queue has no room. Called with mu
// held.
func (c *Conn) record(a, b []byte, unwritten int) bool {
	replay, queue := c.srv.cfg.ResumeReplayBytes, c.srv.cfg.MaxQueueBytes
	if len(b) > 0 {
		return c.rs.record(a, b, replay, queue, unwritten)
	}
	for len(a) > 0 {
		n := len(a)
		if h, err := parseHeader(a); err == nil && h.hdrSize+int(h.length) <= len(a) {
			n = h.hdrSize + int(h.length)
		} // else: not frames the edge made (cannot happen): kept whole
		if !c.rs.record(a[:n], nil, replay, queue, unwritten) {
			return false
		}
		unwritten += n
		a = a[n:]
	}
	return true
}

// announceSession puts the session frame in front of everything queued for
// c, right after the 101 (posts made during $connect follow it). Called
// with mu held.
func (c *Conn) announceSession() {
	if c.rs == nil {
		return
	}
	f := c.rs.appendSessionFrame(nil, c.id, c.rs.token, c.srv.cfg.ResumeWindow)
	c.rs.token = ""
	c.out.buf = append(f, c.out.buf...)
}

// queueDetached keeps a message sent to detached c. Control frames are
// dropped: there is nobody to ping. A message the queue bound has no room
// for ends c (the client could only resume with a gap). Called with mu
// held; it releases it.
func (c *Conn) queueDetached(a, b []byte, kind frameKind) error {
	if kind != dataFrame {
		c.mu.Unlock()
		return nil
	}
	if !c.record(a, b, 0) {
		c.cause = causeDetachedFull
		c.mu.Unlock()
		c.teardown()
		return conn.ErrGone
	}
	c.mu.Unlock()
	c.srv.metrics.framesOut.Inc()
	c.srv.metrics.bytesOut.Add(float64(len(a) + len(b)))
	return nil
}

// checkDetached is the sweeper's check of a detached c: past ResumeWindow
// (and not being resumed) it ends with the code of its lost socket and the
// reason "detached".
func (s *Server) checkDetached(c *Conn, now int64) func() {
	c.mu.Lock()
	due := c.phase() == detached && !c.rs.claimed && now-c.rs.detachedAt > int64(s.cfg.ResumeWindow)
	c.mu.Unlock()
	if !due {
		return nil
	}
	return func() {
		c.mu.Lock()
		if c.phase() != detached || c.rs.claimed {
			c.mu.Unlock()
			return
		}
		c.cause = closeCause{c.rs.detachCode.code, "detached", ReasonDetached}
		c.mu.Unlock()
		c.teardown()
	}
}

// claim lets a resume handshake take c, checking the token's secret and
// the client's count: "" on success, else the recovered:false reason. An
// open c (the edge has not noticed yet that its client moved) is detached
// first. A valid token whose missed messages are gone ends c at once: the
// client starts afresh, and the backend hears DISCONNECT now rather than
// when the window ends. The token is spent from here: a second resume with
// it fails even while this one runs.
func (c *Conn) claim(ask resumeAsk) string {
	c.mu.Lock()
	rs := c.rs
	p := c.phase()
	switch {
	case rs == nil || (p != open && p != detached) || !c.has(flagServed):
		c.mu.Unlock()
		return failUnknown
	case rs.claimed || !rs.matches(ask.secret):
		c.mu.Unlock()
		return failToken
	}
	var fd int
	var nc net.Conn
	if p == open {
		fd, nc = c.detachLocked(causePeerGone)
	}
	reason := rs.gap(ask.received)
	if ask.badCount {
		reason = failReceived
	}
	if reason != "" {
		c.cause = closeCause{rs.detachCode.code, "detached: not recovered", ReasonDetached}
	} else {
		rs.claimed = true
	}
	c.mu.Unlock()
	if nc != nil {
		c.dropSocket(fd, nc)
	}
	if reason != "" {
		c.teardown()
	}
	return reason
}

// unclaim gives c back to the window after a resume handshake failed
// before the 101.
func (c *Conn) unclaim() {
	c.mu.Lock()
	if c.rs != nil {
		c.rs.claimed = false
	}
	c.mu.Unlock()
}

// tryResume answers a resume request. handled is false when the connection
// cannot be recovered: the caller then opens a fresh one and tells the
// client why (failure). A refusal by the Handler (credentials, rates) is
// answered here with its HTTP status.
func (s *Server) tryResume(nc net.Conn, req *Request, ask resumeAsk, raw, leftover []byte, start time.Time) (handled bool, failure string) {
	if s.cfg.ResumeWindow <= 0 {
		return false, failDisabled
	}
	c := s.hub.get(ask.id)
	if c == nil {
		return s.resumeRemote(nc, req, ask, raw, leftover, start)
	}
	if reason := c.claim(ask); reason != "" {
		return false, reason
	}
	// Every refusal gives the connection back before the answer is
	// written, so a client that retries at once finds it detached.
	rejectReason := "bad_request"
	var deflateAccepted func() bool
	u := ws.Upgrader{
		OnRequest: func([]byte) error {
			if s.cfg.Path != "" && req.Path != s.cfg.Path {
				rejectReason = "path"
				c.unclaim()
				return ws.RejectConnectionError(ws.RejectionStatus(http.StatusNotFound), ws.RejectionReason("no WebSocket endpoint at this path"))
			}
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if !s.originAllowed(req.Origin) {
				rejectReason = "origin"
				c.unclaim()
				return nil, ws.RejectConnectionError(ws.RejectionStatus(http.StatusForbidden), ws.RejectionReason("origin not allowed"))
			}
			// Kept messages may be compressed (and later ones will be):
			// the new socket must speak permessage-deflate too. Without
			// context takeover a compressed message suits any socket.
			if c.deflate && !deflateAccepted() {
				rejectReason = "bad_request"
				c.unclaim()
				return nil, ws.RejectConnectionError(ws.RejectionStatus(http.StatusBadRequest),
					ws.RejectionReason("resume must offer permessage-deflate, as the connection negotiated it"))
			}
			if rs, ok := s.handler.(Resumer); ok {
				ctx, cancel := context.WithDeadline(s.ctx, req.Time.Add(s.cfg.HandshakeTimeout))
				err := rs.Resume(ctx, c, req)
				cancel()
				if err != nil {
					rejectReason = "denied"
					c.unclaim()
					return nil, s.refusal(c.id, err, "resume failed", "resume failed")
				}
			}
			h := http.Header{}
			if c.subprotocol != "" && slices.Contains(req.Protocols, c.subprotocol) {
				h.Set("Sec-WebSocket-Protocol", c.subprotocol)
			}
			return ws.HandshakeHeaderHTTP(h), nil
		},
	}
	if c.deflate { // read-only since the connection was published
		u.Negotiate, deflateAccepted = negotiator()
	}
	u.ReadBufferSize = upgradeReadBuffer(len(raw))
	if _, err := u.Upgrade(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(raw), nc}); err != nil {
		c.unclaim()
		s.metrics.rejected.WithLabelValues(rejectReason).Inc()
		_ = nc.Close()
		return true, ""
	}
	_ = nc.SetDeadline(time.Time{})
	if err := s.attach(c, nc, leftover, ask.received); err != nil {
		s.log.Warn("resume: connection not attached", "conn", c.id, "err", err)
		_ = nc.Close()
		return true, ""
	}
	s.metrics.handshake.Observe(time.Since(start).Seconds())
	return true, ""
}

// errNotDetached: the connection ended while its resume handshake ran.
var errNotDetached = errors.New("connection ended during its resume")

// attach gives claimed, detached c the socket nc, whose 101 was sent: it
// sends the session frame with a new token and the messages after
// received, and hands c to the reactor.
func (s *Server) attach(c *Conn, nc net.Conn, leftover []byte, received uint64) error {
	nc = s.slim(nc, c.id)
	raw, err := nc2raw(nc)
	if err != nil {
		c.unclaim()
		return err
	}
	fd := -1
	if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil {
		c.unclaim()
		return fmt.Errorf("socket fd: %w", err)
	}
	now := time.Now()
	// readMu: a worker still reading the lost socket finishes first; the
	// read state of that socket (a partial frame, a fragmented message)
	// is dropped.
	c.readMu.Lock()
	c.mu.Lock()
	rs := c.rs
	if c.phase() != detached || !rs.claimed {
		c.mu.Unlock()
		c.readMu.Unlock()
		return errNotDetached
	}
	away := time.Duration(now.UnixNano() - rs.detachedAt)
	c.nc, c.raw, c.fd = nc, raw, fd
	c.releaseIn()
	c.frag, c.unparsed, c.ctrlTAT = nil, false, 0
	c.partialAt.Store(0)
	c.pingSent.Store(0)
	c.lastActive.Store(now.UnixNano())
	rs.claimed, rs.detachedAt, rs.resumed, rs.failure = false, 0, true, ""
	frames := rs.replay(received)
	c.out.push(rs.appendSessionFrame(nil, c.id, rs.issue(c.id), s.cfg.ResumeWindow), nil)
	replayed := 0
	for _, f := range frames {
		c.out.push(f, nil)
		replayed += len(f)
	}
	// What is replayed was owed before; it does not count against the
	// queue bound of what comes next.
	rs.credit = replayed
	c.setPhase(open)
	c.startWriter()
	c.mu.Unlock()
	if len(leftover) > 0 {
		c.takeIn()
		c.inLen = copy(*c.in, leftover)
		c.unparsed = true
	}
	c.readMu.Unlock()
	s.resume.detached.Dec()
	s.resume.resumes.Inc()
	s.resume.replayed.Add(float64(len(frames)))
	s.log.Debug("connection resumed", "conn", c.id, "away", away, "replayed", len(frames))
	if rs, ok := s.handler.(Resumer); ok {
		rs.Resumed(c, away)
	}
	return s.reactor.add(c, len(leftover) > 0)
}
