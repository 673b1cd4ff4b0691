// Package edge terminates WebSocket connections: accept, upgrade with
// gobwas/ws (so $connect decides before the 101 is sent), then an epoll
// reactor with a small worker pool. An idle connection owns no goroutine and
// no buffer.
package edge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrClosed is returned by Run after Shutdown.
var ErrClosed = errors.New("edge: server closed")

// Server is one edge node's WebSocket side.
type Server struct {
	cfg      Config
	nodeID   string
	handler  Handler
	remote   RemoteResumer // nil: a resume for a connection not here gets recovered:false
	clientIP func(peer string, h http.Header) string
	log      *slog.Logger
	metrics  *metrics
	resume   *resumeMetrics
	deflate  *deflater // permessage-deflate's pools; used only by connections that negotiated it

	ln      net.Listener
	reactor *reactor
	hub     *hub
	bufPool sync.Pool
	hsPool  sync.Pool // upgrade request buffers of MaxHeaderBytes
	hsSmall sync.Pool // upgrade request buffers of smallRequest bytes (handshake.go)
	hsSem   chan struct{}
	// perSource caps handshakes in progress per source; nil: no cap.
	perSource   *sourceLimit
	trustedPeer func(netip.Addr) bool

	ctx      context.Context // cancelled when shutdown starts: ends $connect calls
	cancel   context.CancelFunc
	draining atomic.Bool
	startMu  sync.Mutex // orders Run's start against Shutdown's wait
	stopOnce sync.Once
	done     chan struct{} // closed when Shutdown finished

	upgrades atomic.Uint64 // connections upgraded so far (trim.go)

	wg     sync.WaitGroup // accept loop, sweeper, handshakes, writers
	connWG sync.WaitGroup // one per accepted connection until teardown
}

// Options are a Server's dependencies.
type Options struct {
	// NodeID names this node in connection info.
	NodeID string
	// Handler takes part in every connection's life; nil accepts everyone.
	Handler Handler
	// Registerer receives the edge's metrics; nil means none.
	Registerer prometheus.Registerer
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Listener to serve on instead of listening on Config.Listen.
	Listener net.Listener
	// ClientIP turns the peer address and the request headers into the
	// client's address (trusted proxies' X-Forwarded-For); nil keeps the peer.
	ClientIP func(peer string, h http.Header) string
	// TrustedPeer reports whether a TCP peer is a trusted proxy (the load
	// balancer). Its connections are not charged to its own address under
	// MaxHandshakesPerIP, since it carries every client: each is charged to
	// the client its PROXY header or forwarding header names, once known.
	// nil: no peer is trusted, every connection is charged to its peer.
	TrustedPeer func(netip.Addr) bool
	// Remote resumes through their owner the connections this edge does
	// not hold (docs/resume.md); nil: such a resume gets recovered:false
	// (unknown) and a fresh connection.
	Remote RemoteResumer
}

// New validates cfg and listens. Serving starts with Run.
func New(cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("edge config: %w", err)
	}
	cfg = cfg.withDefaults()
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	r, err := newReactor()
	if err != nil {
		return nil, err
	}
	ln := opts.Listener
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.Listen)
		if err != nil {
			r.closeFDs()

			return nil, fmt.Errorf("edge listen %s: %w", cfg.Listen, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg: cfg, nodeID: opts.NodeID, handler: opts.Handler, remote: opts.Remote, clientIP: opts.ClientIP, log: opts.Logger,
		metrics: newMetrics(opts.Registerer), resume: newResumeMetrics(opts.Registerer), ln: ln, reactor: r, hub: newHub(),
		hsSem: make(chan struct{}, cfg.MaxHandshakes), trustedPeer: opts.TrustedPeer, ctx: ctx, cancel: cancel,
		done: make(chan struct{}),
	}
	s.deflate = newDeflater(&cfg, s.metrics)
	if cfg.MaxHandshakesPerIP > 0 {
		s.perSource = newSourceLimit(cfg.MaxHandshakesPerIP)
	}
	registerHandshakeGauges(opts.Registerer, s)
	bufSize := cfg.MaxFrameBytes + 14 // one maximal frame with its header
	s.bufPool.New = func() any { b := make([]byte, bufSize); return &b }
	s.hsPool.New = func() any { b := make([]byte, cfg.MaxHeaderBytes); return &b }
	small := min(smallRequest, cfg.MaxHeaderBytes)
	s.hsSmall.New = func() any { b := make([]byte, small); return &b }
	return s, nil
}

// Addr is the address the WebSocket listener is bound to.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Draining reports whether Shutdown has started.
func (s *Server) Draining() bool { return s.draining.Load() }

// Run serves until Shutdown completes. It returns ErrClosed after a
// Shutdown, or the accept error that stopped it.
func (s *Server) Run(ctx context.Context) error {
	s.startMu.Lock()
	if s.draining.Load() { // Shutdown came first: start nothing it would not wait for
		s.startMu.Unlock()
		<-s.done
		return ErrClosed
	}
	s.reactor.start(s.cfg.Workers)
	s.wg.Add(1)
	go s.sweep()
	s.startMu.Unlock()
	err := s.acceptLoop()
	if s.draining.Load() {
		<-s.done
		return ErrClosed
	}
	// The listener failed on its own: shut everything down.
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainWindow+s.cfg.WriteTimeout)
	defer cancel()
	_ = s.Shutdown(sctx)
	return fmt.Errorf("edge accept: %w", err)
}

func (s *Server) acceptLoop() error {
	var delay time.Duration
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if s.draining.Load() {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of file descriptors or a transient error: back off
				// instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; backing off", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		// The source's share first: a source over it must not take a
		// node-wide slot either.
		var slot hsSlot
		if !s.claimSource(&slot, remoteAddr(nc)) {
			s.metrics.rejected.WithLabelValues(rejectIPHandshakes).Inc() // counted before the client can see the answer
			refuseUnread(nc, respIPHandshakes)
			continue
		}
		select {
		case s.hsSem <- struct{}{}:
		default:
			s.releaseSource(&slot)
			refuseUnread(nc, respOverload)
			s.metrics.rejected.WithLabelValues(rejectOverload).Inc()
			continue
		}
		s.wg.Add(1)
		go s.handshake(nc, slot)
	}
}

// Answers for connections refused at accept, written without reading.
var (
	respOverload     = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	respIPHandshakes = []byte("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
)

// refuseUnread answers a connection without reading its request and closes
// it: on the accept loop, or right after a PROXY header. Nothing has been
// written to the socket yet, so its send buffer is empty and the short write
// completes at once; the deadline only guards against the impossible, so
// the accept loop never waits on a client.
func refuseUnread(nc net.Conn, resp []byte) {
	_ = nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = nc.Write(resp)
	_ = nc.Close()
}

// Shutdown drains the node: stop accepting, end handshakes, close every
// connection with 1001 spread over DrainWindow, wait until each one is torn
// down (and its Close reported), then stop the reactor. Safe to call twice.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		s.startMu.Lock()
		s.draining.Store(true)
		s.startMu.Unlock()
		s.cancel()
		_ = s.ln.Close()
		err = s.closeAll(ctx)
		allClosed := make(chan struct{})
		go func() { s.connWG.Wait(); close(allClosed) }()
		select {
		case <-allClosed:
		case <-ctx.Done():
			// Out of time: cut what is left without waiting for clients.
			for _, c := range s.hub.snapshot() {
				c.abort(causeDrain)
			}
			<-allClosed
			err = fmt.Errorf("edge shutdown: %w", ctx.Err())
		}
		s.wg.Wait()
		s.reactor.stop()
		close(s.done)
	})
	<-s.done
	return err
}

// closeAll closes connections in waves over the drain window, so that
// clients reconnecting elsewhere do not stampede the surviving nodes.
func (s *Server) closeAll(ctx context.Context) error {
	conns := s.hub.snapshot()
	if len(conns) == 0 {
		return nil
	}
	const step = 20 * time.Millisecond
	waves := max(1, int(s.cfg.DrainWindow/step))
	per := (len(conns) + waves - 1) / waves
	t := time.NewTicker(step)
	defer t.Stop()
	for i := 0; i < len(conns); i += per {
		for _, c := range conns[i:min(i+per, len(conns))] {
			c.close(causeDrain)
		}
		if i+per >= len(conns) {
			break
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			for _, c := range conns[i+per:] {
				c.close(causeDrain)
			}
			return nil
		}
	}
	return nil
}

// sweep enforces the timeouts of every connection once per tick: idle,
// maximum duration, unanswered pings, unfinished frames. One goroutine for the
// whole node instead of a timer per connection.
func (s *Server) sweep() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	var due []func()
	trim := burstTrim{min: cmp.Or(s.cfg.trimMin, trimMinUpgrades)}
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			due = due[:0]
			n := now.UnixNano()
			s.hub.each(func(c *Conn) {
				if c.phase() == detached {
					if f := s.checkDetached(c, n); f != nil {
						due = append(due, f)
					}
					return
				}
				if !c.phase().reading() {
					return
				}
				if f := s.check(c, n); f != nil {
					due = append(due, f)
				}
			})
			for _, f := range due { // outside the hub locks: closing takes them
				f()
			}
			s.trimAfterBurst(&trim)
		}
	}
}

func (s *Server) check(c *Conn, now int64) func() {
	cfg := &s.cfg
	idle := now - c.lastActive.Load()
	switch {
	case cfg.MaxDuration > 0 && now-c.connectedAt > int64(cfg.MaxDuration):
		return func() { c.close(causeMaxDuration) }
	case cfg.IdleTimeout > 0 && idle > int64(cfg.IdleTimeout):
		return func() { c.close(causeIdleTimeout) }
	case c.pingSent.Load() != 0 && now-c.pingSent.Load() > int64(cfg.PingTimeout):
		return func() { c.abort(causePingTimeout) }
	case c.partialAt.Load() != 0 && now-c.partialAt.Load() > int64(cfg.FrameTimeout):
		return func() { c.close(causeFrameTimeout) }
	case cfg.PingInterval > 0 && idle > int64(cfg.PingInterval) && c.pingSent.Load() == 0:
		return func() {
			c.pingSent.Store(time.Now().UnixNano())
			var hdr [10]byte
			_ = c.write(appendHeader(hdr[:0], true, opPing, 0), nil, controlFrame)
		}
	}
	return nil
}
