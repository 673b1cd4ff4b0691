package edge

import (
	"os"

	"github.com/switchboardgw/switchboard/internal/conn"
)

var os_ErrDeadline = os.ErrDeadlineExceeded

func errBufferFullForTest() error { return conn.ErrBufferFull }
func errGoneForTest() error       { return conn.ErrGone }
