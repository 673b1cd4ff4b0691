package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/nodecmd"
	"github.com/switchboardgw/switchboard/internal/rules"
)

// CommandServerConfig configures a CommandServer.
type CommandServerConfig struct {
	// Prefix starts every NATS subject. Default "switchboard".
	Prefix string
	// Node is this node's ID; the server listens on <Prefix>.node.<Node>.
	// Required.
	Node string
	// Workers execute connection commands concurrently. Default
	// 2×GOMAXPROCS.
	Workers int
	// QueueSize bounds connection commands waiting for a worker; beyond it
	// they are answered "unavailable" at once. Default 8192.
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

// CommandServerDeps are what a CommandServer uses.
type CommandServerDeps struct {
	// NC is required.
	NC *nats.Conn
	// Controller executes the commands: the edge's hub. Required.
	Controller conn.Controller
	Logger     *slog.Logger
	Metrics    *Metrics
	// Direct, if set, answers the same commands on TCP connections too
	// (DirectConfig); Advertise is the address others dial.
	Direct    net.Listener
	Advertise string
}

// CommandServer is this node's nodecmd.Server with the connection commands
// (post, info, close, state) registered in a lane of their own; other
// packages register their commands on it too (Handle), so that a node has
// one subject, one encoding and one dead-owner rule.
type CommandServer struct {
	*nodecmd.Server
}

// NewCommandServer returns a server; Run subscribes and serves.
func NewCommandServer(cfg CommandServerConfig, deps CommandServerDeps) (*CommandServer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NC == nil || deps.Controller == nil {
		return nil, errors.New("cluster: command server needs a NATS connection and a Controller")
	}
	m := deps.Metrics.orNop()
	srv, err := nodecmd.NewServer(nodecmd.ServerConfig{Prefix: cfg.Prefix, Node: cfg.Node}, nodecmd.ServerDeps{
		NC: deps.NC, Logger: deps.Logger, Direct: deps.Direct, Advertise: deps.Advertise,
		Served: func(cmd, status string) { m.served.WithLabelValues(cmd, status).Inc() }})
	if err != nil {
		return nil, fmt.Errorf("cluster: command server: %w", err)
	}
	h := connCommands{c: deps.Controller}
	lane := nodecmd.Lane{Name: "connection", Workers: cfg.Workers, QueueSize: cfg.QueueSize, Timeout: cfg.Timeout,
		Handlers: map[string]nodecmd.Handler{cmdPost: h.post, cmdInfo: h.info, cmdClose: h.close, cmdState: h.state}}
	if np, ok := deps.Controller.(NowPoster); ok {
		lane.Now = map[string]nodecmd.NowHandler{cmdPost: func(m, _ *nats.Msg) (bool, error) {
			return np.PostNow(m.Header.Get(nodecmd.HdrID), m.Data, m.Header.Get(hdrBinary) == "1")
		}}
	}
	if err := srv.Handle(lane); err != nil {
		return nil, err
	}
	return &CommandServer{srv}, nil
}

// NowPoster is a Controller that can post without waiting while nothing
// stands in the way (session.LocalConns: the fence open); the command
// server then posts as a command arrives, not from a worker. ok false: it
// would have to wait, and did nothing.
type NowPoster interface {
	PostNow(id string, data []byte, binary bool) (ok bool, err error)
}

// connCommands execute the connection commands on the edge's hub, which
// waits behind the node's fence itself.
type connCommands struct{ c conn.Controller }

func (h connCommands) post(ctx context.Context, m, _ *nats.Msg) error {
	return h.c.Post(ctx, m.Header.Get(nodecmd.HdrID), m.Data, m.Header.Get(hdrBinary) == "1")
}

func (h connCommands) info(ctx context.Context, m, reply *nats.Msg) error {
	info, err := h.c.Info(ctx, m.Header.Get(nodecmd.HdrID))
	if err == nil {
		reply.Data, err = json.Marshal(info)
	}
	return err
}

func (h connCommands) close(ctx context.Context, m, _ *nats.Msg) error {
	code, err := strconv.Atoi(m.Header.Get(hdrCode))
	if err != nil {
		return fmt.Errorf("%w: %q", conn.ErrInvalidCloseCode, nodecmd.HeaderSafe(m.Header.Get(hdrCode)))
	}
	if err := rules.CheckClose(code, string(m.Data)); err != nil {
		return err
	}
	return h.c.Close(ctx, m.Header.Get(nodecmd.HdrID), code, string(m.Data))
}

func (h connCommands) state(ctx context.Context, m, _ *nats.Msg) error {
	ss, ok := h.c.(conn.StateSetter)
	switch {
	case !ok:
		return errors.New("this node keeps no connection state")
	case !conn.ValidState(m.Data):
		return conn.ErrInvalidState
	}
	return ss.SetState(ctx, m.Header.Get(nodecmd.HdrID), m.Data)
}
