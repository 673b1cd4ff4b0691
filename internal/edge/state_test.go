package edge

import (
	"sync"
	"testing"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The ways a connection ends, racing on one connection with a write
// backlog: an API close, the client's close frame, an abort (slow
// consumer) and a drain. Whatever the order, it ends exactly once, with
// one of their causes, holding no queued bytes, out of the hub; a close
// after the end changes nothing.
func TestCloseVerbsRaceToOneEnd(t *testing.T) {
	s := newQueueServer(t, Config{MaxFrameBytes: 1024, MaxMessageBytes: 4096, MaxQueueBytes: 64 << 10, ControlRate: -1})
	rec := s.handler.(*recorder)
	clientFrame, _ := ws.CompileFrame(ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(4001, "client"))))
	want := map[CloseReason]int{ReasonAPIClose: 4000, ReasonClientClose: 4001, ReasonSlowConsumer: CodePolicy, ReasonDrain: CodeGoingAway}
	for round := range 20 {
		c, _ := stuckConn(t, s)
		fillBacklog(t, c)
		before := testutil.ToFloat64(s.metrics.closed.WithLabelValues(ReasonAPIClose.String())) +
			testutil.ToFloat64(s.metrics.closed.WithLabelValues(ReasonClientClose.String())) +
			testutil.ToFloat64(s.metrics.closed.WithLabelValues(ReasonSlowConsumer.String())) +
			testutil.ToFloat64(s.metrics.closed.WithLabelValues(ReasonDrain.String()))
		var wg sync.WaitGroup
		wg.Go(func() { c.Close(4000, "api", ReasonAPIClose) })
		wg.Go(func() { feed(c, clientFrame) })
		wg.Go(func() { c.abort(causeSlowConsumer) })
		wg.Go(func() { c.close(causeDrain) })
		wg.Wait()
		if p := c.phase(); p != closed {
			t.Fatalf("round %d: phase %v after an abort, want closed", round, p)
		}
		ev := rec.waitClose(t)
		if code, ok := want[ev.why]; !ok || ev.code != code || ev.id != c.ID() {
			t.Fatalf("round %d: reported %+v, want one of the racing causes with its own code", round, ev)
		}
		c.Close(4002, "late", ReasonAPIClose)
		c.abort(causePeerGone)
		select {
		case ev := <-rec.closedCh:
			t.Fatalf("round %d: a second Close reported: %+v", round, ev)
		default:
		}
		c.mu.Lock()
		held, buf := c.out.held(), c.out.buf
		c.mu.Unlock()
		if held != 0 || buf != nil || s.Lookup(c.ID()) != nil {
			t.Fatalf("round %d: after the end %d bytes held (buffer %v), in hub %v", round, held, buf != nil, s.Lookup(c.ID()) != nil)
		}
		after := testutil.ToFloat64(s.metrics.closed.WithLabelValues(ReasonAPIClose.String())) +
			testutil.ToFloat64(s.metrics.closed.WithLabelValues(ReasonClientClose.String())) +
			testutil.ToFloat64(s.metrics.closed.WithLabelValues(ReasonSlowConsumer.String())) +
			testutil.ToFloat64(s.metrics.closed.WithLabelValues(ReasonDrain.String()))
		if after-before != 1 {
			t.Fatalf("round %d: counted %v closes, want 1", round, after-before)
		}
	}
}

// A close or an abort during the handshake is held, never acted on by the
// closer: the handshake goroutine owns the connection until the upgrade,
// so the first cause is the one applied, and nothing is torn down twice.
func TestCloseDuringHandshakeIsHeld(t *testing.T) {
	s := newQueueServer(t, Config{PendingQueueBytes: 1024})
	c := &Conn{srv: s, id: "handshakehandsh0"}
	if err := c.Send([]byte("held"), false); err != nil {
		t.Fatal(err)
	}
	c.Close(4000, "api", ReasonAPIClose)
	c.Close(4001, "second", ReasonAPIClose)
	if p := c.phase(); p != closeHeld || c.cause.code != 4000 || c.out.held() != 0 {
		t.Fatalf("phase %v cause %+v held %d, want closeHeld with the first cause and the posts dropped", p, c.cause, c.out.held())
	}
	if err := c.Send([]byte("late"), false); err == nil {
		t.Fatal("a post after the close was accepted")
	}
	if held := c.acceptConnect(); !held || !c.has(flagOwned) {
		t.Fatal("acceptConnect must report the held close")
	}
	held, wasHeld := c.upgrade()
	if !wasHeld || held.code != 4000 || c.phase() != open || !c.Established() {
		t.Fatalf("upgrade: %+v %v phase %v", held, wasHeld, c.phase())
	}
}

// Every idle connection holds one Conn: it stays in the 320-byte size
// class, and the bare socket in the 48-byte one (docs/benchmarks.md).
func TestConnAndSocketStayInTheirSizeClasses(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}); n > 320 {
		t.Fatalf("Conn is %d bytes, want ≤ 320", n)
	}
	if n := unsafe.Sizeof(fdSocket{}); n > 48 {
		t.Fatalf("fdSocket is %d bytes, want ≤ 48", n)
	}
}
