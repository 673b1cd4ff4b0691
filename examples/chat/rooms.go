package main

import (
	"context"
	"sort"
	"sync"
)

// rooms is the backend's view of who is in which room, for presence notices
// and the room list. A connection is in at most one room. The delivery
// itself goes through gateway groups (one POST /@groups/{room} per message,
// memberships kept by the gateway and dropped when a connection closes);
// memRooms keeps this view in the process's memory.
type rooms interface {
	// Join moves connection id into room and reports the room it left ("" if none).
	Join(ctx context.Context, room, id string) (left string, err error)
	// Leave takes connection id out of its room and reports that room ("" if none).
	Leave(ctx context.Context, id string) (left string, err error)
	// RoomOf reports the room connection id is in ("" if none).
	RoomOf(ctx context.Context, id string) (string, error)
	// Members lists the connections in room.
	Members(ctx context.Context, room string) ([]string, error)
	// List reports every room that has members, sorted by name.
	List(ctx context.Context) ([]roomInfo, error)
}

// roomInfo is one entry of the room list sent to clients.
type roomInfo struct {
	Name    string `json:"name"`
	Members int    `json:"members"`
}

// memRooms is rooms in memory. One backend process only: replicas would each
// see a part of the membership.
type memRooms struct {
	mu      sync.Mutex
	members map[string]map[string]struct{} // room → connection IDs
	roomOf  map[string]string              // connection ID → room
}

var _ rooms = (*memRooms)(nil)

func newMemRooms() *memRooms {
	return &memRooms{members: map[string]map[string]struct{}{}, roomOf: map[string]string{}}
}

func (r *memRooms) Join(_ context.Context, room, id string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	left := r.removeLocked(id)
	m := r.members[room]
	if m == nil {
		m = map[string]struct{}{}
		r.members[room] = m
	}
	m[id] = struct{}{}
	r.roomOf[id] = room
	if left == room {
		left = "" // joining the room it is in is not a move
	}
	return left, nil
}

func (r *memRooms) Leave(_ context.Context, id string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removeLocked(id), nil
}

func (r *memRooms) removeLocked(id string) string {
	room, ok := r.roomOf[id]
	if !ok {
		return ""
	}
	delete(r.roomOf, id)
	delete(r.members[room], id)
	if len(r.members[room]) == 0 {
		delete(r.members, room) // empty rooms disappear from the list
	}
	return room
}

func (r *memRooms) RoomOf(_ context.Context, id string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.roomOf[id], nil
}

func (r *memRooms) Members(_ context.Context, room string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.members[room]))
	for id := range r.members[room] {
		ids = append(ids, id)
	}
	return ids, nil
}

func (r *memRooms) List(_ context.Context) ([]roomInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]roomInfo, 0, len(r.members))
	for name, m := range r.members {
		out = append(out, roomInfo{Name: name, Members: len(m)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
