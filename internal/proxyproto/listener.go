package proxyproto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Config configures a PROXY protocol listener.
type Config struct {
	// Required: every connection from a trusted peer must start with a
	// header, and a connection from an untrusted peer is refused. When
	// false, a header is read if present, and untrusted peers are served
	// as they are (their address is the socket's; a header they send is
	// not interpreted, so it reaches the application as bytes and fails
	// there). Default: false.
	Required bool
	// Trusted peers (the load balancers) whose headers are believed.
	// Required unless TrustAll: a header from any peer would let every
	// client choose its own source address.
	Trusted []netip.Prefix
	// TrustAll believes a header from every peer. Right only when nothing
	// but the load balancer can reach the listener; it must be chosen
	// explicitly. Default: false.
	TrustAll bool
	// HeaderTimeout bounds the wait for the header, on top of any read
	// deadline the application set. Default: 5s; negative means none.
	HeaderTimeout time.Duration
}

// ErrNoTrustedPeers is returned by Listen when neither Trusted nor TrustAll
// says whose headers to believe.
var ErrNoTrustedPeers = errors.New("proxyproto: no trusted peers: set Trusted (the load balancers) or TrustAll")

// Validate reports whether c is usable.
func (c Config) Validate() error {
	if len(c.Trusted) == 0 && !c.TrustAll {
		return ErrNoTrustedPeers
	}
	for _, p := range c.Trusted {
		if !p.IsValid() {
			return errors.New("proxyproto: invalid trusted prefix")
		}
	}
	return nil
}

// Listener wraps a TCP listener. Accept returns at once: the header is
// read by the connection's first Read (or Handshake), on the goroutine
// that reads it, so a client that is slow to send its header holds up only
// its own handshake, never the accept loop. The edge reads each new
// connection on its own handshake goroutine, under its handshake deadline.
type Listener struct {
	inner net.Listener
	cfg   Config
}

// Listen wraps inner, which must be a TCP listener.
func Listen(inner net.Listener, cfg Config) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, ok := inner.Addr().(*net.TCPAddr); !ok {
		return nil, fmt.Errorf("proxyproto: %s is not a TCP listener", inner.Addr())
	}
	switch {
	case cfg.HeaderTimeout == 0:
		cfg.HeaderTimeout = 5 * time.Second
	case cfg.HeaderTimeout < 0:
		cfg.HeaderTimeout = 0
	}
	return &Listener{inner: inner, cfg: cfg}, nil
}

// Accept waits for the next connection. The result is a *Conn.
func (l *Listener) Accept() (net.Conn, error) {
	nc, err := l.inner.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		// Cannot happen for a TCP listener; refuse the one connection
		// rather than fail the accept loop.
		_ = nc.Close()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: errNotTCP}
	}
	return &Conn{TCPConn: tc, cfg: &l.cfg}, nil
}

var errNotTCP = errors.New("proxyproto: accepted a non-TCP connection")

// Close closes the inner listener.
func (l *Listener) Close() error { return l.inner.Close() }

// Addr is the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Conn is an accepted connection. It embeds the *net.TCPConn, so
// SyscallConn (the edge's epoll path) and the TCP options work on it; Read
// and WriteTo read the header first, and RemoteAddr/LocalAddr report the
// header's addresses once it is read (the socket's before).
//
// Using the socket directly (SyscallConn, File) is safe after the first
// Read or Handshake, and once Buffered() is 0: the header is consumed from
// the socket exactly, and the only bytes ever held here are the first bytes
// of a connection that turned out to have no header (Required false).
type Conn struct {
	*net.TCPConn
	cfg *Config

	hsMu    sync.Mutex // held while reading the header
	hsDone  bool
	hsErr   error
	pending []byte // payload read while looking for a header; served first

	mu           sync.Mutex // the fields below
	header       *Header
	readDeadline time.Time
}

// Handshake reads the PROXY header if it has not been read yet. Read calls
// it; call it directly to learn the addresses before reading.
func (c *Conn) Handshake() error {
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	if !c.hsDone {
		c.hsDone = true
		c.hsErr = c.handshake()
	}
	return c.hsErr
}

func (c *Conn) handshake() error {
	peer := c.TCPConn.RemoteAddr().(*net.TCPAddr).AddrPort()
	if !c.trusted(peer.Addr()) {
		if c.cfg.Required {
			return fmt.Errorf("%w: %s", ErrUntrusted, peer.Addr())
		}
		return nil
	}
	if t := c.cfg.HeaderTimeout; t > 0 {
		c.mu.Lock()
		user := c.readDeadline
		dl := time.Now().Add(t)
		if user.IsZero() || dl.Before(user) {
			_ = c.TCPConn.SetReadDeadline(dl)
		}
		c.mu.Unlock()
		defer func() {
			// Put back the application's deadline (it may have changed
			// meanwhile).
			c.mu.Lock()
			_ = c.TCPConn.SetReadDeadline(c.readDeadline)
			c.mu.Unlock()
		}()
	}
	h, pending, err := readHeader(c.TCPConn, c.cfg.Required)
	if err != nil {
		return err
	}
	c.pending = pending
	c.mu.Lock()
	c.header = h
	c.mu.Unlock()
	return nil
}

func (c *Conn) trusted(a netip.Addr) bool {
	if c.cfg.TrustAll {
		return true
	}
	a = a.Unmap()
	for _, p := range c.cfg.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Read reads the header first, then serves any bytes read while looking
// for it, then reads the socket.
func (c *Conn) Read(b []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	c.hsMu.Lock()
	if len(c.pending) > 0 && len(b) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		c.hsMu.Unlock()
		return n, nil
	}
	c.hsMu.Unlock()
	return c.TCPConn.Read(b)
}

// WriteTo keeps io.Copy from bypassing Read through the TCPConn's WriteTo.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}

// Buffered is the number of payload bytes read from the socket and not
// yet returned by Read.
func (c *Conn) Buffered() int {
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	return len(c.pending)
}

// Socket is the TCP socket alone, once the header is read and nothing read
// past it is held here (Buffered is 0): from then on the socket carries
// the whole connection, and a user that no longer needs the header's
// addresses may keep only it (the edge does, for an upgraded connection).
func (c *Conn) Socket() (*net.TCPConn, bool) {
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	return c.TCPConn, c.hsDone && c.hsErr == nil && len(c.pending) == 0
}

// Header is the PROXY header, or nil (none read yet, none sent, or an
// untrusted peer).
func (c *Conn) Header() *Header {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.header
}

// RemoteAddr is the client's address from the header, once read; a
// *net.TCPAddr, as the edge expects.
func (c *Conn) RemoteAddr() net.Addr {
	if h := c.Header(); h != nil && !h.Local && h.Source.IsValid() {
		return net.TCPAddrFromAddrPort(h.Source)
	}
	return c.TCPConn.RemoteAddr()
}

// LocalAddr is the address the client connected to, from the header, once read.
func (c *Conn) LocalAddr() net.Addr {
	if h := c.Header(); h != nil && !h.Local && h.Destination.IsValid() {
		return net.TCPAddrFromAddrPort(h.Destination)
	}
	return c.TCPConn.LocalAddr()
}

// SetDeadline sets both deadlines, remembering the read deadline so the
// header timeout can be restored to it.
func (c *Conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline = t
	return c.TCPConn.SetDeadline(t)
}

// SetReadDeadline sets the read deadline (see SetDeadline).
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline = t
	return c.TCPConn.SetReadDeadline(t)
}
