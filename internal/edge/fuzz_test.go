package edge

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// fuzzConn builds an open Conn over one end of a socketpair, outside the
// reactor, so the frame path can be driven directly with arbitrary bytes.
func fuzzConn(t testing.TB, s *Server, rec *recorder) (*Conn, func()) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	peer := os.NewFile(uintptr(fds[1]), "peer")
	// The edge's end as an upgraded plain socket holds it (socket.go).
	nc := newFDSocket(fds[0])
	c := &Conn{srv: s, id: "fuzzfuzzfuzzfuzz", nc: nc}
	c.raw, _ = nc2raw(nc)
	_ = c.raw.Control(func(fd uintptr) { c.fd = int(fd) })
	c.st.Store(uint32(open) | flagOwned | flagUpgraded)
	s.connWG.Add(1)
	s.hub.add(c)
	// Drain what the edge writes so its writes never block.
	done := make(chan struct{})
	go func() { defer close(done); _, _ = io.Copy(io.Discard, peer) }()
	return c, func() {
		c.abort(causePeerGone)
		peer.Close()
		<-done
	}
}

func newFuzzServer(t testing.TB, rec *recorder) *Server {
	s, err := New(Config{Listen: "127.0.0.1:0", MaxFrameBytes: 1024, MaxMessageBytes: 4096},
		Options{Handler: rec, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ln.Close(); s.reactor.closeFDs() })
	return s
}

// FuzzFrames feeds arbitrary client bytes, split at an arbitrary point as two
// reads would split them, through frame parsing, reassembly and the
// protocol checks. Whatever arrives, the edge must not panic, must deliver
// only valid messages within the limits, and must report a close at most once.
func FuzzFrames(f *testing.F) {
	mask := func(fr ws.Frame) []byte { b, _ := ws.CompileFrame(ws.MaskFrame(fr)); return b }
	f.Add(mask(ws.NewTextFrame([]byte("hello"))), uint16(3))
	f.Add(append(mask(ws.NewFrame(ws.OpText, false, []byte("he"))), mask(ws.NewFrame(ws.OpContinuation, true, []byte("llo")))...), uint16(9))
	f.Add(mask(ws.NewPingFrame([]byte("p"))), uint16(1))
	f.Add(mask(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "bye"))), uint16(0))
	f.Add(mask(ws.NewBinaryFrame(make([]byte, 2000))), uint16(100))
	f.Add([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, uint16(5))
	f.Add([]byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'}, uint16(2))
	f.Add(mask(ws.NewTextFrame([]byte{0xff})), uint16(4))
	f.Add([]byte{0x81, 0xfe, 0x00, 0x05, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'}, uint16(3))               // 16-bit length for 5
	f.Add([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 1, 2, 3, 4}, uint16(6))                      // 64-bit length for 256
	f.Add(append(mask(ws.NewPingFrame([]byte("a"))), mask(ws.NewTextFrame([]byte("b")))...), uint16(8)) // a read ends mid-frame
	rec := newRecorder()
	rec.echo = false
	s := newFuzzServer(f, rec)
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		rec.mu.Lock()
		rec.messages, rec.closes = nil, nil
		rec.mu.Unlock()
		c, cleanup := fuzzConn(t, s, rec)
		cut := int(split) % (len(data) + 1)
		for _, part := range [][]byte{data[:cut], data[cut:]} {
			for len(part) > 0 && c.phase().reading() {
				c.readMu.Lock()
				if c.in == nil {
					c.takeIn()
				}
				n := copy((*c.in)[c.inLen:], part)
				part = part[n:]
				c.inLen += n
				c.process()
				full := c.inLen == len(*c.in)
				c.readMu.Unlock()
				if full && c.phase().reading() {
					t.Fatalf("buffer full without a complete frame or a close")
				}
			}
		}
		cleanup()
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.closes) != 1 {
			t.Fatalf("%d Close reports, want exactly 1", len(rec.closes))
		}
		for _, m := range rec.messages {
			if len(m) > 4096 {
				t.Fatalf("delivered a %d-byte message over the 4096 limit", len(m))
			}
		}
		<-rec.closedCh
	})
}
