// Package relay resumes a connection through an edge other than the one
// that holds it (docs/resume.md, "Resume through another edge"). The edge
// the client reached asks the owner, with the node command "resume", to
// resume the connection onto a local socketpair whose other end a pipe
// carries over NATS to the client's new socket. The owner keeps the
// connection, so posts, group sends and events go where they always went:
// nothing is moved, so nothing can be lost or doubled in a move.
package relay

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/nodecmd"
	"github.com/switchboardgw/switchboard/internal/rules"
	"github.com/switchboardgw/switchboard/internal/service"
	"github.com/switchboardgw/switchboard/internal/sockpair"
)

// CmdResume is the node command an edge sends to a connection's owner.
const CmdResume = "resume"

// The command's headers (nodecmd.HdrID names the connection).
const (
	hdrSecret    = "Sb-Secret"
	hdrReceived  = "Sb-Received" // absent: the client's count was not a number
	hdrDeflate   = "Sb-Deflate"  // "1": offered (request), negotiated (reply)
	hdrProtocols = "Sb-Protocols"
	hdrUser      = "Sb-User"   // the user the JWT named at the receiving edge
	hdrPipe      = "Sb-Pipe"   // the sender's pipe subject
	hdrFailure   = "Sb-Fail"   // reply: recovered:false reason
	hdrRefuse    = "Sb-Refuse" // reply: HTTP status of a refusal; Sb-Error its reason
	hdrSubproto  = "Sb-Subprotocol"
)

// DefaultKeepalive is how often an idle pipe tells its peer it is there.
const DefaultKeepalive = 2 * time.Second

// Config configures a Service.
type Config struct {
	// Prefix starts every NATS subject. Default "switchboard".
	Prefix string
	// NodeID is this node's ID. Required.
	NodeID string
	// Keepalive of idle pipes; a peer silent for three ends them. Default
	// DefaultKeepalive.
	Keepalive time.Duration
	// MaxPipes bounds the pipes open on this node, both ends together:
	// beyond it a relayed resume is refused with 503 (the client retries;
	// its connection stays detached). Each holds two goroutines and a read
	// buffer (2 KiB idle, 32 KiB while busy). Default DefaultMaxPipes.
	MaxPipes int
}

// DefaultMaxPipes is Config.MaxPipes' default.
const DefaultMaxPipes = 10000

// RegisterFlags binds the settings an operator sets to flags.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.IntVar(&c.MaxPipes, "relay-max-pipes", DefaultMaxPipes, "resumes relayed between this edge and another node at once (docs/resume.md), both ends together; 503 above")
}

// ValidateSettings checks what RegisterFlags sets.
func (c Config) ValidateSettings() error {
	if c.MaxPipes < 0 {
		return fmt.Errorf("relay: -relay-max-pipes %d: want 0 (the default) or more", c.MaxPipes)
	}
	return nil
}

// Deps are what a Service uses.
type Deps struct {
	NC *nats.Conn
	// Call sends a node command to the owner of the connection it names:
	// cluster.Router.Command (its owner lookup and dead-owner rule).
	Call func(ctx context.Context, msg *nats.Msg) (*nats.Msg, error)
	// Credentials checks a resume request this edge received: user is who
	// its JWT names ("" without the JWT authorizer). An error refuses it.
	Credentials func(r *edge.Request) (user string, err error)
	// Target checks at the owner that user may resume c.
	Target func(c *edge.Conn, user string) error
	// Resume is this node's edge.Server.ResumeRelayed.
	Resume func(ask edge.RemoteAsk, check func(*edge.Conn) error, sock net.Conn) (edge.RelayedResume, error)
	// Fence is this node's: a relayed resume of a local connection waits
	// behind it, like every command for one.
	Fence interface {
		Wait(ctx context.Context) error
	}
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Service is both ends: the edge.RemoteResumer of the edge that received a
// resume, and the "resume" command of the owner.
type Service struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	open prometheus.Gauge

	gate  service.Gate
	mu    sync.Mutex
	pipes map[*pipe]struct{}
	wg    sync.WaitGroup // every pipe's goroutines
}

var _ edge.RemoteResumer = (*Service)(nil)

// New returns a Service; Run serves its pipes.
func New(cfg Config, deps Deps) (*Service, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "switchboard"
	}
	if err := rules.CheckSubjectPrefix(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	if !rules.ValidNodeID(cfg.NodeID) {
		return nil, fmt.Errorf("relay: node ID %q: not a node ID", cfg.NodeID)
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = DefaultKeepalive
	}
	if err := cfg.ValidateSettings(); err != nil {
		return nil, err
	}
	if cfg.MaxPipes == 0 {
		cfg.MaxPipes = DefaultMaxPipes
	}
	if deps.NC == nil || deps.Call == nil || deps.Resume == nil {
		return nil, errors.New("relay: needs a NATS connection, Call and Resume")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Registerer == nil {
		deps.Registerer = prometheus.NewRegistry()
	}
	s := &Service{cfg: cfg, deps: deps, log: deps.Logger, pipes: map[*pipe]struct{}{}}
	s.open = promauto.With(deps.Registerer).NewGauge(prometheus.GaugeOpts{Name: "switchboard_relay_pipes",
		Help: "Resumed connections relayed between this node and another now (docs/resume.md): at the edge the client reached, and at the owner."})
	return s, nil
}

// Commands is the lane of the owner's "resume" command, for the node's
// command server.
func (s *Service) Commands() nodecmd.Lane {
	return nodecmd.Lane{Name: "relay", Handlers: map[string]nodecmd.Handler{CmdResume: s.serve}}
}

// Run serves until ctx ends or Shutdown; then every pipe ends (their
// connections detach at the owner, so their clients can resume again).
func (s *Service) Run(ctx context.Context) error {
	if err := s.gate.Start("relay"); err != nil {
		return err
	}
	defer s.gate.Finish()
	select {
	case <-ctx.Done():
	case <-s.gate.Stopping():
	}
	s.gate.Close()
	s.endAll()
	return nil
}

// endAll ends every pipe and waits for their goroutines; none opens after
// the gate is closed.
func (s *Service) endAll() {
	s.mu.Lock()
	pipes := make([]*pipe, 0, len(s.pipes))
	for p := range s.pipes {
		pipes = append(pipes, p)
	}
	s.mu.Unlock()
	for _, p := range pipes {
		p.end("shutting down")
	}
	s.wg.Wait()
}

// Shutdown ends Run and waits for it; never run, it ends the pipes itself.
func (s *Service) Shutdown(ctx context.Context) error {
	if !s.gate.Close() {
		s.endAll()
	}
	return s.gate.Wait(ctx, "relay")
}

var (
	// errStopped: a pipe asked for while the service is not running.
	errStopped = fmt.Errorf("relay not running: %w", conn.ErrUnavailable)
	// errFull: MaxPipes are open.
	errFull = fmt.Errorf("relay: too many relayed connections on this node (-relay-max-pipes): %w", conn.ErrUnavailable)
)

// openPipe opens a pipe tracked until it ends.
func (s *Service) openPipe() (*pipe, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.gate.Stopping():
		return nil, errStopped
	default:
	}
	if len(s.pipes) >= s.cfg.MaxPipes {
		return nil, errFull
	}
	p, err := openPipe(s.deps.NC, s.cfg.Prefix, s.cfg.NodeID, s.cfg.Keepalive, s.log)
	if err != nil {
		return nil, err
	}
	s.pipes[p] = struct{}{}
	s.open.Inc()
	p.onEnd = func() {
		s.mu.Lock()
		delete(s.pipes, p)
		s.mu.Unlock()
		s.open.Dec()
	}
	return p, nil
}

// ResumeRemote implements edge.RemoteResumer: at the edge the client
// reached, ask the connection's owner to resume it over a new pipe.
func (s *Service) ResumeRemote(ctx context.Context, r *edge.Request, ask edge.RemoteAsk) (edge.Relay, string, error) {
	user := ""
	if s.deps.Credentials != nil {
		var err error
		if user, err = s.deps.Credentials(r); err != nil {
			return nil, "", err
		}
	}
	p, err := s.openPipe()
	if err != nil {
		return nil, "", &edge.Reject{Status: http.StatusServiceUnavailable, Reason: "resume unavailable"}
	}
	msg := nodecmd.NewRequest(CmdResume, ask.ID)
	msg.Header.Set(hdrSecret, ask.Secret)
	if !ask.BadCount {
		msg.Header.Set(hdrReceived, strconv.FormatUint(ask.Received, 10))
	}
	if ask.Deflate {
		msg.Header.Set(hdrDeflate, "1")
	}
	if len(ask.Protocols) > 0 {
		msg.Header.Set(hdrProtocols, nodecmd.HeaderSafe(strings.Join(ask.Protocols, ",")))
	}
	msg.Header.Set(hdrUser, user)
	msg.Header.Set(hdrPipe, p.own)
	reply, err := s.deps.Call(ctx, msg)
	switch {
	case errors.Is(err, conn.ErrGone), errors.Is(err, conn.ErrInvalidID):
		p.end("no owner")
		return nil, "unknown", nil // no live owner: what a resume here would say
	case err != nil:
		p.end("owner unavailable")
		s.log.Debug("resume through the owner failed", "conn", ask.ID, "err", err)
		return nil, "", &edge.Reject{Status: http.StatusServiceUnavailable, Reason: "connection's node unavailable"}
	}
	if f := reply.Header.Get(hdrFailure); f != "" {
		p.end("not recovered")
		return nil, f, nil
	}
	if st := reply.Header.Get(hdrRefuse); st != "" {
		p.end("refused")
		code, _ := strconv.Atoi(st)
		if code < 400 || code > 599 {
			code = http.StatusInternalServerError
		}
		return nil, "", &edge.Reject{Status: code, Reason: reply.Header.Get(nodecmd.HdrError)}
	}
	p.setPeer(reply.Header.Get(hdrPipe))
	return &relayed{s: s, p: p, sub: reply.Header.Get(hdrSubproto), deflate: reply.Header.Get(hdrDeflate) == "1"}, "", nil
}

// relayed is the receiving edge's end of a relayed resume.
type relayed struct {
	s       *Service
	p       *pipe
	sub     string
	deflate bool
}

func (r *relayed) Subprotocol() string { return r.sub }
func (r *relayed) Deflate() bool       { return r.deflate }
func (r *relayed) Abandon()            { r.p.end("101 not written") }
func (r *relayed) Start(nc net.Conn, leftover []byte) {
	r.p.start(nc, leftover, &r.s.wg)
}

// serve is the owner's "resume" command: resume the connection onto a
// socketpair whose other end a new pipe carries to the asking edge's.
func (s *Service) serve(ctx context.Context, m, reply *nats.Msg) error {
	peer := m.Header.Get(hdrPipe)
	if !strings.HasPrefix(peer, s.cfg.Prefix+".relay.") || strings.ContainsAny(peer, "*> \t") {
		return fmt.Errorf("relay: bad pipe subject %q", nodecmd.HeaderSafe(peer))
	}
	if s.deps.Fence != nil {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.deps.Fence.Wait(wctx)
		cancel()
		if err != nil {
			return fmt.Errorf("node fenced: %w", conn.ErrUnavailable)
		}
	}
	ask := edge.RemoteAsk{ID: m.Header.Get(nodecmd.HdrID), Secret: m.Header.Get(hdrSecret), Deflate: m.Header.Get(hdrDeflate) == "1"}
	if v := m.Header.Get(hdrReceived); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		ask.Received, ask.BadCount = n, err != nil
	} else {
		ask.BadCount = true
	}
	if v := m.Header.Get(hdrProtocols); v != "" {
		ask.Protocols = strings.Split(v, ",")
	}
	user := m.Header.Get(hdrUser)
	var check func(*edge.Conn) error
	if s.deps.Target != nil {
		check = func(c *edge.Conn) error { return s.deps.Target(c, user) }
	}
	p, err := s.openPipe()
	if err != nil {
		return err
	}
	p.setPeer(peer)
	connEnd, pipeEnd, err := sockpair.New()
	if err != nil {
		p.end("no socketpair")
		return fmt.Errorf("relay: %w", err)
	}
	ans, err := s.deps.Resume(ask, check, connEnd)
	if err != nil {
		_ = pipeEnd.Close()
		p.end("not resumed")
		var rej *edge.Reject
		if errors.As(err, &rej) {
			reply.Header.Set(hdrRefuse, strconv.Itoa(rej.Status))
			reply.Header.Set(nodecmd.HdrError, nodecmd.HeaderSafe(rej.Reason))
			return nil
		}
		return err
	}
	if ans.Failure != "" {
		_ = pipeEnd.Close()
		p.end("not recovered")
		reply.Header.Set(hdrFailure, ans.Failure)
		return nil
	}
	p.start(pipeEnd, nil, &s.wg)
	reply.Header.Set(hdrPipe, p.own)
	if ans.Subprotocol != "" {
		reply.Header.Set(hdrSubproto, ans.Subprotocol)
	}
	if ans.Deflate {
		reply.Header.Set(hdrDeflate, "1")
	}
	return nil
}
