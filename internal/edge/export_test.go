package edge

import (
	"net/netip"
	"os"

	"github.com/switchboardgw/switchboard/internal/conn"
)

var os_ErrDeadline = os.ErrDeadlineExceeded

func errBufferFullForTest() error { return conn.ErrBufferFull }
func errGoneForTest() error       { return conn.ErrGone }

// inProgress is the number of handshakes key has in progress.
func (l *sourceLimit) inProgress(key netip.Prefix) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[key]
}
