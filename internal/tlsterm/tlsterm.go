// Package tlsterm terminates TLS in front of the edge's epoll reactor, in
// process: each accepted TLS connection is bridged to one end of a local
// socketpair and the other, plain end is what the edge accepts, so the
// reactor keeps working on raw file descriptors. A TLS connection costs two
// goroutines (reading and writing the TLS stream) and a socketpair; plain
// connections cost nothing. For very large deployments, terminating wss://
// at the load balancer keeps the edge at zero goroutines per connection.
package tlsterm

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/switchboardgw/switchboard/internal/sockpair"
)

// Listener accepts TLS connections on inner and hands out plain ones.
type Listener struct {
	inner     net.Listener
	tls       *tls.Config
	timeout   time.Duration
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Listen wraps inner. handshakeTimeout bounds each TLS handshake (default 10 s).
func Listen(inner net.Listener, cfg *tls.Config, handshakeTimeout time.Duration) (*Listener, error) {
	if cfg == nil || (len(cfg.Certificates) == 0 && cfg.GetCertificate == nil && cfg.GetConfigForClient == nil) {
		return nil, errors.New("tlsterm: a TLS config with a certificate is required")
	}
	if handshakeTimeout <= 0 {
		handshakeTimeout = 10 * time.Second
	}
	return &Listener{inner: inner, tls: cfg, timeout: handshakeTimeout}, nil
}

// Accept returns the plain end of a bridged connection at once; the TLS
// handshake runs on the bridge's goroutine, so a slow client never holds
// up the accept loop (a failed handshake shows up as EOF).
func (l *Listener) Accept() (net.Conn, error) {
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			return nil, err
		}
		plain, bridge, err := sockpair.New()
		if err != nil {
			raw.Close()
			var errno unix.Errno
			if errors.As(err, &errno) && (errno == unix.EMFILE || errno == unix.ENFILE) {
				return nil, err // out of descriptors: let the caller back off
			}
			continue
		}
		l.wg.Add(1)
		go l.bridge(tls.Server(raw, l.tls), bridge)
		return &Conn{UnixConn: plain, peer: raw}, nil
	}
}

// Close stops accepting. Bridges end with their connections.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() { err = l.inner.Close() })
	return err
}

// Wait returns when every bridge has ended (after the edge closed its
// connections).
func (l *Listener) Wait() { l.wg.Wait() }

// Addr is the TLS listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// bridge copies between the TLS stream and the socketpair until either
// side ends, then closes both.
func (l *Listener) bridge(tc *tls.Conn, b *net.UnixConn) {
	defer l.wg.Done()
	defer b.Close()
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(l.timeout))
	if err := tc.Handshake(); err != nil {
		return
	}
	_ = tc.SetDeadline(time.Time{})
	done := make(chan struct{})
	go func() { // edge → client; owned by this bridge, which waits for it
		defer close(done)
		_, _ = io.Copy(tc, b)
		_ = tc.CloseWrite() // close_notify: the edge is done writing
		_ = tc.Close()      // unblocks the read below if the client lingers
	}()
	_, _ = io.Copy(b, tc) // client → edge
	_ = b.CloseWrite()    // the edge reads EOF, closes, and ends the copy above
	<-done
}

// Conn is the plain end the edge reads and writes through its reactor. It
// reports the TLS client's addresses, not the socketpair's.
type Conn struct {
	*net.UnixConn
	peer net.Conn // the TLS side; asked late, so a PROXY protocol header is parsed by then
}

// RemoteAddr is the TLS client's address.
func (c *Conn) RemoteAddr() net.Addr { return c.peer.RemoteAddr() }

// Handshake reads the TLS side's PROXY protocol header, if it is a
// PROXY protocol connection (the header comes before the TLS handshake),
// so that RemoteAddr names the client before any TLS byte arrives; it
// returns nil at once otherwise. The edge calls it to charge a load
// balancer's connection to its client (-max-handshakes-per-ip) while the
// TLS handshake is still to come. Safe to call while the bridge reads.
func (c *Conn) Handshake() error {
	if h, ok := c.peer.(interface{ Handshake() error }); ok {
		return h.Handshake()
	}
	return nil
}

// LocalAddr is the TLS listener's address.
func (c *Conn) LocalAddr() net.Addr { return c.peer.LocalAddr() }
