package edge

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// leanSocket trades an upgraded plain TCP connection's *net.TCPConn for an
// *os.File on a duplicate of its descriptor, and closes the original. The
// socket stays the same (options, buffers, the peer); what goes is what an
// idle connection no longer needs: the two address objects and the netFD
// around them, about 270 bytes of live heap per connection. The file keeps
// what the write path uses: the runtime poller, so a backlog's blocking
// writes still honour WriteTimeout. A TLS connection is left as it is.
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
	// Non-blocking already, so the file goes to the runtime poller.
	f := os.NewFile(uintptr(dup), "")
	if f == nil {
		unix.Close(dup)
		return nil, fmt.Errorf("dup: no file for fd %d", dup)
	}
	_ = tc.Close() // the duplicate holds the socket open
	return fileConn{f}, nil
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

// fileConn is a socket held as an *os.File. Only the write side and Close
// are used once a connection is upgraded; the addresses are not kept (the
// Conn has its source IP), so LocalAddr and RemoteAddr report none.
type fileConn struct{ *os.File }

func (fileConn) LocalAddr() net.Addr  { return noAddr{} }
func (fileConn) RemoteAddr() net.Addr { return noAddr{} }

type noAddr struct{}

func (noAddr) Network() string { return "tcp" }
func (noAddr) String() string  { return "" }
