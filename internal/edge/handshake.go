package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gobwas/ws"

	"github.com/switchboardgw/switchboard/internal/conn"
)

var headerEnd = []byte("\r\n\r\n")

// handshake reads the upgrade request, asks the Handler, and upgrades. It
// runs on its own goroutine so a slow $connect never holds up another
// handshake; HandshakeTimeout bounds the whole of it. slot is the share of
// its source it holds since accept (none for a trusted proxy's connection).
func (s *Server) handshake(nc net.Conn, slot hsSlot) {
	defer s.wg.Done()
	defer func() { <-s.hsSem }()
	defer s.releaseSource(&slot)
	start := time.Now()
	deadline := start.Add(s.cfg.HandshakeTimeout)
	_ = nc.SetDeadline(deadline)

	// Behind a load balancer speaking PROXY protocol, the client is known
	// as soon as the header is read: charge it before waiting for its
	// request, so that idle sockets relayed for one client take that
	// client's share, not every slot.
	if hs, ok := nc.(interface{ Handshake() error }); ok && !slot.held && s.perSource != nil {
		if err := hs.Handshake(); err != nil {
			s.rejectRaw(nc, err)
			return
		}
		if !s.claimSource(&slot, remoteAddr(nc)) {
			s.metrics.rejected.WithLabelValues(rejectIPHandshakes).Inc()
			refuseUnread(nc, respIPHandshakes)
			return
		}
	}

	bp := s.hsSmall.Get().(*[]byte)
	defer func() { s.putRequestBuffer(bp) }()
	n, end, err := readRequest(nc, *bp, 0)
	if errors.Is(err, errHeaderTooLarge) && len(*bp) < s.cfg.MaxHeaderBytes {
		// A long request (cookies, tokens): on in a MaxHeaderBytes buffer.
		large := s.hsPool.Get().(*[]byte)
		copy(*large, (*bp)[:n])
		s.putRequestBuffer(bp)
		bp = large
		n, end, err = readRequest(nc, *bp, n)
	}
	buf := *bp
	if err != nil {
		s.rejectRaw(nc, err)
		return
	}
	req, err := parseRequest(buf[:end], nc, start)
	if err != nil {
		s.reject(nc, "bad_request", http.StatusBadRequest, err.Error())
		return
	}
	if s.clientIP != nil {
		req.SourceIP = s.clientIP(req.SourceIP, req.Header)
	}
	// A trusted proxy's connection whose client only the forwarding header
	// names: charge that client before $connect runs.
	if addr, err := netip.ParseAddr(req.SourceIP); err == nil && !s.claimSource(&slot, addr) {
		s.reject(nc, rejectIPHandshakes, http.StatusTooManyRequests, "too many handshakes from this address")
		return
	}
	if s.draining.Load() {
		s.reject(nc, "draining", http.StatusServiceUnavailable, "server shutting down")
		return
	}

	ask := parseResume(req)
	failure := ""
	if ask.id != "" {
		var handled bool
		if handled, failure = s.tryResume(nc, req, ask, buf[:end], buf[end:n], start); handled {
			return
		}
		s.resume.failures.WithLabelValues(failure).Inc()
	}
	c := &Conn{srv: s, id: conn.NewID(), nc: nc, connectedAt: start.UnixNano(), sourceIP: req.SourceIP, userAgent: req.UserAgent}
	c.lastActive.Store(start.UnixNano())
	if ask.resumable {
		c.rs = newResumable(c.id, clientReason(failure))
	}
	accepted := false
	rejectReason := "bad_request"
	var deflateAccepted func() bool
	u := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			if s.cfg.Path != "" && req.Path != s.cfg.Path {
				rejectReason = "path"
				return ws.RejectConnectionError(ws.RejectionStatus(http.StatusNotFound), ws.RejectionReason("no WebSocket endpoint at this path"))
			}
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if !s.originAllowed(req.Origin) {
				rejectReason = "origin"
				return nil, ws.RejectConnectionError(ws.RejectionStatus(http.StatusForbidden), ws.RejectionReason("origin not allowed"))
			}
			// Before the connection is published (connect): c.deflate is
			// read-only from then on.
			c.deflate = deflateAccepted != nil && deflateAccepted()
			h, err := s.connect(c, req)
			if err != nil {
				rejectReason = "denied"
				return nil, err
			}
			accepted = true
			return h, nil
		},
	}
	if s.cfg.Compression {
		u.Negotiate, deflateAccepted = negotiator()
	}
	u.ReadBufferSize = upgradeReadBuffer(end)
	_, err = u.Upgrade(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(buf[:end]), nc})
	if err != nil {
		if accepted {
			// Accepted by $connect but the 101 could not be written: the
			// Handler still hears Close, with Established() false.
			c.endHandshake(causeUpgradeFailed)
			return
		}
		if !errors.As(err, new(*ws.ConnectionRejectedError)) && rejectReason == "denied" {
			rejectReason = "error"
		}
		s.metrics.rejected.WithLabelValues(rejectReason).Inc()
		_ = nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	if c.deflate {
		s.metrics.deflateNegotiated.Inc()
	}
	if err := s.open(c, buf[end:n]); err != nil {
		s.log.Warn("register connection", "conn", c.id, "err", err)
		c.endHandshake(causeRegisterFailed)
		return
	}
	s.metrics.handshake.Observe(time.Since(start).Seconds())
}

// connect makes c reachable, asks the Handler, and returns the 101's extra
// headers or a rejection.
func (s *Server) connect(c *Conn, req *Request) (ws.HandshakeHeader, error) {
	sub := s.selectProtocol(req.Protocols)
	s.connWG.Add(1)
	s.hub.add(c)
	var acc *Accept
	if s.handler != nil {
		ctx, cancel := context.WithDeadline(s.ctx, req.Time.Add(s.cfg.HandshakeTimeout))
		var err error
		acc, err = s.handler.Connect(ctx, c, req)
		cancel()
		if err != nil {
			c.refuse()
			return nil, s.refusal(c.id, err, "$connect failed", "connect failed")
		}
	}
	h := http.Header{}
	if acc != nil {
		for k, v := range acc.Header {
			h[http.CanonicalHeaderKey(k)] = v
		}
		if acc.Subprotocol != "" {
			sub = acc.Subprotocol
		}
		c.userID = acc.UserID
		c.value = acc.Value
	}
	if h.Get("Sec-WebSocket-Protocol") == "" && sub != "" {
		h.Set("Sec-WebSocket-Protocol", sub)
	}
	c.subprotocol = h.Get("Sec-WebSocket-Protocol")
	// A Close (e.g. an API DELETE) that arrived while $connect ran wins.
	if held := c.acceptConnect(); held {
		c.teardown()
		return nil, ws.RejectConnectionError(ws.RejectionStatus(http.StatusGone), ws.RejectionReason("closed during $connect"))
	}
	return ws.HandshakeHeaderHTTP(h), nil
}

// open moves an upgraded connection into the reactor and sends what was
// posted during $connect.
func (s *Server) open(c *Conn, leftover []byte) error {
	c.nc = s.slim(c.nc, c.id)
	raw, err := nc2raw(c.nc)
	if err != nil {
		return err
	}
	c.raw = raw
	if err := raw.Control(func(fd uintptr) { c.fd = int(fd) }); err != nil {
		return fmt.Errorf("socket fd: %w", err)
	}
	// A close (an API DELETE, a drain) that arrived between the 101 and
	// here: the client is connected, so it gets its close frame after Open.
	held, wasHeld := c.upgrade()
	if s.handler != nil {
		s.handler.Open(c)
	}
	if wasHeld {
		c.close(held)
		return nil
	}
	if len(leftover) > 0 {
		c.takeIn()
		c.inLen = copy(*c.in, leftover)
		c.unparsed = true
	}
	err = s.reactor.add(c, len(leftover) > 0)
	c.served()
	return err
}

func nc2raw(nc net.Conn) (rawConn, error) {
	sc, ok := nc.(interface {
		SyscallConn() (rawConn, error)
	})
	if !ok {
		return nil, errors.New("connection has no file descriptor")
	}
	return sc.SyscallConn()
}

// smallRequest is the size of the buffer an upgrade request is read into
// first: most requests fit, and a connect burst holds one such buffer per
// handshake in flight (and sync.Pool keeps them for two GC cycles after),
// not one of MaxHeaderBytes. A longer request moves on to one of those.
const smallRequest = 1 << 10

// putRequestBuffer returns a buffer to the pool of its size (with a
// MaxHeaderBytes of smallRequest or less, there are only small ones).
func (s *Server) putRequestBuffer(bp *[]byte) {
	if len(*bp) > smallRequest {
		s.hsPool.Put(bp)
		return
	}
	s.hsSmall.Put(bp)
}

// upgradeReadBuffer is the size of gobwas/ws's read buffer for a request
// of n bytes, already read: as large as the request, so it is read in one
// go, and no larger (the default, 4 KiB, is held per handshake in flight,
// like the request buffer).
func upgradeReadBuffer(n int) int { return max(n, 128) }

// readRequest reads until the blank line that ends the request headers,
// after the n bytes buf already holds. It returns the bytes read and where
// the headers end; bytes after that are frames the client sent right away.
func readRequest(nc net.Conn, buf []byte, n int) (_, end int, err error) {
	for {
		if n == len(buf) {
			return n, 0, errHeaderTooLarge
		}
		m, err := nc.Read(buf[n:])
		n += m
		if i := bytes.Index(buf[max(0, n-m-3):n], headerEnd); i >= 0 {
			return n, max(0, n-m-3) + i + len(headerEnd), nil
		}
		if err != nil {
			return n, 0, err
		}
	}
}

var (
	errHeaderTooLarge = errors.New("request headers too large")
	errBadRequestLine = errors.New("malformed request line")
	errBadHeaderLine  = errors.New("malformed header line")
	errDuplicateKey   = errors.New("more than one Sec-WebSocket-Key header")
)

// parseRequest extracts what $connect needs from the raw request. gobwas/ws
// checks the WebSocket rules again when it upgrades.
func parseRequest(raw []byte, nc net.Conn, t time.Time) (*Request, error) {
	lines := strings.Split(strings.TrimSuffix(string(raw), "\r\n\r\n"), "\r\n")
	parts := strings.Split(lines[0], " ")
	if len(parts) != 3 || !strings.HasPrefix(parts[2], "HTTP/") {
		return nil, errBadRequestLine
	}
	r := &Request{Time: t, Method: parts[0], URI: parts[1], Header: http.Header{}}
	u, err := url.ParseRequestURI(parts[1])
	if err != nil {
		return nil, fmt.Errorf("request URI: %w", err)
	}
	r.Path, r.RawQuery = u.Path, u.RawQuery
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return nil, errBadHeaderLine
		}
		r.Header.Add(k, strings.TrimSpace(v))
	}
	// RFC 6455 11.3.1: the key must not appear more than once. gobwas/ws
	// would take one of them; refuse instead, so the client and the edge
	// cannot disagree on which key the Sec-WebSocket-Accept answers.
	if len(r.Header.Values("Sec-WebSocket-Key")) > 1 {
		return nil, errDuplicateKey
	}
	// Clones: the header values are substrings of the whole request, which
	// must not stay alive for the connection's lifetime.
	r.Host = strings.Clone(r.Header.Get("Host"))
	r.UserAgent = strings.Clone(r.Header.Get("User-Agent"))
	r.Origin = r.Header.Get("Origin")
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				r.Protocols = append(r.Protocols, p)
			}
		}
	}
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		r.SourceIP = ta.IP.String()
	}
	return r, nil
}

func (s *Server) originAllowed(origin string) bool {
	if len(s.cfg.AllowedOrigins) == 0 {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

func (s *Server) selectProtocol(offered []string) string {
	for _, p := range s.cfg.Subprotocols {
		if slices.Contains(offered, p) {
			return p
		}
	}
	return ""
}

// rejectRaw answers a request that could not be read.
func (s *Server) rejectRaw(nc net.Conn, err error) {
	var ne net.Error
	switch {
	case errors.Is(err, errHeaderTooLarge):
		s.reject(nc, "too_large", http.StatusRequestHeaderFieldsTooLarge, "request headers too large")
	case errors.As(err, &ne) && ne.Timeout():
		s.metrics.rejected.WithLabelValues("timeout").Inc()
		_ = nc.Close()
	default:
		s.metrics.rejected.WithLabelValues("bad_request").Inc()
		_ = nc.Close()
	}
}

func (s *Server) reject(nc net.Conn, reason string, status int, msg string) {
	s.metrics.rejected.WithLabelValues(reason).Inc()
	_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = fmt.Fprintf(nc, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(msg), msg)
	_ = nc.Close()
}

// refusal is the upgrade's answer when the handler refused it: its Reject
// as it is; anything else is a 500, logged as what failed.
func (s *Server) refusal(id string, err error, logMsg, reason string) error {
	var rej *Reject
	if errors.As(err, &rej) {
		return ws.RejectConnectionError(ws.RejectionStatus(rej.Status),
			ws.RejectionHeader(ws.HandshakeHeaderHTTP(rej.Header)), ws.RejectionReason(rej.Reason))
	}
	s.log.Warn(logMsg, "conn", id, "err", err)
	return ws.RejectConnectionError(ws.RejectionStatus(http.StatusInternalServerError), ws.RejectionReason(reason))
}
