package groups

import (
	"slices"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/edge"
)

// Conn is what a node's index needs of a connection; *edge.Conn is one.
type Conn interface {
	ID() string
	// SendFrame writes messages encoded once (compressed once too, for
	// members that negotiated permessage-deflate) without blocking.
	SendFrame(f *edge.Frame) error
	Close(code int, reason string, why edge.CloseReason)
}

var _ Conn = (*edge.Conn)(nil)

// member is one tracked local connection.
type member struct {
	c        Conn
	user     string   // "" if none
	groups   []string // names, in the order joined
	untraced bool     // Untrack ran: no more joins
	stored   bool     // a user or a group was written to the Store for it: Untrack must remove it
	bpos     int32    // 1 + its place in the broadcast target's conns; 0 if not there
}

// target is a subject with local members: a group, a user, or broadcast.
// The members are kept dense, in the order they joined but for the holes
// leavers leave (the last one moves in): a fan-out copies them with one
// memmove instead of walking a map, and splits them in shares that stay put
// from one message to the next, so a member is written by the same writer
// each time.
//
// Every tracked connection is in the broadcast target, whose places are
// kept in the members (bpos) rather than in a map of its own: one map entry
// less per connection.
type target struct {
	pos   map[string]int32   // a member's place in conns, by connection ID; nil for broadcast
	conns []Conn             // the members
	sub   *nats.Subscription // nil for broadcast (subscribed for the node's life)
}

// index is a node's local membership: which of its connections are in which
// group and belong to which user, keyed by the NATS subject they receive on.
// Interest follows membership: the first local member of a subject
// subscribes to it, the last one leaving unsubscribes.
type index struct {
	mu      sync.RWMutex
	conns   map[string]*member
	targets map[string]*target

	subscribe   func(subject string) (*nats.Subscription, error)
	unsubscribe func(*nats.Subscription)
	// subscribed counts the subscriptions join made; a caller holding mu
	// for all its joins reads how many were its own (see Service.confirm).
	subscribed int
	onMembers  func(delta int) // group memberships gauge
	onSubs     func(delta int) // subscriptions gauge
	broadcast  string
}

func newIndex(broadcast string) *index {
	return &index{conns: map[string]*member{}, targets: map[string]*target{}, broadcast: broadcast,
		subscribe:   func(string) (*nats.Subscription, error) { return nil, nil },
		unsubscribe: func(*nats.Subscription) {}, onMembers: func(int) {}, onSubs: func(int) {}}
}

// join adds m to subject's members, subscribing if it is the first. Called
// with mu held.
func (x *index) join(m *member, subject string) error {
	t := x.targets[subject]
	if t == nil {
		t = &target{}
		if subject != x.broadcast {
			t.pos = map[string]int32{}
			sub, err := x.subscribe(subject)
			if err != nil {
				return err
			}
			t.sub = sub
			x.subscribed++
			x.onSubs(1)
		}
		x.targets[subject] = t
	}
	id := m.c.ID()
	if _, ok := x.place(t, id); ok {
		return nil
	}
	if t.pos == nil {
		m.bpos = int32(len(t.conns)) + 1
	} else {
		t.pos[id] = int32(len(t.conns))
	}
	t.conns = append(t.conns, m.c)
	return nil
}

// place finds a member's place in t. Called with mu held; for broadcast the
// member must be tracked (in conns).
func (x *index) place(t *target, id string) (int32, bool) {
	if t.pos != nil {
		i, ok := t.pos[id]
		return i, ok
	}
	if m := x.conns[id]; m != nil && m.bpos > 0 {
		return m.bpos - 1, true
	}
	return 0, false
}

// leave removes m from subject's members, unsubscribing after the last.
// Called with mu held.
func (x *index) leave(m *member, subject string) {
	t := x.targets[subject]
	if t == nil {
		return
	}
	// m itself, not its ID: Untrack has taken it out of conns already.
	var i int32
	if t.pos == nil {
		if m.bpos == 0 {
			return
		}
		i, m.bpos = m.bpos-1, 0
	} else {
		var ok bool
		if i, ok = t.pos[m.c.ID()]; !ok {
			return
		}
		delete(t.pos, m.c.ID())
	}
	last := len(t.conns) - 1
	if int(i) != last {
		moved := t.conns[last]
		t.conns[i] = moved
		if t.pos != nil {
			t.pos[moved.ID()] = i
		} else if mm := x.conns[moved.ID()]; mm != nil {
			mm.bpos = i + 1
		}
	}
	t.conns[last] = nil
	t.conns = t.conns[:last]
	if cap(t.conns) > 64 && len(t.conns) < cap(t.conns)/4 {
		t.conns = slices.Clip(slices.Clone(t.conns)) // a group that shrank gives its memory back
	}
	if len(t.conns) == 0 {
		delete(x.targets, subject)
		if t.sub != nil {
			x.unsubscribe(t.sub)
			x.onSubs(-1)
		}
	}
}

// snapshot appends subject's local members to dst, minus excluded. Fan-out
// writes outside the lock: a write can close a slow consumer, whose Untrack
// needs the lock.
func (x *index) snapshot(subject string, excluded []byte, dst []Conn) []Conn {
	x.mu.RLock()
	defer x.mu.RUnlock()
	t := x.targets[subject]
	if t == nil {
		return dst
	}
	if i, ok := x.place(t, string(excluded)); ok && len(excluded) > 0 {
		return append(append(dst, t.conns[:i]...), t.conns[i+1:]...)
	}
	return append(dst, t.conns...)
}

// has reports whether id is a tracked connection.
func (x *index) has(id string) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.conns[id] != nil
}

// count returns the tracked connections and the targets with members.
func (x *index) count() (conns, targets int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.conns), len(x.targets)
}

// localGroups lists the groups of a tracked connection (nil if untracked).
func (x *index) localGroups(id string) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if m := x.conns[id]; m != nil {
		return slices.Clone(m.groups)
	}
	return nil
}

// members reports how many local connections are in subject.
func (x *index) members(subject string) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if t := x.targets[subject]; t != nil {
		return len(t.conns)
	}
	return 0
}
