package relay

import (
	"bytes"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/sockpair"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

const testKeepalive = 50 * time.Millisecond

// pipePair is two pipes joined to each other, on two NATS connections as
// two nodes would be; outer are the sockets the pipes carry (what the
// edge's client socket and the owner's connection would hold).
type pipePair struct {
	a, b           *pipe
	outerA, outerB net.Conn
	wg             sync.WaitGroup
}

func newPipePair(t *testing.T) *pipePair {
	t.Helper()
	ns := testenv.StartNATS(t)
	log := slog.New(slog.DiscardHandler)
	a, err := openPipe(ns.Connect(t), "t", "nodeA", testKeepalive, log)
	if err != nil {
		t.Fatal(err)
	}
	b, err := openPipe(ns.Connect(t), "t", "nodeB", testKeepalive, log)
	if err != nil {
		t.Fatal(err)
	}
	a.setPeer(b.own)
	b.setPeer(a.own)
	// Each side's subscription is at the server before the other sends (in
	// the Service, the command and its reply that follow each subscription
	// on the same connection see to that).
	for _, p := range []*pipe{a, b} {
		if err := p.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	pp := &pipePair{a: a, b: b}
	var innerA, innerB net.Conn
	if pp.outerA, innerA, err = sockpair.New(); err != nil {
		t.Fatal(err)
	}
	if pp.outerB, innerB, err = sockpair.New(); err != nil {
		t.Fatal(err)
	}
	a.start(innerA, []byte("early:"), &pp.wg)
	b.start(innerB, nil, &pp.wg)
	t.Cleanup(func() {
		a.end("test over")
		b.end("test over")
		pp.wg.Wait()
		pp.outerA.Close()
		pp.outerB.Close()
	})
	return pp
}

// ended waits for p to end.
func ended(t *testing.T, p *pipe, within time.Duration) {
	t.Helper()
	select {
	case <-p.ended:
	case <-time.After(within):
		t.Fatalf("pipe %s still open after %s", p.own, within)
	}
}

func TestPipeCarriesBothWaysInOrderThenEndsBothSides(t *testing.T) {
	pp := newPipePair(t)
	up := make([]byte, 1<<20) // many chunks: the busy buffer's size, and more than the socketpair holds
	down := make([]byte, 1<<20)
	rand.Read(up)
	rand.Read(down)
	var got [2][]byte
	var readers sync.WaitGroup
	for i, c := range []net.Conn{pp.outerB, pp.outerA} {
		want := len(up) + len("early:")
		if i == 1 {
			want = len(down)
		}
		readers.Go(func() {
			buf := make([]byte, want)
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, _ := io.ReadFull(c, buf)
			got[i] = buf[:n]
		})
	}
	if _, err := pp.outerA.Write(up); err != nil {
		t.Fatal(err)
	}
	if _, err := pp.outerB.Write(down); err != nil {
		t.Fatal(err)
	}
	readers.Wait()
	if !bytes.Equal(got[0], append([]byte("early:"), up...)) {
		t.Fatalf("A → B: %d bytes, not what was written (%d, leftover first)", len(got[0]), len(up)+6)
	}
	if !bytes.Equal(got[1], down) {
		t.Fatalf("B → A: %d bytes, not what was written (%d)", len(got[1]), len(down))
	}

	// One side's socket ends: the other side's socket is closed too.
	pp.outerA.Close()
	ended(t, pp.a, 5*time.Second)
	ended(t, pp.b, 5*time.Second)
	_ = pp.outerB.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := pp.outerB.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("B's socket after A's ended: read %d, %v; want EOF", n, err)
	}
}

func TestPipeEndsOnALostChunk(t *testing.T) {
	pp := newPipePair(t)
	// A chunk out of turn on B's subject, as if NATS had dropped the ones
	// before it: B cannot know what the socket missed, so it ends.
	if err := pp.a.nc.PublishMsg(&nats.Msg{Subject: pp.b.own, Data: []byte("x"), Header: nats.Header{hdrSeq: {"99"}}}); err != nil {
		t.Fatal(err)
	}
	ended(t, pp.b, 5*time.Second)
	ended(t, pp.a, 5*time.Second) // told by B's end
}

func TestPipeEndsWhenThePeerFallsSilent(t *testing.T) {
	ns := testenv.StartNATS(t)
	p, err := openPipe(ns.Connect(t), "t", "nodeA", testKeepalive, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	p.setPeer("t.relay.nodeB.gone") // a node that died: nobody sends, nobody listens
	outer, inner, err := sockpair.New()
	if err != nil {
		t.Fatal(err)
	}
	defer outer.Close()
	var wg sync.WaitGroup
	start := time.Now()
	p.start(inner, nil, &wg)
	ended(t, p, 5*time.Second)
	wg.Wait()
	if el := time.Since(start); el < 3*testKeepalive {
		t.Fatalf("ended after %s, before three keepalives of silence", el)
	}
}

func TestIdlePipeStaysOpenOnKeepalives(t *testing.T) {
	pp := newPipePair(t)
	buf := make([]byte, len("early:"))
	if _, err := io.ReadFull(pp.outerB, buf); err != nil {
		t.Fatal(err)
	}
	// Idle for ten keepalives: three of silence would end it.
	select {
	case <-pp.a.ended:
		t.Fatal("A ended while idle")
	case <-pp.b.ended:
		t.Fatal("B ended while idle")
	case <-time.After(10 * testKeepalive):
	}
	if _, err := pp.outerB.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("still here"))
	_ = pp.outerA.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(pp.outerA, got); err != nil || string(got) != "still here" {
		t.Fatalf("after idling: %q, %v", got, err)
	}
}

// pipeSockets is a socketpair: outer for the test, inner for a pipe.
func pipeSockets(t *testing.T) (outer, inner net.Conn) {
	t.Helper()
	o, i, err := sockpair.New()
	if err != nil {
		t.Fatal(err)
	}
	return o, i
}
