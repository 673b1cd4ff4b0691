package groups

import (
	"context"
	"slices"
	"strconv"
	"testing"

	"github.com/switchboardgw/switchboard/internal/edge"
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
