package nodecmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/rules"
	"github.com/switchboardgw/switchboard/internal/service"
)

// Handler executes one command for a connection of this node. It may set
// the reply's data and headers; its error becomes the reply's status (and
// Sb-Error its message).
type Handler func(ctx context.Context, req, reply *nats.Msg) error

// NowHandler executes a command at once if it can without waiting (for a
// lock held long, a fence, the network): ok false when it would have to
// wait, and then it did nothing and the command goes to a worker.
type NowHandler func(req, reply *nats.Msg) (ok bool, err error)

// Lane is a set of commands with workers and a queue of their own, so that
// commands that may wait long (connection commands wait behind the node's
// fence while its lease is in doubt) never hold up the others (membership
// changes).
type Lane struct {
	// Name labels the lane in logs.
	Name string
	// Handlers by command name (Sb-Cmd). A name may be in one lane only.
	Handlers map[string]Handler
	// Now are tried first, as the command arrives, for the commands that
	// are cheap most of the time (a post while the fence is open): they
	// save the handoff to a worker and its wake-up. Each needs a Handler
	// too, for when it cannot answer at once.
	Now map[string]NowHandler
	// Workers execute the lane's commands concurrently. Default
	// 2×GOMAXPROCS.
	Workers int
	// QueueSize bounds the lane's commands waiting for a worker; beyond it
	// a command is answered "unavailable" at once. Default 8192.
	QueueSize int
	// Timeout bounds one command's handler. Default 5s.
	Timeout time.Duration
}

func (l Lane) withDefaults() Lane {
	if l.Workers == 0 {
		l.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	if l.QueueSize == 0 {
		l.QueueSize = 8192
	}
	if l.Timeout == 0 {
		l.Timeout = DefaultTimeout
	}
	return l
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Prefix starts every NATS subject. Default "switchboard".
	Prefix string
	// Node is this node's ID; the server listens on <Prefix>.node.<Node>.
	// Required.
	Node string
}

// Validate checks the config.
func (c ServerConfig) Validate() error {
	if c.Prefix != "" {
		if err := rules.CheckSubjectPrefix(c.Prefix); err != nil {
			return fmt.Errorf("nodecmd: %w", err)
		}
	}
	if !rules.ValidNodeID(c.Node) {
		return fmt.Errorf("nodecmd: server: node %q: [A-Za-z0-9_-], 1-%d bytes", c.Node, rules.MaxNodeID)
	}
	return nil
}

// ServerDeps are what a Server uses.
type ServerDeps struct {
	// NC is required.
	NC     *nats.Conn
	Logger *slog.Logger
	// Served, if set, is told of every command answered: its name ("unknown"
	// for none registered: a bounded label) and its status.
	Served func(cmd, status string)
	// Direct, if set, serves the same commands on TCP connections from
	// other nodes too (direct.go); Advertise is the address they dial (""
	// : Direct's own, which must then name a host).
	Direct    net.Listener
	Advertise string
}

// Server answers the commands other nodes send to this one, dispatching
// each to the lane that registered it.
type Server struct {
	cfg     ServerConfig
	subject string
	nc      *nats.Conn
	log     *slog.Logger
	served  func(cmd, status string)

	mu     sync.Mutex // guards lanes and byCmd until Run freezes them
	lanes  []*lane
	byCmd  map[string]*lane
	frozen bool

	ready chan struct{}
	gate  service.Gate

	direct     net.Listener // nil: NATS only
	directAddr string
	secret     string
	dmu        sync.Mutex
	dconns     map[net.Conn]struct{}
	dreaders   sync.WaitGroup
}

type lane struct {
	Lane
	q chan request
}

// request is a command and where its reply goes: NATS (m.Reply), or the
// direct connection it came on.
type request struct {
	m   *nats.Msg
	to  *directReplies
	seq uint32
}

// NewServer returns a server; register lanes with Handle, then Run
// subscribes and serves.
func NewServer(cfg ServerConfig, deps ServerDeps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NC == nil {
		return nil, errors.New("nodecmd: server needs a NATS connection")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	served := deps.Served
	if served == nil {
		served = func(string, string) {}
	}
	s := &Server{cfg: cfg, subject: Subject(cfg.Prefix, cfg.Node), nc: deps.NC, log: log, served: served,
		byCmd: map[string]*lane{}, ready: make(chan struct{})}
	if deps.Direct != nil {
		addr, err := advertised(deps.Direct, deps.Advertise)
		if err != nil {
			return nil, err
		}
		s.direct, s.directAddr, s.secret, s.dconns = deps.Direct, addr, newSecret(), map[net.Conn]struct{}{}
	}
	return s, nil
}

// DirectAddr is the address other nodes dial for direct commands ("" when
// off).
func (s *Server) DirectAddr() string { return s.directAddr }

// Handle registers a lane of commands. Call it before Run.
func (s *Server) Handle(l Lane) error {
	if l.Workers < 0 || l.QueueSize < 0 || l.Timeout < 0 {
		return fmt.Errorf("nodecmd: lane %s: negative value", l.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frozen {
		return fmt.Errorf("nodecmd: lane %s: registered after Run", l.Name)
	}
	for cmd := range l.Handlers {
		if s.byCmd[cmd] != nil {
			return fmt.Errorf("nodecmd: lane %s: command %q already registered", l.Name, cmd)
		}
	}
	for cmd := range l.Now {
		if l.Handlers[cmd] == nil {
			return fmt.Errorf("nodecmd: lane %s: command %q: a Now handler needs a Handler", l.Name, cmd)
		}
	}
	ln := &lane{Lane: l.withDefaults()}
	ln.q = make(chan request, ln.QueueSize)
	s.lanes = append(s.lanes, ln)
	for cmd := range l.Handlers {
		s.byCmd[cmd] = ln
	}
	return nil
}

// Ready is closed once the subscription is active on the NATS server.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run serves until ctx ends or Shutdown. Commands already received are
// answered before it returns.
func (s *Server) Run(ctx context.Context) error {
	if err := s.gate.Start("nodecmd: server"); err != nil {
		return err
	}
	defer s.gate.Finish()
	s.mu.Lock()
	s.frozen = true
	queued := 0
	for _, l := range s.lanes {
		queued = max(queued, l.QueueSize)
	}
	s.mu.Unlock()
	// The dispatcher only moves commands to their lane: this channel needs
	// no more room than the largest lane before NATS counts a slow consumer.
	in := make(chan *nats.Msg, max(queued, 64))
	sub, err := s.nc.ChanSubscribe(s.subject, in)
	if err != nil {
		return fmt.Errorf("nodecmd: subscribe %s: %w", s.subject, err)
	}
	fctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	err = s.nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("nodecmd: subscribe %s: %w", s.subject, err)
	}
	close(s.ready)
	var workers sync.WaitGroup
	for _, l := range s.lanes {
		for range l.Workers {
			workers.Go(func() {
				for r := range l.q {
					s.serve(ctx, l, r)
				}
			})
		}
	}
	if s.direct != nil {
		s.dreaders.Go(func() { s.acceptDirect() })
	}
	quit := make(chan struct{})
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		for {
			select {
			case m := <-in:
				s.dispatch(request{m: m})
			case <-quit:
				// Pass on what already arrived, then stop.
				for {
					select {
					case m := <-in:
						s.dispatch(request{m: m})
					default:
						return
					}
				}
			}
		}
	}()
	select {
	case <-ctx.Done():
	case <-s.gate.Stopping():
	}
	// Flushed, so the NATS server stops routing here at once and senders get
	// "no responders" instead of waiting for their timeout.
	_ = sub.Unsubscribe()
	_ = s.nc.FlushTimeout(time.Second)
	s.stopDirect() // reads no more; commands already read are answered below
	close(quit)
	<-dispatched
	for _, l := range s.lanes {
		close(l.q) // the dispatcher and the direct readers were the only senders
	}
	workers.Wait()
	s.closeDirect()
	return nil
}

// Shutdown stops serving and waits for commands in progress. Safe twice.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.gate.Close() && s.direct != nil {
		_ = s.direct.Close() // never served: Run would have closed it
	}
	return s.gate.Wait(ctx, "nodecmd: server")
}

// dispatch hands r to its lane, or answers at once what no lane can take.
func (s *Server) dispatch(r request) {
	m := r.m
	cmd := m.Header.Get(HdrCommand)
	l := s.byCmd[cmd] // frozen since Run
	label := cmd
	if l == nil {
		label = "unknown"
	}
	switch {
	case cmd == CmdDirect && r.to == nil:
		reply := nats.NewMsg(m.Reply)
		if s.direct != nil { // the secret only ever travels on the cluster's NATS
			reply.Header.Set(hdrAddr, s.directAddr)
			reply.Header.Set(hdrSecret, s.secret)
		}
		s.respond(r, reply, cmd, nil)
	case !conn.ValidID(m.Header.Get(HdrID)):
		s.respond(r, nats.NewMsg(m.Reply), label, conn.ErrInvalidID)
	case l == nil:
		s.respond(r, nats.NewMsg(m.Reply), label, fmt.Errorf("unknown command %q", HeaderSafe(cmd)))
	default:
		if now := l.Now[cmd]; now != nil {
			reply := nats.NewMsg(m.Reply)
			if ok, err := now(m, reply); ok {
				s.respond(r, reply, cmd, err)
				return
			}
		}
		select {
		case l.q <- r:
		default:
			s.respond(r, nats.NewMsg(m.Reply), label, fmt.Errorf("%w: %s commands queue full", conn.ErrUnavailable, l.Name))
		}
	}
}

func (s *Server) serve(ctx context.Context, l *lane, r request) {
	cmd := r.m.Header.Get(HdrCommand)
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.Timeout)
	reply := nats.NewMsg(r.m.Reply)
	err := l.Handlers[cmd](hctx, r.m, reply)
	cancel()
	s.respond(r, reply, cmd, err)
}

func (s *Server) respond(r request, reply *nats.Msg, label string, err error) {
	status := Status(err)
	reply.Header.Set(HdrStatus, status)
	if err != nil {
		reply.Header.Set(HdrError, HeaderSafe(err.Error()))
	}
	s.served(label, status)
	if r.to != nil {
		r.to.send(r.seq, reply)
		return
	}
	if r.m.Reply == "" {
		return
	}
	if rerr := r.m.RespondMsg(reply); rerr != nil {
		s.log.Warn("reply to command failed", "command", label, "err", rerr)
	}
}
