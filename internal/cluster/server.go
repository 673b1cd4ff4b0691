package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/rules"
)

// CommandServerConfig configures a CommandServer.
type CommandServerConfig struct {
	// Prefix starts every NATS subject. Default "switchboard".
	Prefix string
	// Node is this node's ID; the server listens on <Prefix>.node.<Node>.
	// Required.
	Node string
	// Workers execute commands concurrently. Default 2×GOMAXPROCS.
	Workers int
	// QueueSize bounds commands waiting for a worker; beyond it NATS drops
	// them as a slow consumer and the sender times out. Default 8192.
	QueueSize int
	// Timeout bounds one command on the hub. Default 5s.
	Timeout time.Duration
}

// Validate checks the config.
func (c CommandServerConfig) Validate() error {
	if err := validSubjectPrefix(c.Prefix); err != nil {
		return err
	}
	if !ValidNodeID(c.Node) {
		return fmt.Errorf("cluster: command server: node %q: %w", c.Node, ErrInvalidNodeID)
	}
	if c.Workers < 0 || c.QueueSize < 0 || c.Timeout < 0 {
		return errors.New("cluster: command server config: negative value")
	}
	return nil
}

func (c CommandServerConfig) withDefaults() CommandServerConfig {
	if c.Prefix == "" {
		c.Prefix = "switchboard"
	}
	if c.Workers == 0 {
		c.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	if c.QueueSize == 0 {
		c.QueueSize = 8192
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	return c
}

// CommandServerDeps are what a CommandServer uses.
type CommandServerDeps struct {
	// NC is required.
	NC *nats.Conn
	// Controller executes the commands: the edge's hub. Required.
	Controller conn.Controller
	Logger     *slog.Logger
	Metrics    *Metrics
}

// CommandServer executes commands that other nodes' routers send to this
// node.
type CommandServer struct {
	cfg  CommandServerConfig
	deps CommandServerDeps
	log  *slog.Logger
	m    *Metrics

	ready    chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	runOnce  sync.Once
	done     chan struct{}
}

// NewCommandServer returns a server; Run subscribes and serves.
func NewCommandServer(cfg CommandServerConfig, deps CommandServerDeps) (*CommandServer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NC == nil || deps.Controller == nil {
		return nil, errors.New("cluster: command server needs a NATS connection and a Controller")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &CommandServer{
		cfg:   cfg.withDefaults(),
		deps:  deps,
		log:   log,
		m:     deps.Metrics.orNop(),
		ready: make(chan struct{}),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}, nil
}

// Ready is closed once the subscription is active on the NATS server.
func (s *CommandServer) Ready() <-chan struct{} { return s.ready }

// Run serves until ctx ends or Shutdown. Commands already received are
// answered before it returns.
func (s *CommandServer) Run(ctx context.Context) error {
	first := false
	s.runOnce.Do(func() { first = true })
	if !first {
		return errors.New("cluster: command server: Run called twice")
	}
	defer close(s.done)
	ch := make(chan *nats.Msg, s.cfg.QueueSize)
	subject := nodeSubject(s.cfg.Prefix, s.cfg.Node)
	sub, err := s.deps.NC.ChanSubscribe(subject, ch)
	if err != nil {
		return fmt.Errorf("cluster: subscribe %s: %w", subject, err)
	}
	fctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	err = s.deps.NC.FlushWithContext(fctx)
	cancel()
	if err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("cluster: subscribe %s: %w", subject, err)
	}
	close(s.ready)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < s.cfg.Workers; i++ {
		wg.Go(func() {
			for {
				select {
				case m := <-ch:
					s.handle(ctx, m)
				case <-quit:
					// Answer what already arrived, then stop.
					for {
						select {
						case m := <-ch:
							s.handle(ctx, m)
						default:
							return
						}
					}
				}
			}
		})
	}
	select {
	case <-ctx.Done():
	case <-s.stop:
	}
	// Flushed, so the NATS server stops routing here at once and senders get
	// "no responders" instead of waiting for their timeout.
	_ = sub.Unsubscribe()
	_ = s.deps.NC.FlushTimeout(time.Second)
	close(quit)
	wg.Wait()
	return nil
}

// Shutdown stops serving and waits for commands in progress. Safe twice.
func (s *CommandServer) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	started := true
	s.runOnce.Do(func() { started = false; close(s.done) })
	if !started {
		return nil
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cluster: command server shutdown: %w", ctx.Err())
	}
}

func (s *CommandServer) handle(ctx context.Context, m *nats.Msg) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
	defer cancel()
	cmd := m.Header.Get(hdrCommand)
	switch cmd {
	case cmdPost, cmdInfo, cmdClose, cmdState:
	default:
		cmd = "unknown" // bounded metric label
	}
	id := m.Header.Get(hdrID)
	reply := nats.NewMsg(m.Reply)
	var err error
	switch {
	case !conn.ValidID(id):
		err = conn.ErrInvalidID
	case cmd == cmdPost:
		err = s.deps.Controller.Post(ctx, id, m.Data, m.Header.Get(hdrBinary) == "1")
	case cmd == cmdInfo:
		var info conn.Info
		if info, err = s.deps.Controller.Info(ctx, id); err == nil {
			reply.Data, err = json.Marshal(info)
		}
	case cmd == cmdClose:
		code, perr := strconv.Atoi(m.Header.Get(hdrCode))
		if perr != nil {
			err = fmt.Errorf("%w: %q", conn.ErrInvalidCloseCode, headerSafe(m.Header.Get(hdrCode)))
		} else if err = rules.CheckClose(code, string(m.Data)); err == nil {
			err = s.deps.Controller.Close(ctx, id, code, string(m.Data))
		}
	case cmd == cmdState:
		if ss, ok := s.deps.Controller.(conn.StateSetter); !ok {
			err = errors.New("this node keeps no connection state")
		} else if !conn.ValidState(m.Data) {
			err = conn.ErrInvalidState
		} else {
			err = ss.SetState(ctx, id, m.Data)
		}
	default:
		err = fmt.Errorf("unknown command %q", headerSafe(m.Header.Get(hdrCommand)))
	}
	status := resultLabel(err)
	reply.Header.Set(hdrStatus, status)
	if status == "error" {
		reply.Header.Set(hdrError, headerSafe(err.Error()))
	}
	s.m.served.WithLabelValues(cmd, status).Inc()
	if m.Reply == "" {
		return
	}
	if rerr := m.RespondMsg(reply); rerr != nil {
		s.log.Warn("reply to command failed", "command", cmd, "err", rerr)
	}
}
