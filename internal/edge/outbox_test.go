package edge

import (
	"bytes"
	"testing"
	"unicode/utf8"

	"github.com/switchboardgw/switchboard/internal/rules"
)

// The outbox's accounting on its own: data up to the bound, control frames
// up to the allowance above it, one pong slot replaced in place, and the
// bytes a writer is on counted until written.
func TestOutboxAccounting(t *testing.T) {
	var o outbox
	if o.busy() || o.held() != 0 || o.buf != nil || o.pong != nil {
		t.Fatal("a new outbox must hold nothing")
	}
	const bound = 100
	if !o.fits(dataFrame, bound, bound) || o.fits(dataFrame, bound+1, bound) {
		t.Fatal("data frames must fit up to the bound, not one byte more")
	}
	o.push([]byte("hd"), bytes.Repeat([]byte{'x'}, bound-2))
	if o.held() != bound || o.fits(dataFrame, 1, bound) {
		t.Fatalf("held %d: a full outbox must refuse data", o.held())
	}
	if !o.fits(controlFrame, controlAllowance, bound) || o.fits(controlFrame, controlAllowance+1, bound) {
		t.Fatal("control frames must fit up to the allowance above the bound")
	}
	ping := bytes.Repeat([]byte{'p'}, maxControlFrame)
	if o.setPong(ping[:2], ping[2:]) {
		t.Fatal("the first pong replaced nothing")
	}
	for range 1000 {
		if !o.fits(pongFrame, maxControlFrame, bound) {
			t.Fatal("a pong replacing the pending one must fit")
		}
		if !o.setPong(ping[:2], ping[2:]) {
			t.Fatal("a later pong must replace the pending one")
		}
	}
	if o.held() != bound+maxControlFrame {
		t.Fatalf("held %d after 1001 pongs, want %d: pongs must coalesce", o.held(), bound+maxControlFrame)
	}

	// The writer's turn: what it takes stays counted until written.
	if !o.startWriter() || o.startWriter() {
		t.Fatal("exactly one writer may own the socket")
	}
	if n := o.sealPong(); n != maxControlFrame || o.pong != nil {
		t.Fatalf("sealPong moved %d bytes", n)
	}
	buf, ok := o.take()
	if !ok || len(buf) != bound+maxControlFrame || o.held() != len(buf) {
		t.Fatalf("take: %d bytes, ok %v, held %d", len(buf), ok, o.held())
	}
	o.push([]byte("zz"), nil) // appended while the writer writes
	o.written(len(buf))
	if got := string(o.buf); got != "zz" {
		t.Fatalf("after the write the outbox holds %q, want the frame pushed meanwhile", got)
	}
	o.written(2)
	if _, ok := o.take(); ok || o.busy() || o.buf != nil {
		t.Fatal("a drained outbox must end the writer's turn and hold no buffer")
	}

	// pushRest keeps the order of a partly written frame.
	o.pushRest([]byte("abc"), []byte("def"), 2)
	o.pushRest([]byte("gh"), []byte("ij"), 3)
	if got := string(o.buf); got != "cdefj" {
		t.Fatalf("pushRest left %q, want %q", got, "cdefj")
	}
	o.setPong([]byte("p"), nil)
	if n := o.reset(); n != 6 || o.held() != 0 || o.pong != nil || o.busy() {
		t.Fatalf("reset dropped %d bytes and left %d", n, o.held())
	}
}

// Every cause the edge decides itself carries a reason that fits a close
// frame, and one label with one code: a label's code never depends on the
// call site (io_error is the one label with two: 1006 when the socket
// failed, 1011 when registering the connection did).
func TestCausesAgreeWithTheirLabels(t *testing.T) {
	causes := []closeCause{causePeerGone, causeWriteError, causeWriteTimeout, causeUpgradeFailed,
		causeRegisterFailed, causePingTimeout, causeSlowConsumer, causeControlRate, causeFrameTimeout,
		causeIdleTimeout, causeMaxDuration, causeDrain, causeFrameTooBig, causeMessageTooBig,
		causeInvalidUTF8, causeCloseUTF8, causeBadLength, causeReservedBits, causeUnmasked,
		causeBadControl, causeUnknownOpcode, causeNestedMessage, causeLoneContinue,
		causeBadCloseFrame, causeBadCloseCode, causeUnknownTeardown}
	codes := map[CloseReason]map[int]bool{}
	for _, c := range causes {
		if len(c.reason) > rules.MaxCloseReason || !utf8.ValidString(c.reason) {
			t.Errorf("%v: reason %q does not fit a close frame", c.why, c.reason)
		}
		if c.why.String() == "unknown" {
			t.Errorf("%q: no metric label", c.reason)
		}
		if c.code != CodeAbnormal && !rules.ValidCloseCode(c.code) {
			t.Errorf("%v: code %d cannot be sent", c.why, c.code)
		}
		if codes[c.why] == nil {
			codes[c.why] = map[int]bool{}
		}
		codes[c.why][c.code] = true
	}
	for why, cs := range codes {
		if len(cs) > 1 && why != ReasonIOError {
			t.Errorf("label %v has codes %v", why, cs)
		}
	}
	if got := clientClose(CodeNoStatus, "").wireCode(); got != CodeNormal {
		t.Fatalf("a close without a code is answered with %d, want 1000", got)
	}
}
