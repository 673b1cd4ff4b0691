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
}

// target is a subject with local members: a group, a user, or broadcast.
type target struct {
	members map[string]*member // by connection ID
	sub     *nats.Subscription // nil for broadcast (subscribed for the node's life)
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
	onMembers   func(delta int) // group memberships gauge
	onSubs      func(delta int) // subscriptions gauge
	broadcast   string
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
		t = &target{members: map[string]*member{}}
		if subject != x.broadcast {
			sub, err := x.subscribe(subject)
			if err != nil {
				return err
			}
			t.sub = sub
			x.onSubs(1)
		}
		x.targets[subject] = t
	}
	t.members[m.c.ID()] = m
	return nil
}

// leave removes m from subject's members, unsubscribing after the last.
// Called with mu held.
func (x *index) leave(m *member, subject string) {
	t := x.targets[subject]
	if t == nil {
		return
	}
	delete(t.members, m.c.ID())
	if len(t.members) == 0 {
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
	for id, m := range t.members {
		if len(excluded) > 0 && id == string(excluded) {
			continue
		}
		dst = append(dst, m.c)
	}
	return dst
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
		return len(t.members)
	}
	return 0
}
