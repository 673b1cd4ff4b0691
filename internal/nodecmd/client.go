package nodecmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
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
	// Direct: send commands on the owner's direct connection when it has
	// one (direct.go), NATS otherwise. The Client then holds a goroutine
	// per direct connection, until Close.
	Direct bool
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

// Client sends commands to other nodes. It holds no goroutines, but one
// per direct connection with Direct (Close ends them).
//
// Replies come back on one subscription (<inbox>.<seq>) that NATS's read
// loop feeds straight into a channel, which the callers waiting at the
// time drain themselves, each passing on what is not its own. So a reply
// wakes the caller it is for, or one that hands it over, and no dispatcher
// goroutine: nats.go's own request mux costs a wake-up of its subscription's
// goroutine and one of the caller per command.
type Client struct {
	prefix  string
	timeout time.Duration
	nc      *nats.Conn
	alive   Liveness

	mu       sync.Mutex
	inbox    string                    // "<_INBOX.x>.", set with sub
	sub      *nats.Subscription        // on inbox + "*"
	replies  chan *nats.Msg            // fed by sub
	waiting  map[uint64]chan *nats.Msg // by seq, each of capacity 1
	seq      uint64
	subjects map[string]string // node → its subject, at most maxSubjects

	direct bool
	links  map[string]*link // node → its direct path, at most maxSubjects
	closed bool
	wg     sync.WaitGroup // direct connections' readers
	log    *slog.Logger
}

// maxSubjects bounds the subjects Client keeps, one per node.
const maxSubjects = 1024

// replyBacklog bounds the replies that arrived with no caller waiting:
// answers to calls that timed out, drained by the next call. Past it NATS
// drops them (a slow consumer) and no live reply is at stake: while a
// caller waits, it drains the channel.
const replyBacklog = 4096

// waiters recycles the callers' reply channels, and timers their
// timeouts (a context per call would cost three allocations).
var (
	waiters = sync.Pool{New: func() any { return make(chan *nats.Msg, 1) }}
	timers  = sync.Pool{New: func() any {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}}
)

// NewClient returns a client; both nc and alive are required.
func NewClient(cfg ClientConfig, nc *nats.Conn, alive Liveness) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil || alive == nil {
		return nil, errors.New("nodecmd: client needs a NATS connection and a Liveness")
	}
	c := &Client{prefix: cfg.Prefix, timeout: cfg.Timeout, nc: nc, alive: alive, waiting: map[uint64]chan *nats.Msg{}, subjects: map[string]string{},
		direct: cfg.Direct, links: map[string]*link{}, log: slog.New(slog.DiscardHandler)}
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
	var reply *nats.Msg
	err := errNotSent
	if c.direct {
		if dc := c.directTo(ctx, node); dc != nil {
			reply, err = c.callDirect(ctx, dc, msg)
			if err != nil && !errors.Is(err, errNotSent) {
				// Sent, unanswered: it may have run. The dead-owner rule
				// decides, as for NATS.
				return nil, c.unanswered(ctx, id, node, err)
			}
		}
	}
	if errors.Is(err, errNotSent) {
		reply, err = c.request(ctx, node, msg)
	}
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

// request publishes msg with a reply subject of c's inbox and waits for
// the reply for at most c.timeout (or until ctx ends, if earlier),
// draining the shared reply channel meanwhile. Its errors are those of
// nats.go's RequestMsgWithContext: nats.ErrNoResponders when no node
// serves the subject, context.DeadlineExceeded (or ctx's error) when no
// reply came in time.
func (c *Client) request(ctx context.Context, node string, msg *nats.Msg) (*nats.Msg, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	timer := c.callTimer()
	defer putTimer(timer)
	mine := waiters.Get().(chan *nats.Msg)
	seq, err := c.register(node, msg, mine)
	if err != nil {
		waiters.Put(mine)
		return nil, err
	}
	if err := c.nc.PublishMsg(msg); err != nil {
		c.forget(seq, mine)
		return nil, err
	}
	for {
		select {
		case m := <-mine:
			waiters.Put(mine)
			return answer(m)
		case m := <-c.replies:
			if c.route(m, seq) {
				waiters.Put(mine)
				return answer(m)
			}
		case <-ctx.Done():
			return nil, c.gaveUp(seq, mine, ctx.Err())
		case <-timer.C:
			return nil, c.gaveUp(seq, mine, context.DeadlineExceeded)
		}
	}
}

// callTimer is a pooled timer running for one call's c.timeout; putTimer
// gives it back.
func (c *Client) callTimer() *time.Timer {
	t := timers.Get().(*time.Timer)
	t.Reset(c.timeout)
	return t
}

func putTimer(t *time.Timer) {
	t.Stop() // since Go 1.23 a stopped timer's channel holds nothing
	timers.Put(t)
}

// gaveUp ends a call that got no reply: err, or that the connection closed.
func (c *Client) gaveUp(seq uint64, mine chan *nats.Msg, err error) error {
	c.forget(seq, mine)
	if c.nc.IsClosed() {
		return nats.ErrConnectionClosed
	}
	return err
}

// answer maps the NATS server's "no responders" status to its error.
func answer(m *nats.Msg) (*nats.Msg, error) {
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		return nil, nats.ErrNoResponders
	}
	return m, nil
}

// register subscribes on first use, and addresses msg: to node, the reply
// to a new seq waited for on ch.
func (c *Client) register(node string, msg *nats.Msg, ch chan *nats.Msg) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sub == nil {
		inbox := c.nc.NewInbox() + "."
		replies := make(chan *nats.Msg, replyBacklog)
		sub, err := c.nc.ChanSubscribe(inbox+"*", replies)
		if err != nil {
			return 0, fmt.Errorf("nodecmd: reply subscription: %w", err)
		}
		c.inbox, c.sub, c.replies = inbox, sub, replies
	}
	subj, ok := c.subjects[node]
	if !ok {
		if len(c.subjects) >= maxSubjects {
			clear(c.subjects) // nodes come and go: start again
		}
		subj = Subject(c.prefix, node)
		c.subjects[node] = subj
	}
	msg.Subject = subj
	c.seq++
	c.waiting[c.seq] = ch
	var buf [64]byte
	msg.Reply = string(strconv.AppendUint(append(buf[:0], c.inbox...), c.seq, 36))
	return c.seq, nil
}

// route hands reply m to the caller waiting for it, unless that is the
// caller seq itself (true: m is its own). A reply nobody waits for any
// more is dropped.
func (c *Client) route(m *nats.Msg, seq uint64) bool {
	if len(m.Subject) <= len(c.inbox) {
		return false
	}
	to, err := strconv.ParseUint(m.Subject[len(c.inbox):], 36, 64)
	if err != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.waiting[to]
	if !ok {
		return false
	}
	delete(c.waiting, to)
	if to == seq {
		return true
	}
	ch <- m // capacity 1, and only the one holding the entry sends
	return false
}

// forget stops waiting for seq; a reply routed to ch meanwhile is drained
// so that ch goes back to the pool empty.
func (c *Client) forget(seq uint64, ch chan *nats.Msg) {
	c.mu.Lock()
	delete(c.waiting, seq)
	select {
	case <-ch:
	default:
	}
	c.mu.Unlock()
	waiters.Put(ch)
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
