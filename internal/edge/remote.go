package edge

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
)

// Resume through another edge (docs/resume.md): the node that holds a
// detached connection (its owner) keeps it, and the edge the client reached
// relays the new socket's bytes to it. The owner's connection gets a local
// socket whose other end the relay carries, so it runs exactly as a
// connection resumed in place: the same session frame, replay, queue,
// pings and close. Nothing moves, so nothing can be lost or doubled in a
// move: posts and fan-out reach the owner as before.

// RemoteAsk is a resume request for a connection this edge does not hold.
type RemoteAsk struct {
	ID, Secret string
	Received   uint64
	BadCount   bool // received was missing or not a number
	// Deflate: the client offers permessage-deflate with the parameters
	// this edge accepts.
	Deflate bool
	// Protocols the client offered, in order.
	Protocols []string
}

// RemoteResumer resumes, through the node that holds it, a connection this
// edge does not hold.
type RemoteResumer interface {
	// ResumeRemote asks the owner of ask.ID to resume it. failure is a
	// recovered:false reason: the client then gets a fresh connection, told
	// why. err refuses the upgrade (*Reject for its status). Otherwise the
	// Relay carries the new socket once its 101 is written.
	ResumeRemote(ctx context.Context, r *Request, ask RemoteAsk) (rl Relay, failure string, err error)
}

// Relay carries a socket to the owner of the connection it resumes.
type Relay interface {
	// Subprotocol and Deflate are what the owner's connection negotiated:
	// the 101 says the same.
	Subprotocol() string
	Deflate() bool
	// Start carries nc, its 101 written (leftover: bytes the client sent
	// right after its request), until either side ends it. It returns at
	// once and owns nc from then on.
	Start(nc net.Conn, leftover []byte)
	// Abandon: the 101 was not written. The owner's connection, which has
	// its new socket already, detaches again when the relay ends.
	Abandon()
}

// resumeRemote answers a resume request for a connection not in this hub
// through the RemoteResumer. handled is false when the client gets a fresh
// connection instead (failure, or a refusal the fresh upgrade makes).
func (s *Server) resumeRemote(nc net.Conn, req *Request, ask resumeAsk, raw, leftover []byte, start time.Time) (handled bool, failure string) {
	if s.remote == nil {
		return false, failUnknown
	}
	if (s.cfg.Path != "" && req.Path != s.cfg.Path) || !s.originAllowed(req.Origin) {
		return false, failUnknown // the fresh upgrade refuses it (404, 403) before any $connect
	}
	ctx, cancel := context.WithDeadline(s.ctx, req.Time.Add(s.cfg.HandshakeTimeout))
	rl, failure, err := s.remote.ResumeRemote(ctx, req, RemoteAsk{ID: ask.id, Secret: ask.secret, Received: ask.received,
		BadCount: ask.badCount, Deflate: s.cfg.Compression && offersDeflate(req.Header), Protocols: req.Protocols})
	cancel()
	if failure != "" {
		if !slices.Contains(failReasons, failure) {
			failure = failUnknown // a reason this edge does not know: not into a label or the session frame
		}
		return false, failure
	}
	rejectReason := "denied"
	u := ws.Upgrader{
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if err != nil {
				return nil, s.refusal(ask.id, err, "resume through the owner failed", "resume failed")
			}
			rejectReason = "bad_request"
			h := http.Header{}
			if sub := rl.Subprotocol(); sub != "" {
				h.Set("Sec-WebSocket-Protocol", sub)
			}
			return ws.HandshakeHeaderHTTP(h), nil
		},
	}
	if err == nil && rl.Deflate() {
		u.Negotiate, _ = negotiator() // the client offers it (ask.Deflate): accepted
	}
	if _, uerr := u.Upgrade(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(raw), nc}); uerr != nil || err != nil {
		if rl != nil {
			rl.Abandon()
		}
		s.metrics.rejected.WithLabelValues(rejectReason).Inc()
		_ = nc.Close()
		return true, ""
	}
	_ = nc.SetDeadline(time.Time{})
	rl.Start(nc, slices.Clone(leftover)) // leftover is the pooled request buffer's
	s.resume.relayed.Inc()
	s.metrics.handshake.Observe(time.Since(start).Seconds())
	return true, ""
}

// offersDeflate reports whether the request offers permessage-deflate in a
// form this edge accepts, exactly as the upgrade's negotiation would.
func offersDeflate(h http.Header) bool {
	negotiate, accepted := negotiator()
	for _, v := range h.Values("Sec-Websocket-Extensions") {
		opts, ok := httphead.ParseOptions([]byte(v), nil)
		if !ok {
			continue
		}
		for _, o := range opts {
			if _, err := negotiate(o); err == nil && accepted() {
				return true
			}
		}
	}
	return false
}

// RelayedResume is the owner's answer to a resume another edge received.
type RelayedResume struct {
	// Failure is a recovered:false reason ("" on success).
	Failure     string
	Subprotocol string
	Deflate     bool
}

// ResumeRelayed resumes connection ask.ID onto sock, the local end of a
// relay from the edge that received the resume handshake: the token and
// count are checked as for a resume here, then check (the Handler's: the
// same user), then the compression the client offers; sock then becomes
// the connection's socket. A refusal (err, *Reject for its status) leaves
// the connection detached, its token valid; a Failure ends nothing but
// what a local resume would end (a gap). sock is closed unless attached.
func (s *Server) ResumeRelayed(ask RemoteAsk, check func(*Conn) error, sock net.Conn) (RelayedResume, error) {
	if s.cfg.ResumeWindow <= 0 {
		_ = sock.Close()
		return RelayedResume{Failure: failDisabled}, nil
	}
	c := s.hub.get(ask.ID)
	if c == nil {
		_ = sock.Close()
		return RelayedResume{Failure: failUnknown}, nil
	}
	if reason := c.claim(resumeAsk{resumable: true, id: ask.ID, secret: ask.Secret, received: ask.Received, badCount: ask.BadCount}); reason != "" {
		_ = sock.Close()
		return RelayedResume{Failure: clientReason(reason)}, nil
	}
	refuse := func(err error) (RelayedResume, error) {
		c.unclaim()
		_ = sock.Close()
		return RelayedResume{}, err
	}
	if check != nil {
		if err := check(c); err != nil {
			return refuse(err)
		}
	}
	if c.deflate && !ask.Deflate {
		return refuse(&Reject{Status: http.StatusBadRequest, Reason: "resume must offer permessage-deflate, as the connection negotiated it"})
	}
	ans := RelayedResume{Deflate: c.deflate}
	if c.subprotocol != "" && slices.Contains(ask.Protocols, c.subprotocol) {
		ans.Subprotocol = c.subprotocol
	}
	if err := s.attach(c, sock, nil, ask.Received); err != nil {
		_ = sock.Close()
		return RelayedResume{}, err
	}
	return ans, nil
}
