package edge

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// leanSocket trades an upgraded plain TCP connection's *net.TCPConn for a
// bare descriptor (fdSocket) on a duplicate of its own, and closes the
// original. The socket stays the same (options, buffers, the peer); what
// goes is what an idle connection does not use: the netFD with its two
// address objects, and the runtime poller's registration (its descriptor,
// ≈ 290 bytes, is never returned to the OS). A TLS connection is left as
// it is.
func leanSocket(tc *net.TCPConn) (net.Conn, error) {
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup, derr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	_ = tc.Close() // the duplicate holds the socket open
	return newFDSocket(dup), nil
}

// slim is nc as an upgraded connection keeps it: lean when it is a plain
// socket, as it is otherwise (TLS, or when the duplicate fails).
func (s *Server) slim(nc net.Conn, id string) net.Conn {
	tc := plainSocket(nc)
	if tc == nil {
		return nc
	}
	lean, err := leanSocket(tc)
	if err != nil {
		s.log.Debug("keeping the TCP connection as it is", "conn", id, "err", err)
		return nc
	}
	return lean
}

// plainSocket is nc's TCP socket if nothing but the socket carries the
// connection any more: a *net.TCPConn, or a PROXY protocol connection
// whose header is read and fully consumed. Nil otherwise (TLS).
func plainSocket(nc net.Conn) *net.TCPConn {
	switch nc := nc.(type) {
	case *net.TCPConn:
		return nc
	case interface{ Socket() (*net.TCPConn, bool) }:
		if tc, ok := nc.Socket(); ok {
			return tc
		}
	}
	return nil
}

// fdSocket is a non-blocking stream socket held as its bare descriptor,
// outside the runtime poller: the reactor's epoll already tells when it is
// readable, and the reactor reads and writes it with plain system calls.
// Only a backlog's writer waits for it (Write, bounded by the write
// deadline); for that one write it borrows a duplicate descriptor that the
// runtime poller watches (the waiter), closed again when the write ends, so
// the poller holds one descriptor per socket with a blocked writer, not per
// connection.
//
// Without the poller's descriptor lock, state counts the calls using fd
// (and marks Close): the descriptor is closed by the last of Close and
// those calls, so its number cannot be reused under a call that still has
// it (the reactor's arm relies on that).
type fdSocket struct {
	fd    int
	state atomic.Uint32 // sockClosed | calls holding fd

	mu       sync.Mutex
	waiter   *os.File // the blocked writer's poller-registered duplicate, or nil
	deadline int64    // Write's deadline, unix nanos (0: none)
}

const sockClosed = 1 << 31

func newFDSocket(fd int) *fdSocket { return &fdSocket{fd: fd} }

// errMustNotWait: a raw callback asked to wait for readiness, which an
// fdSocket leaves to the reactor (or to Write).
var errMustNotWait = errors.New("fdSocket: raw I/O cannot wait for readiness")

// acquire takes a reference to fd; false once the socket is closed.
func (s *fdSocket) acquire() bool {
	for {
		v := s.state.Load()
		if v&sockClosed != 0 {
			return false
		}
		if s.state.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// release drops a reference; the last one after Close closes fd.
func (s *fdSocket) release() {
	if s.state.Add(^uint32(0)) == sockClosed {
		_ = unix.Close(s.fd)
	}
}

// Close closes the socket: at once, or when the last call using fd ends. A
// writer blocked in Write returns with an error.
func (s *fdSocket) Close() error {
	for {
		v := s.state.Load()
		if v&sockClosed != 0 {
			return net.ErrClosed
		}
		if !s.state.CompareAndSwap(v, v|sockClosed) {
			continue
		}
		s.mu.Lock()
		w := s.waiter
		s.waiter = nil
		s.mu.Unlock()
		if w != nil {
			_ = w.Close() // wakes the blocked write; the duplicate is closed on return
		}
		if v == 0 {
			return unix.Close(s.fd)
		}
		return nil
	}
}

// Read reads what is there without waiting (EAGAIN if nothing is).
func (s *fdSocket) Read(p []byte) (int, error) {
	if !s.acquire() {
		return 0, net.ErrClosed
	}
	defer s.release()
	for {
		n, err := unix.Read(s.fd, p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 && len(p) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write writes all of p. What the socket does not take at once is written
// through the waiter, bounded by the write deadline: a timeout is an
// error whose Timeout() is true, as with a net.Conn.
func (s *fdSocket) Write(p []byte) (int, error) {
	if !s.acquire() {
		return 0, net.ErrClosed
	}
	n := 0
	var err error
	for n < len(p) {
		var m int
		m, err = unix.Write(s.fd, p[n:])
		if m > 0 {
			n += m
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			break
		}
	}
	s.release()
	if err == unix.EAGAIN {
		m, werr := s.writeWaiting(p[n:])
		return n + m, werr
	}
	if err != nil {
		return n, fmt.Errorf("write: %w", err)
	}
	return n, nil
}

// writeWaiting writes p through a poller-registered duplicate of fd, which
// it closes again afterwards (unless Close took it first).
func (s *fdSocket) writeWaiting(p []byte) (int, error) {
	s.mu.Lock()
	if !s.acquire() {
		s.mu.Unlock()
		return 0, net.ErrClosed
	}
	dup, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
	s.release()
	if err != nil {
		s.mu.Unlock()
		return 0, fmt.Errorf("dup: %w", err)
	}
	// fd is non-blocking, and so its duplicate: the file joins the poller.
	w := os.NewFile(uintptr(dup), "")
	s.waiter = w
	var deadline time.Time
	if s.deadline != 0 {
		deadline = time.Unix(0, s.deadline)
	}
	s.mu.Unlock()
	var n int
	if err = w.SetWriteDeadline(deadline); err == nil {
		n, err = w.Write(p)
	}
	s.mu.Lock()
	mine := s.waiter == w
	if mine {
		s.waiter = nil
	}
	s.mu.Unlock()
	if mine {
		_ = w.Close()
	}
	return n, err
}

// SetWriteDeadline bounds the waiting of Write.
func (s *fdSocket) SetWriteDeadline(t time.Time) error {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	s.mu.Lock()
	s.deadline = ns
	s.mu.Unlock()
	return nil
}

// SetReadDeadline is a no-op: reads never wait.
func (s *fdSocket) SetReadDeadline(time.Time) error { return nil }

// SetDeadline sets the write deadline (reads never wait).
func (s *fdSocket) SetDeadline(t time.Time) error { return s.SetWriteDeadline(t) }

// The addresses are not kept (the Conn has its source IP), so LocalAddr
// and RemoteAddr report none.
func (s *fdSocket) LocalAddr() net.Addr  { return noAddr{} }
func (s *fdSocket) RemoteAddr() net.Addr { return noAddr{} }

// SyscallConn gives the reactor the descriptor. Its callbacks run once and
// must not ask to wait (return false).
func (s *fdSocket) SyscallConn() (rawConn, error) { return (*fdRaw)(s), nil }

// fdRaw is an fdSocket as a syscall.RawConn; it holds a reference to the
// descriptor while a callback runs.
type fdRaw fdSocket

func (r *fdRaw) Control(f func(fd uintptr)) error {
	s := (*fdSocket)(r)
	if !s.acquire() {
		return net.ErrClosed
	}
	f(uintptr(s.fd))
	s.release()
	return nil
}

func (r *fdRaw) Read(f func(fd uintptr) bool) error  { return r.once(f) }
func (r *fdRaw) Write(f func(fd uintptr) bool) error { return r.once(f) }

func (r *fdRaw) once(f func(fd uintptr) bool) error {
	s := (*fdSocket)(r)
	if !s.acquire() {
		return net.ErrClosed
	}
	done := f(uintptr(s.fd))
	s.release()
	if !done {
		return errMustNotWait
	}
	return nil
}

type noAddr struct{}

func (noAddr) Network() string { return "tcp" }
func (noAddr) String() string  { return "" }
