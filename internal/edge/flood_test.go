package edge

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// stuckConn is fuzzConn with a peer that reads nothing until the test reads
// peer: the edge's writes back up as they do for a client that never reads.
func stuckConn(t *testing.T, s *Server) (*Conn, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[1], false); err != nil {
		t.Fatal(err)
	}
	peer := os.NewFile(uintptr(fds[1]), "peer")
	// The edge's end as an upgraded plain socket holds it: a bare
	// descriptor, whose backlog writes wait through a borrowed waiter.
	nc := newFDSocket(fds[0])
	c := &Conn{srv: s, id: "stuckstuckstuck0", nc: nc}
	c.raw, _ = nc2raw(nc)
	_ = c.raw.Control(func(fd uintptr) { c.fd = int(fd) })
	c.st.Store(uint32(open) | flagOwned | flagUpgraded)
	s.connWG.Add(1)
	s.hub.add(c)
	t.Cleanup(func() {
		c.abort(causePeerGone)
		peer.Close()
		s.wg.Wait() // the writer goroutine, if any
	})
	return c, peer
}

func newQueueServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = time.Minute // the test decides when the peer reads
	}
	s, err := New(cfg, Options{Handler: newRecorder(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ln.Close(); s.reactor.closeFDs() })
	return s
}

func queuedBytes(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.held()
}

// feed hands client bytes to the frame path as a read would.
func feed(c *Conn, data []byte) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	for len(data) > 0 && c.phase().reading() {
		if c.in == nil {
			c.takeIn()
		}
		n := copy((*c.in)[c.inLen:], data)
		data = data[n:]
		c.inLen += n
		c.process()
	}
}

func maskedPing(payload []byte) []byte {
	b, _ := ws.CompileFrame(ws.MaskFrame(ws.NewPingFrame(payload)))
	return b
}

// fillBacklog sends numbered 1 KiB messages until some of them wait in the
// queue (the peer's socket buffer is full), and returns how many it sent.
func fillBacklog(t *testing.T, c *Conn) int {
	t.Helper()
	msg := make([]byte, 1024)
	for n := 0; n < 100000; n++ {
		binary.BigEndian.PutUint32(msg, uint32(n))
		if err := c.Send(msg, true); err != nil {
			t.Fatalf("message %d: %v", n, err)
		}
		if queuedBytes(c) > 0 {
			return n + 1
		}
	}
	t.Fatal("no backlog after 100000 messages")
	return 0
}

// A client that pings and never reads: while its queue has a backlog it
// costs one pending pong, however many pings it sends, and when it reads
// again it gets its messages, then the pong answering its latest ping.
func TestPongsCoalesceBehindABacklog(t *testing.T) {
	s := newQueueServer(t, Config{MaxFrameBytes: 1024, MaxMessageBytes: 4096, MaxQueueBytes: 64 << 10, ControlRate: -1})
	c, peer := stuckConn(t, s)
	sent := fillBacklog(t, c)
	before := queuedBytes(c)

	const pings = 10000
	payload := func(i int) []byte { return []byte(fmt.Sprintf("%-125d", i)) } // the 125-byte maximum
	for i := range pings {
		feed(c, maskedPing(payload(i)))
		// One pong may be in the write under way, one waits: never more.
		if q := queuedBytes(c); q > before+2*maxControlFrame {
			t.Fatalf("after %d pings the queue holds %d bytes, %d before them: pongs are not coalesced", i+1, q, before)
		}
	}
	if !c.phase().reading() {
		t.Fatalf("connection closed (%v) though its messages fit the bound", c.cause.why)
	}

	// The client reads again: every message in order, exactly one pong
	// (the latest ping's), then the close frame.
	c.Close(CodeNormal, "done", ReasonAPIClose) // queued behind the backlog: does not block
	_ = peer.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(peer)
	var pongs [][]byte
	for n := 0; ; {
		f, err := ws.ReadFrame(br)
		if err != nil {
			t.Fatalf("read after %d messages: %v", n, err)
		}
		switch f.Header.OpCode {
		case ws.OpBinary:
			if got := int(binary.BigEndian.Uint32(f.Payload)); got != n || len(pongs) > 0 {
				t.Fatalf("message %d arrived as number %d (after %d pongs)", got, n, len(pongs))
			}
			n++
			continue
		case ws.OpPong:
			pongs = append(pongs, f.Payload)
			continue
		case ws.OpClose:
			if n != sent {
				t.Fatalf("%d messages before the close, want %d", n, sent)
			}
		default:
			t.Fatalf("unexpected frame %v", f.Header.OpCode)
		}
		break
	}
	// The writer may have taken one pong before it blocked; the one that
	// waited answers the latest ping.
	if len(pongs) < 1 || len(pongs) > 2 || string(pongs[len(pongs)-1]) != string(payload(pings-1)) {
		t.Fatalf("got %d pongs, want one or two, the last answering ping %d", len(pongs), pings-1)
	}
	if got := metric(t, s.metrics.pongsCoalesced); got != float64(pings-len(pongs)) {
		t.Fatalf("pongs coalesced = %v, want %d", got, pings-len(pongs))
	}
}

// Control frames have a fixed allowance above the bound, no more: server
// pings queued behind a client that does not read end in a slow-consumer
// close, never in a queue that grows.
func TestControlFramesCountAgainstTheQueueBound(t *testing.T) {
	const bound = 8192
	s := newQueueServer(t, Config{MaxFrameBytes: 1024, MaxMessageBytes: 4096, MaxQueueBytes: bound, ControlRate: -1})
	c, _ := stuckConn(t, s)
	fillBacklog(t, c)
	msg := make([]byte, 1024)
	for queuedBytes(c)+len(msg)+4 <= bound {
		if err := c.Send(msg, true); err != nil {
			t.Fatalf("a message within the bound: %v", err)
		}
	}
	// Pongs: one slot, whatever the number of pings.
	var hdr [10]byte
	pong := make([]byte, 125)
	for range 1000 {
		if err := c.write(appendHeader(hdr[:0], true, opPong, len(pong)), pong, pongFrame); err != nil {
			t.Fatalf("pong: %v", err)
		}
	}
	if q := queuedBytes(c); q > bound+maxControlFrame {
		t.Fatalf("1000 pongs queued %d bytes, bound %d + one pong", q, bound)
	}
	// Server pings: the allowance, then the connection is cut off.
	peak, accepted := 0, 0
	var err error
	for range 10000 {
		if err = c.write(appendHeader(hdr[:0], true, opPing, 0), nil, controlFrame); err != nil {
			break
		}
		accepted++
		peak = max(peak, queuedBytes(c))
	}
	if !errors.Is(err, errBufferFullForTest()) {
		t.Fatalf("after %d pings: %v, want ErrBufferFull", accepted, err)
	}
	if peak > bound+controlAllowance {
		t.Fatalf("queue peaked at %d bytes, bound %d + allowance %d", peak, bound, controlAllowance)
	}
	if c.phase() != closed || c.cause.why != ReasonSlowConsumer {
		t.Fatalf("state %v reason %v, want closed as slow_consumer", c.phase(), c.cause.why)
	}
	t.Logf("queue peaked at %d bytes (bound %d, allowance %d) after %d server pings", peak, bound, controlAllowance, accepted)
}

// While $connect runs, control frames are bounded too (nothing sends them
// today: the reader and the sweeper wait for the upgrade).
func TestPendingQueueBoundsControlFrames(t *testing.T) {
	s := newQueueServer(t, Config{PendingQueueBytes: 1024})
	c := &Conn{srv: s, id: "pendingpending00"}
	// The zero phase is handshaking: $connect running.
	msg := make([]byte, 100)
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		err = c.Send(msg, false)
	}
	if !errors.Is(err, errBufferFullForTest()) || len(c.out.buf) > 1024 {
		t.Fatalf("posts during $connect: %v with %d bytes held, want ErrBufferFull within 1024", err, len(c.out.buf))
	}
	var hdr [10]byte
	for i := 0; i < 1000 && err != nil; i++ {
		err = c.write(appendHeader(hdr[:0], true, opPing, 0), nil, controlFrame)
	}
	for i := 0; i < 1000 && err == nil; i++ {
		err = c.write(appendHeader(hdr[:0], true, opPing, 0), nil, controlFrame)
	}
	if !errors.Is(err, errBufferFullForTest()) || len(c.out.buf) > 1024+controlAllowance {
		t.Fatalf("control frames during $connect: %v with %d bytes held, want ErrBufferFull within %d", err, len(c.out.buf), 1024+controlAllowance)
	}
}

// A client over -control-rate is closed 1008 with its own reason; a
// client within it (a burst included) is answered and stays.
func TestControlRateClosesAPingFlooder(t *testing.T) {
	e := startEdge(t, Config{ControlRate: 50, ControlBurst: 20}, newRecorder())
	polite := dial(t, e.url, ws.Dialer{})
	var burst []byte
	for i := range 20 {
		burst = append(burst, maskedPing([]byte{byte(i)})...)
	}
	if _, err := polite.Write(burst); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if f := polite.readFrame(t); f.Header.OpCode != ws.OpPong || f.Payload[0] != byte(i) {
			t.Fatalf("frame %d: %v %v, want pong %d", i, f.Header.OpCode, f.Payload, i)
		}
	}

	flooder := dial(t, e.url, ws.Dialer{})
	var flood []byte
	for range 1000 {
		flood = append(flood, maskedPing([]byte("flood"))...)
	}
	_, _ = flooder.Write(flood) // may fail once the edge has cut it off
	if code, reason := flooder.expectClose(t); code != 1008 {
		t.Fatalf("flooder closed %d %q, want 1008", code, reason)
	}
	ev := e.rec.waitClose(t)
	if ev.why != ReasonControlRate || ev.code != CodePolicy {
		t.Fatalf("reported %+v, want control_rate 1008", ev)
	}
	if got := metric(t, e.metrics.closed.WithLabelValues("control_rate")); got != 1 {
		t.Fatalf("closed{reason=control_rate} = %v, want 1", got)
	}
	// The polite client did not notice.
	polite.send(t, ws.NewTextFrame([]byte("still here")))
	if f := polite.readFrame(t); string(f.Payload) != "still here" {
		t.Fatalf("polite client got %q", f.Payload)
	}
}

// A client streaming complete frames whose reads always end inside the next
// frame is never cut by the frame timeout: the timer measures one frame's
// age. When it then stalls inside a frame, it is cut (1008).
func TestStreamingFramesOutliveTheFrameTimeout(t *testing.T) {
	const frameTimeout = 300 * time.Millisecond
	rec := newRecorder()
	rec.echo = false
	e := startEdge(t, Config{FrameTimeout: frameTimeout}, rec)
	c := dial(t, e.url, ws.Dialer{})
	eventually(t, "connection registered", func() bool { return e.Count() == 1 })
	var sc *Conn
	e.Each(func(c *Conn) { sc = c })

	// Compiled once each: MaskFrame picks a new mask every call.
	frames := map[int][]byte{}
	frame := func(i int) []byte {
		if frames[i] == nil {
			frames[i], _ = ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(fmt.Sprintf("frame %04d %080d", i, i)))))
		}
		return frames[i]
	}
	half := len(frame(0)) / 2
	if _, err := c.Write(frame(0)[:half]); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	lastWrite := start
	n := 0
	for ; time.Since(start) < 3*frameTimeout+100*time.Millisecond; n++ {
		<-tick.C
		// The rest of frame n and the start of frame n+1: every read ends
		// inside a frame.
		lastWrite = time.Now()
		if _, err := c.Write(append(frame(n)[half:], frame(n + 1)[:half]...)); err != nil {
			t.Fatalf("write %d after %s: %v", n, time.Since(start), err)
		}
		eventually(t, fmt.Sprintf("frame %d delivered", n), func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return len(rec.messages) == n+1 || !sc.phase().reading()
		})
		sc.readMu.Lock()
		partial := sc.inLen
		sc.readMu.Unlock()
		if partial == 0 {
			t.Fatalf("after write %d the edge's buffer is empty: the read did not end mid-frame", n)
		}
		if !sc.phase().reading() {
			t.Fatalf("closed after %s (%d frames, frame timeout %s): %v", time.Since(start), n, frameTimeout, sc.cause.why)
		}
	}
	streamed := time.Since(start)

	// Now it stalls inside frame n: cut at the frame timeout, counted from
	// the write that began the frame.
	if code, _ := c.expectClose(t); code != 1008 {
		t.Fatalf("stalled client closed %d, want 1008", code)
	}
	cut := time.Since(lastWrite)
	if ev := e.rec.waitClose(t); ev.why != ReasonReadTimeout {
		t.Fatalf("reason %v, want read_timeout", ev.why)
	}
	if cut < frameTimeout {
		t.Fatalf("stalled frame cut after %s, before the %s frame timeout", cut, frameTimeout)
	}
	t.Logf("streamed %d frames for %s (%.1f× the frame timeout) without a close; a stall was cut after %s",
		n, streamed.Round(time.Millisecond), float64(streamed)/float64(frameTimeout), cut.Round(time.Millisecond))
}

// RFC 6455 §5.2: a length in more bytes than needed is a protocol error.
func TestNonMinimalLengthsAreRejected(t *testing.T) {
	ext16 := func(n uint16) []byte { return []byte{0x82, 0x80 | 126, byte(n >> 8), byte(n), 1, 2, 3, 4} }
	ext64 := func(n uint64) []byte {
		b := []byte{0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}
		binary.BigEndian.PutUint64(b[2:10], n)
		return b
	}
	for _, tc := range []struct {
		name string
		hdr  []byte
		ok   bool
	}{
		{"16-bit form for 0", ext16(0), false},
		{"16-bit form for 125", ext16(125), false},
		{"16-bit form for 126", ext16(126), true},
		{"16-bit form for 65535", ext16(65535), true},
		{"64-bit form for 0", ext64(0), false},
		{"64-bit form for 125", ext64(125), false},
		{"64-bit form for 65535", ext64(65535), false},
		{"64-bit form for 65536", ext64(65536), true},
		{"64-bit form with the top bit set", ext64(1 << 63), false},
	} {
		h, err := parseHeader(tc.hdr)
		if tc.ok && (err != nil || h.hdrSize != len(tc.hdr)) {
			t.Errorf("%s: %v (header size %d), want accepted", tc.name, err, h.hdrSize)
		}
		if !tc.ok && !errors.Is(err, errBadLength) {
			t.Errorf("%s: %v, want errBadLength", tc.name, err)
		}
	}

	// Over a real connection: closed 1002, counted as a protocol error.
	e := startEdge(t, Config{}, newRecorder())
	for i, hdr := range [][]byte{ext16(5), ext64(300)} {
		c := dial(t, e.url, ws.Dialer{})
		if _, err := c.Write(append(hdr, make([]byte, 300)...)); err != nil {
			t.Fatal(err)
		}
		if code, _ := c.expectClose(t); code != 1002 {
			t.Fatalf("non-minimal length %d: close %d, want 1002", i, code)
		}
		if ev := e.rec.waitClose(t); ev.why != ReasonProtocolError {
			t.Fatalf("non-minimal length %d: reason %v", i, ev.why)
		}
	}
}

// The fields added for floods (the pending-pong pointer, the control-rate
// state) must not move Conn to a larger allocation size class: idle
// connections are the edge's memory budget.
func TestConnStaysInItsSizeClass(t *testing.T) {
	if s := unsafe.Sizeof(Conn{}); s > 384 {
		t.Fatalf("Conn is %d bytes: over the 384-byte size class it had", s)
	}
}
