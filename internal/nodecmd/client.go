package nodecmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/rules"
)

// Defaults shared by Client and Server.
const (
	DefaultPrefix  = "switchboard"
	DefaultTimeout = 5 * time.Second
	// aliveBudget bounds the lease check of an owner that did not answer:
	// the command's own budget may be spent by then.
	aliveBudget = time.Second
)

// Liveness tells whether a node still holds its lease (the registry's
// NodeAlive): the one source the dead-owner rule trusts.
type Liveness interface {
	NodeAlive(ctx context.Context, node string) (bool, error)
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// Prefix starts every NATS subject. Default "switchboard".
	Prefix string
	// Timeout bounds one command (a caller's earlier deadline wins).
	// Default 5s.
	Timeout time.Duration
}

// Validate checks the config.
func (c ClientConfig) Validate() error {
	if c.Prefix != "" {
		if err := rules.CheckSubjectPrefix(c.Prefix); err != nil {
			return fmt.Errorf("nodecmd: %w", err)
		}
	}
	if c.Timeout < 0 {
		return errors.New("nodecmd: client config: negative timeout")
	}
	return nil
}

// Client sends commands to other nodes. It holds no goroutines.
type Client struct {
	prefix  string
	timeout time.Duration
	nc      *nats.Conn
	alive   Liveness
}

// NewClient returns a client; both nc and alive are required.
func NewClient(cfg ClientConfig, nc *nats.Conn, alive Liveness) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil || alive == nil {
		return nil, errors.New("nodecmd: client needs a NATS connection and a Liveness")
	}
	c := &Client{prefix: cfg.Prefix, timeout: cfg.Timeout, nc: nc, alive: alive}
	if c.prefix == "" {
		c.prefix = DefaultPrefix
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	return c, nil
}

// Call sends msg (from NewRequest) to node and returns its reply, or the
// error the owner returned (errors.Is matches the conn error). An owner
// that does not answer (no responders, or no reply in time) is decided by
// one rule, the same for every command: its lease expired → conn.ErrGone
// (it died, and its connections with it); its lease held or the registry
// unreachable → conn.ErrUnavailable (slow, restarting, cut off: it may still
// own the connection).
func (c *Client) Call(ctx context.Context, node string, msg *nats.Msg) (*nats.Msg, error) {
	id := msg.Header.Get(HdrID)
	if !rules.ValidNodeID(node) {
		return nil, fmt.Errorf("nodecmd: %s: owner %q: not a node id", id, node)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	msg.Subject = Subject(c.prefix, node)
	reply, err := c.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			return nil, c.unanswered(ctx, id, node, err)
		}
		return nil, fmt.Errorf("%s on %s: %w: %w", id, node, conn.ErrUnavailable, err)
	}
	if err := StatusError(reply.Header.Get(HdrStatus), reply.Header.Get(HdrError)); err != nil {
		return nil, fmt.Errorf("%s on %s: %w", id, node, err)
	}
	return reply, nil
}

// unanswered is the dead-owner rule.
func (c *Client) unanswered(ctx context.Context, id, node string, cause error) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), aliveBudget)
	defer cancel()
	alive, err := c.alive.NodeAlive(actx, node)
	if err == nil && !alive {
		return fmt.Errorf("%s: owner %s is dead: %w", id, node, conn.ErrGone)
	}
	return fmt.Errorf("%s on %s: %w: %w", id, node, conn.ErrUnavailable, cause)
}
