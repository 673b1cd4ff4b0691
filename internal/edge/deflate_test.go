package edge

import (
	"bytes"
	"compress/flate"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// The permessage-deflate tests use gobwas/ws's wsflate as an independent
// client implementation of RFC 7692.

// deflateDialer offers permessage-deflate, with the given parameters.
func deflateDialer(p wsflate.Parameters) ws.Dialer {
	return ws.Dialer{Extensions: []httphead.Option{p.Option()}}
}

// offer is what browsers send: the extension with client_max_window_bits
// and no context-takeover parameters.
var browserOffer = ws.Dialer{Extensions: []httphead.Option{
	httphead.NewOption("permessage-deflate", map[string]string{"client_max_window_bits": ""}),
}}

// negotiated returns the permessage-deflate parameters the server answered,
// and whether it answered with the extension at all.
func negotiated(t *testing.T, hs ws.Handshake) (wsflate.Parameters, bool) {
	t.Helper()
	for _, opt := range hs.Extensions {
		if string(opt.Name) == wsflate.ExtensionName {
			var p wsflate.Parameters
			if err := p.Parse(opt); err != nil {
				t.Fatalf("server's permessage-deflate answer %q: %v", opt.String(), err)
			}
			return p, true
		}
	}
	return wsflate.Parameters{}, false
}

// jsonMessage is a JSON document of about n bytes, as chat and feed
// messages are: repetitive, so it compresses well.
func jsonMessage(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"items":[`)
	for i := 0; b.Len() < n-40; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"id":`)
		b.WriteString(strings.Repeat("7", 1+i%5))
		b.WriteString(`,"user":"alice","text":"hello, world","seen":true}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// readMessage reads one data frame and returns its payload inflated, and
// whether it came compressed.
func (c *client) readMessage(t *testing.T) (payload []byte, compressed bool, op ws.OpCode) {
	t.Helper()
	f := c.readFrame(t)
	if !f.Header.Fin {
		t.Fatalf("server frame not final: %+v", f.Header)
	}
	compressed, err := wsflate.IsCompressed(f.Header)
	if err != nil {
		t.Fatalf("frame header: %v", err)
	}
	if compressed {
		if f, err = wsflate.DecompressFrame(f); err != nil {
			t.Fatalf("inflate the server's frame: %v", err)
		}
	}
	return f.Payload, compressed, f.Header.OpCode
}

// sendCompressed sends payload as one compressed message.
func (c *client) sendCompressed(t *testing.T, op ws.OpCode, payload []byte) {
	t.Helper()
	f, err := wsflate.CompressFrame(ws.NewFrame(op, true, payload))
	if err != nil {
		t.Fatal(err)
	}
	c.send(t, f)
}

func deflateConfig() Config {
	return Config{Compression: true, CompressionMinBytes: 256}
}

func TestCompressionIsNegotiatedWithNoContextTakeoverEitherWay(t *testing.T) {
	e := startEdge(t, deflateConfig(), newRecorder())
	for name, d := range map[string]ws.Dialer{
		"an offer with both no-context-takeover parameters": deflateDialer(wsflate.DefaultParameters),
		"a browser's offer, without them":                   browserOffer,
	} {
		c := dial(t, e.url, d)
		p, ok := negotiated(t, c.hs)
		if !ok {
			t.Fatalf("%s: no permessage-deflate in the 101 (extensions %v)", name, c.hs.Extensions)
		}
		if !p.ServerNoContextTakeover || !p.ClientNoContextTakeover {
			t.Errorf("%s: answered %+v, want server_ and client_no_context_takeover", name, p)
		}
	}
	// Counted once the 101 is written: the client may read it first.
	eventually(t, "negotiated counter 2", func() bool { return metric(t, e.metrics.deflateNegotiated) == 2 })

	plain := dial(t, e.url, ws.Dialer{})
	if _, ok := negotiated(t, plain.hs); ok {
		t.Error("a client that offered nothing got permessage-deflate")
	}
	// An offer the edge cannot honour (a smaller server window than
	// compress/flate's 32 KiB) is declined, not refused.
	small := dial(t, e.url, deflateDialer(wsflate.Parameters{ServerMaxWindowBits: 10}))
	if _, ok := negotiated(t, small.hs); ok {
		t.Error("server_max_window_bits=10 was accepted; compress/flate always uses a 15-bit window")
	}
}

func TestCompressionOffIgnoresTheOffer(t *testing.T) {
	e := startEdge(t, Config{}, newRecorder())
	c := dial(t, e.url, deflateDialer(wsflate.DefaultParameters))
	if _, ok := negotiated(t, c.hs); ok {
		t.Fatal("-compression is off, yet the edge negotiated permessage-deflate")
	}
	// Without the extension, RSV1 is a reserved bit like any other.
	c.sendCompressed(t, ws.OpText, jsonMessage(1024))
	if code, _ := c.expectClose(t); code != ws.StatusProtocolError {
		t.Fatalf("RSV1 without the extension: close %d, want 1002", code)
	}
}

func TestCompressedMessagesRoundTripBothWays(t *testing.T) {
	rec := newRecorder()
	e := startEdge(t, deflateConfig(), rec)
	c := dial(t, e.url, browserOffer)

	big := jsonMessage(4 << 10)
	c.sendCompressed(t, ws.OpText, big)
	got, compressed, op := c.readMessage(t)
	if !bytes.Equal(got, big) || op != ws.OpText {
		t.Fatalf("echo of a compressed text message: %d bytes op %v, want the %d sent", len(got), op, len(big))
	}
	if !compressed {
		t.Error("a 4 KiB reply to a client that negotiated compression went uncompressed")
	}
	rec.mu.Lock()
	handed := rec.messages[len(rec.messages)-1]
	rec.mu.Unlock()
	if handed != string(big) {
		t.Fatalf("the Handler got %d bytes, want the %d inflated ones", len(handed), len(big))
	}

	bin := bytes.Repeat([]byte{0, 1, 2, 3, 4, 5, 6, 7}, 512)
	c.sendCompressed(t, ws.OpBinary, bin)
	if got, compressed, op := c.readMessage(t); !bytes.Equal(got, bin) || op != ws.OpBinary || !compressed {
		t.Fatalf("binary echo: %d bytes op %v compressed %v", len(got), op, compressed)
	}

	// Under the threshold: sent plain, whichever way the client sent it.
	small := []byte(`{"action":"ping"}`)
	c.sendCompressed(t, ws.OpText, small)
	if got, compressed, _ := c.readMessage(t); string(got) != string(small) || compressed {
		t.Fatalf("small echo: %q compressed %v, want %q plain", got, compressed, small)
	}
	// A client may send uncompressed messages on a compressed connection.
	c.send(t, ws.NewTextFrame(big))
	if got, compressed, _ := c.readMessage(t); !bytes.Equal(got, big) || !compressed {
		t.Fatalf("echo of a plain message: %d bytes compressed %v", len(got), compressed)
	}

	out := metric(t, e.metrics.deflatePlain.WithLabelValues(dirOut))
	outZ := metric(t, e.metrics.deflateCompressed.WithLabelValues(dirOut))
	if out != float64(2*len(big)+len(bin)) || outZ <= 0 || outZ >= out/3 {
		t.Errorf("bytes compressed out %v → %v: want %d → well under a third", out, outZ, 2*len(big)+len(bin))
	}
	if in := metric(t, e.metrics.deflatePlain.WithLabelValues(dirIn)); in != float64(len(big)+len(bin)+len(small)) {
		t.Errorf("bytes inflated in %v, want %d", in, len(big)+len(bin)+len(small))
	}
	if s := metric(t, e.metrics.deflateSeconds.WithLabelValues(dirOut)); s <= 0 {
		t.Errorf("compression time %v, want > 0", s)
	}
}

func TestFragmentedCompressedMessageIsReassembledThenInflated(t *testing.T) {
	rec := newRecorder()
	e := startEdge(t, deflateConfig(), rec)
	c := dial(t, e.url, deflateDialer(wsflate.DefaultParameters))

	msg := jsonMessage(20 << 10)
	z, err := wsflate.DefaultHelper.Compress(msg) // the message's deflate stream, tail stripped
	if err != nil {
		t.Fatal(err)
	}
	third := len(z) / 3
	first := ws.NewFrame(ws.OpText, false, z[:third])
	first.Header.Rsv = ws.Rsv(true, false, false) // RSV1 on the first frame only (RFC 7692 §6.1)
	c.send(t, first)
	c.send(t, ws.NewPingFrame([]byte("between")))
	c.send(t, ws.NewFrame(ws.OpContinuation, false, z[third:2*third]))
	c.send(t, ws.NewFrame(ws.OpContinuation, true, z[2*third:]))

	if f := c.readFrame(t); f.Header.OpCode != ws.OpPong {
		t.Fatalf("first frame back %v, want the pong", f.Header.OpCode)
	}
	got, compressed, _ := c.readMessage(t)
	if !bytes.Equal(got, msg) || !compressed {
		t.Fatalf("echo of a fragmented compressed message: %d bytes (compressed %v), want %d", len(got), compressed, len(msg))
	}

	// RSV1 on a continuation frame is a protocol error (RFC 7692 §6.1).
	bad := ws.NewFrame(ws.OpText, false, z[:third])
	bad.Header.Rsv = ws.Rsv(true, false, false)
	c.send(t, bad)
	cont := ws.NewFrame(ws.OpContinuation, true, z[third:])
	cont.Header.Rsv = ws.Rsv(true, false, false)
	c.send(t, cont)
	if code, reason := c.expectClose(t); code != ws.StatusProtocolError {
		t.Fatalf("RSV1 on a continuation: close %d %q, want 1002", code, reason)
	}
}

func TestDecompressionBombClosesWith1009AtTheLimit(t *testing.T) {
	cfg := deflateConfig()
	cfg.MaxMessageBytes = 64 << 10
	rec := newRecorder()
	e := startEdge(t, cfg, rec)
	neighbour := dial(t, e.url, browserOffer)
	bomber := dial(t, e.url, browserOffer)

	// 32 MiB of zeros deflate to about 32 KiB, sent in two frames to stay
	// under the frame limit: the message limit applies to the inflated size.
	bomb, err := wsflate.DefaultHelper.Compress(make([]byte, 32<<20))
	if err != nil {
		t.Fatal(err)
	}
	half := len(bomb) / 2
	first := ws.NewFrame(ws.OpText, false, bomb[:half])
	first.Header.Rsv = ws.Rsv(true, false, false)
	bomber.send(t, first)
	bomber.send(t, ws.NewFrame(ws.OpContinuation, true, bomb[half:]))
	if code, reason := bomber.expectClose(t); code != ws.StatusMessageTooBig {
		t.Fatalf("bomb of %d compressed bytes: close %d %q, want 1009", len(bomb), code, reason)
	}
	if ev := rec.waitClose(t); ev.why != ReasonTooBig || ev.code != CodeTooBig {
		t.Fatalf("bomber's Close: %+v, want too_big 1009", ev)
	}
	// Inflating stopped one byte past the limit: the bomb cost what a
	// message at the limit costs.
	if in := metric(t, e.metrics.deflatePlain.WithLabelValues(dirIn)); in > float64(cfg.MaxMessageBytes+1) {
		t.Fatalf("inflated %v bytes of the bomb, want at most the limit %d + 1", in, cfg.MaxMessageBytes)
	}

	// The neighbour is unharmed, and a message at the limit still passes.
	atLimit := bytes.Repeat([]byte("x"), cfg.MaxMessageBytes)
	neighbour.sendCompressed(t, ws.OpText, atLimit)
	if got, _, _ := neighbour.readMessage(t); !bytes.Equal(got, atLimit) {
		t.Fatalf("neighbour's echo: %d bytes, want %d", len(got), len(atLimit))
	}
}

func TestCorruptCompressedDataClosesWith1002(t *testing.T) {
	e := startEdge(t, deflateConfig(), newRecorder())
	c := dial(t, e.url, browserOffer)
	f := ws.NewTextFrame([]byte{0xff, 0xff, 0xff, 0xff, 0x00, 0x13})
	f.Header.Rsv = ws.Rsv(true, false, false)
	c.send(t, f)
	if code, reason := c.expectClose(t); code != ws.StatusProtocolError || reason != causeBadCompression.reason {
		t.Fatalf("corrupt deflate data: close %d %q, want 1002 %q", code, reason, causeBadCompression.reason)
	}
}

func TestFrameIsCompressedOnceForEveryMemberThatNegotiated(t *testing.T) {
	e := startEdge(t, deflateConfig(), newRecorder())
	zipped := []*client{dial(t, e.url, browserOffer), dial(t, e.url, deflateDialer(wsflate.DefaultParameters))}
	plain := dial(t, e.url, ws.Dialer{})
	eventually(t, "three connections", func() bool { return e.Count() == 3 })

	big, small := jsonMessage(1024), []byte(`{"n":1}`)
	var f Frame
	f.Append(false, big)
	f.Append(true, small)
	for _, c := range e.hub.snapshot() {
		if err := c.SendFrame(&f); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range append(zipped, plain) {
		got, compressed, op := c.readMessage(t)
		if !bytes.Equal(got, big) || op != ws.OpText || compressed != (i < len(zipped)) {
			t.Fatalf("member %d, first message: %d bytes op %v compressed %v", i, len(got), op, compressed)
		}
		got, compressed, op = c.readMessage(t)
		if !bytes.Equal(got, small) || op != ws.OpBinary || compressed {
			t.Fatalf("member %d, small message: %q op %v compressed %v (want plain: under the threshold)", i, got, op, compressed)
		}
	}
	// Compressed once for both members that negotiated.
	if n := metric(t, e.metrics.deflatePlain.WithLabelValues(dirOut)); n != float64(len(big)) {
		t.Fatalf("compressed %v plain bytes for two members, want %d (once)", n, len(big))
	}
}

func TestInflateNeverHoldsMoreThanTheLimit(t *testing.T) {
	d := newDeflater(&Config{CompressionLevel: 1, CompressionMinBytes: 1}, newMetrics(nil))
	z, _ := d.appendDeflated(nil, make([]byte, 1<<20), true)
	const limit = 100 << 10
	out, err := readBounded(flateReaderFor(z), nil, limit, len(z))
	if err != errInflateTooBig {
		t.Fatalf("1 MiB of zeros with a %d limit: %v, want errInflateTooBig", limit, err)
	}
	if cap(out) > limit+1 {
		t.Fatalf("output buffer grew to %d bytes, want at most %d", cap(out), limit+1)
	}
	// A pooled buffer larger than the limit is not filled past it either.
	big := make([]byte, 0, 4*limit)
	if out, err := readBounded(flateReaderFor(z), big, limit, len(z)); err != errInflateTooBig || len(out) != limit+1 {
		t.Fatalf("into a %d-byte buffer: %d bytes, %v; want %d and errInflateTooBig", cap(big), len(out), err, limit+1)
	}
	buf, err := d.inflate(z, 1<<20)
	if err != nil || len(*buf) != 1<<20 {
		t.Fatalf("1 MiB at a 1 MiB limit: %v", err)
	}
}

func flateReaderFor(z []byte) io.Reader { return flate.NewReader(&tailReader{p: z}) }

// Compressors are large (about 1.2 MiB each): at most compressorSlots
// exist at once. A post that finds them all busy goes plain; fan-out waits.
func TestCompressorsAreBoundedAndABusySendGoesPlain(t *testing.T) {
	m := newMetrics(nil)
	d := newDeflater(&Config{CompressionLevel: 1, CompressionMinBytes: 1}, m)
	msg := jsonMessage(2048)
	for range cap(d.slots) {
		d.slots <- struct{}{}
	}
	if _, ok := d.appendDeflated(nil, msg, false); ok {
		t.Fatal("compressed with every slot taken")
	}
	if n := metric(t, m.deflateBusy); n != 1 {
		t.Fatalf("busy counter %v, want 1", n)
	}
	done := make(chan []byte)
	go func() { done <- d.appendCompressedFrame(nil, opText, msg) }()
	select {
	case <-done:
		t.Fatal("fan-out compressed without a slot")
	case <-time.After(50 * time.Millisecond):
	}
	<-d.slots // one frees up
	frame := <-done
	if frame[0]&rsv1 == 0 || len(frame) >= len(msg) {
		t.Fatalf("fan-out frame: RSV1 %v, %d bytes for %d", frame[0]&rsv1 != 0, len(frame), len(msg))
	}
}
