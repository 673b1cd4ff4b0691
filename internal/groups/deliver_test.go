package groups

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// A group big enough to be split among the fan-out writers still gets every
// message, in the order sent, on every member; also while members leave
// and the rest move between writers' shares.
func TestParallelFanoutKeepsEachMembersOrder(t *testing.T) {
	cl := startCluster(t, 1, Config{FanoutWriters: 4, FanoutMinShare: 2})
	svc := cl.nodes[0].svc
	var clients []*client
	for i := range 24 {
		clients = append(clients, cl.dial(t, "c"+strconv.Itoa(i), 0, "groups=room"))
	}
	eventually(t, "every client to join", func() bool { return svc.idx.members(svc.subj.groupSubject("room")) == 24 })
	const messages = 300
	var want []string
	for i := range messages {
		msg := strconv.Itoa(i)
		want = append(want, msg)
		if err := svc.SendGroup(context.Background(), "room", []byte(msg), false, ""); err != nil {
			t.Fatal(err)
		}
		if i == messages/2 {
			for _, c := range clients[:6] {
				c.nc.Close()
			}
		}
	}
	for _, c := range clients[6:] {
		eventually(t, c.name+" to receive every message", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return len(c.msgs) >= messages
		})
		c.mu.Lock()
		got := slices.Clone(c.msgs)
		c.mu.Unlock()
		if !slices.Equal(got, want) {
			t.Fatalf("%s received %d messages out of order or changed: first %v", c.name, len(got), got[:min(len(got), 20)])
		}
	}
}

// fakeConn is a stand-in Conn for index tests.
type fakeConn string

func (c fakeConn) ID() string                          { return string(c) }
func (c fakeConn) SendFrame(*edge.Frame) error         { return nil }
func (c fakeConn) Close(int, string, edge.CloseReason) {}

// The index keeps a target's members dense: leaving moves the last member
// into the hole, excluding one takes it out of the copy, and nobody is
// listed twice; for a group and for broadcast (whose places live in the
// members).
func TestTargetMembersStayDense(t *testing.T) {
	for _, subject := range []string{"g", "bc"} {
		t.Run(subject, func(t *testing.T) {
			x := newIndex("bc")
			ms := map[string]*member{}
			for _, id := range []string{"a", "b", "c", "d", "e"} {
				ms[id] = &member{c: fakeConn(id)}
				x.conns[id] = ms[id]
				if err := x.join(ms[id], subject); err != nil {
					t.Fatal(err)
				}
			}
			_ = x.join(ms["c"], subject) // again: no duplicate
			ids := func(excluded string) []string {
				var out []string
				for _, c := range x.snapshot(subject, []byte(excluded), nil) {
					out = append(out, c.ID())
				}
				return out
			}
			if got := ids(""); !slices.Equal(got, []string{"a", "b", "c", "d", "e"}) {
				t.Fatalf("members %v", got)
			}
			delete(x.conns, "b") // as Untrack does, before leaving
			x.leave(ms["b"], subject)
			if got := ids(""); !slices.Equal(got, []string{"a", "e", "c", "d"}) {
				t.Fatalf("after b left: %v, want e moved into b's place", got)
			}
			if got := ids("c"); !slices.Equal(got, []string{"a", "e", "d"}) {
				t.Fatalf("excluding c: %v", got)
			}
			if got := ids("e"); !slices.Equal(got, []string{"a", "c", "d"}) {
				t.Fatalf("excluding e, which moved: %v", got)
			}
			if got := ids("zz"); len(got) != 4 {
				t.Fatalf("excluding a non-member: %v", got)
			}
			for _, id := range []string{"a", "c", "d", "e", "e"} {
				x.leave(ms[id], subject)
			}
			if x.members(subject) != 0 || x.targets[subject] != nil {
				t.Fatalf("the last member left, target still there: %d members", x.members(subject))
			}
		})
	}
}

// recordingConn keeps every write it is given, decoded into messages, and
// runs onWrite (if set) after the first.
type recordingConn struct {
	id      string
	mu      sync.Mutex
	writes  [][]string // each write's messages
	onWrite func()
}

func (c *recordingConn) ID() string                          { return c.id }
func (c *recordingConn) Close(int, string, edge.CloseReason) {}
func (c *recordingConn) SendFrame(f *edge.Frame) error {
	var msgs []string
	for b := f.Bytes(); len(b) >= 2; {
		n, h := int(b[1]), 2 // server frames: unmasked; the tests' messages are under 64 KiB
		if n == 126 {
			n, h = int(b[2])<<8|int(b[3]), 4
		}
		msgs, b = append(msgs, string(b[h:h+n])), b[h+n:]
	}
	c.mu.Lock()
	c.writes = append(c.writes, msgs)
	first := len(c.writes) == 1
	c.mu.Unlock()
	if first && c.onWrite != nil {
		c.onWrite()
	}
	return nil
}

func (c *recordingConn) received() (msgs []string, writes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.writes {
		msgs = append(msgs, w...)
	}
	return msgs, len(c.writes)
}

// startRecordingGroup tracks n recordingConns in group g of a running
// service with that many fan-out writers.
func startRecordingGroup(t *testing.T, writers, n int) (*Service, *prometheus.Registry, []*recordingConn) {
	t.Helper()
	reg := prometheus.NewRegistry()
	svc, err := New(Config{NodeID: "rec", FanoutWriters: writers, FanoutMinShare: 32}, Deps{NC: testenv.StartNATS(t).Connect(t),
		Store: NewMemoryStore(), Registerer: reg, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = svc.Run(context.Background()) }()
	t.Cleanup(func() { _ = svc.Shutdown(context.Background()) })
	<-svc.started
	var conns []*recordingConn
	for i := range n {
		c := &recordingConn{id: fmt.Sprintf("conn%04d", i)}
		if err := svc.Track(c, "", []string{"g"}); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	return svc, reg, conns
}

// A burst whose messages arrive while the first is being written joins
// it: every member gets every message in order, the members not yet
// written get the late ones in the same write as the first, and only those
// written before they arrived need a second write. With one writer (the
// delivery worker) those are the members before its first look at the
// inbox; with two, the other writer's share is also written from the
// current frame, and whichever members it wrote first get a catch-up.
func TestBurstArrivingMidFanoutCostsAboutOneWritePerMember(t *testing.T) {
	for _, writers := range []int{1, 2} {
		t.Run(strconv.Itoa(writers)+" writers", func(t *testing.T) {
			const members, burst = 1024, 20
			svc, reg, conns := startRecordingGroup(t, writers, members)
			subject := svc.subj.groupSubject("g")
			in := make(chan *nats.Msg, burst)
			d := svc.newDeliverer()
			d.in = in
			// The first member written (the worker's own share begins
			// the list) sees the rest of the burst arrive.
			conns[0].onWrite = func() {
				for i := 1; i < burst; i++ {
					in <- &nats.Msg{Subject: subject, Data: encodeSend([]byte("m"+strconv.Itoa(i)), false, "")}
				}
			}
			d.deliver([]*nats.Msg{{Subject: subject, Data: encodeSend([]byte("m0"), false, "")}})

			var want []string
			for i := range burst {
				want = append(want, "m"+strconv.Itoa(i))
			}
			twice := 0
			for _, c := range conns {
				got, n := c.received()
				if !slices.Equal(got, want) {
					t.Fatalf("%s received %v, want %v", c.id, got, want)
				}
				if n > 2 {
					t.Fatalf("%s was written %d times", c.id, n)
				}
				if n == 2 {
					twice++
				}
			}
			if writers == 1 && twice != pollEvery-1 {
				t.Fatalf("%d members needed a second write, want the %d before the first look at the inbox", twice, pollEvery-1)
			}
			if twice < pollEvery-1 || twice > pollEvery-1+members/writers {
				t.Fatalf("%d of %d members needed a second write", twice, members)
			}
			if got := counterValue(t, reg, "switchboard_frames_delivered_total", "", ""); got != members*burst {
				t.Fatalf("delivered counter %v, want %d", got, members*burst)
			}
			if len(in) != 0 || d.held != nil {
				t.Fatalf("left in the inbox %d, held %v", len(in), d.held)
			}
		})
	}
}

// What arrives mid-fan-out and cannot join the run (another subject here)
// ends its growing and is held, with everything after it, for the next
// batch: the order of the inbox is kept.
func TestFanoutHoldsWhatCannotJoinTheRun(t *testing.T) {
	svc, _, conns := startRecordingGroup(t, 2, 256)
	subject := svc.subj.groupSubject("g")
	in := make(chan *nats.Msg, 4)
	d := svc.newDeliverer()
	d.in = in
	other := &nats.Msg{Subject: svc.subj.groupSubject("h"), Data: encodeSend([]byte("h0"), false, "")}
	last := &nats.Msg{Subject: subject, Data: encodeSend([]byte("m2"), false, "")}
	conns[0].onWrite = func() {
		in <- &nats.Msg{Subject: subject, Data: encodeSend([]byte("m1"), false, "")}
		in <- other
		in <- last
	}
	d.deliver([]*nats.Msg{{Subject: subject, Data: encodeSend([]byte("m0"), false, "")}})
	for _, c := range conns {
		if got, _ := c.received(); !slices.Equal(got, []string{"m0", "m1"}) {
			t.Fatalf("%s received %v, want m0 m1", c.id, got)
		}
	}
	if d.held != other || len(in) != 1 || <-in != last {
		t.Fatalf("held %v, inbox %d: want the other subject's message held and the next one still queued", d.held, len(in))
	}
}

// A grown run of big messages leaves no big frame behind in the
// deliverer: it keeps a few small spares for the next burst, not the
// burst's memory.
func TestGrownRunsKeepOnlySmallSpareFrames(t *testing.T) {
	svc, _, conns := startRecordingGroup(t, 1, 256)
	subject := svc.subj.groupSubject("g")
	d := svc.newDeliverer()
	in := make(chan *nats.Msg, 64)
	d.in = in
	big := strings.Repeat("x", 20<<10)
	burst := func(payload string, n int) {
		for _, c := range conns {
			c.mu.Lock()
			c.writes = nil
			c.mu.Unlock()
		}
		// Each look at the inbox finds one more message: a growth each.
		i := 1
		for k := pollEvery - 1; k < len(conns) && i < n; k += pollEvery {
			conns[k-1].onWrite = func() {
				in <- &nats.Msg{Subject: subject, Data: encodeSend([]byte(payload), false, "")}
			}
			i++
		}
		d.deliver([]*nats.Msg{{Subject: subject, Data: encodeSend([]byte(payload), false, "")}})
		for _, c := range conns {
			c.onWrite = nil
		}
		if got, _ := conns[len(conns)-1].received(); len(got) != n {
			t.Fatalf("the last member got %d messages, want %d (%d grown, %d bytes)", len(got), n, d.grown, d.grownBytes)
		}
	}
	burst("small", 8)
	if len(d.spare) == 0 {
		t.Fatal("no spare frame kept after a burst of small messages")
	}
	burst(big, 3) // 60 KiB: within a run's bound
	if len(d.spare) > maxSpares {
		t.Fatalf("%d spare frames, want at most %d", len(d.spare), maxSpares)
	}
	for _, f := range d.spare {
		if f.Cap() > maxSpareBytes {
			t.Fatalf("a spare frame holds %d bytes, want at most %d", f.Cap(), maxSpareBytes)
		}
	}
}
