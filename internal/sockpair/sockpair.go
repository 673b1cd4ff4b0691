// Package sockpair makes connected pairs of local stream sockets: one end
// for the edge, which reads and writes a real descriptor through its
// reactor, the other for whatever carries the bytes (TLS termination, a
// relay to another node).
package sockpair

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// New returns the two ends of a non-blocking AF_UNIX stream socketpair.
func New() (a, b *net.UnixConn, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close() // FileConn dup'ed it
		if err != nil {
			if i == 1 {
				conns[0].Close()
			} else {
				unix.Close(fds[1])
			}
			return nil, nil, fmt.Errorf("socketpair: %w", err)
		}
		conns[i] = c.(*net.UnixConn)
	}
	return conns[0], conns[1], nil
}
