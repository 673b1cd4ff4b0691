package edge

import (
	"context"
	"hash/maphash"
	"sync"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/rules"
)

const hubShards = 64

// hub indexes the node's connections by ID, split in shards so lookups from
// many API calls and fan-outs do not contend on one lock.
type hub struct {
	seed   maphash.Seed
	shards [hubShards]hubShard
}

type hubShard struct {
	mu    sync.RWMutex
	conns map[string]*Conn
}

func newHub() *hub {
	h := &hub{seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].conns = make(map[string]*Conn)
	}
	return h
}

func (h *hub) shard(id string) *hubShard {
	return &h.shards[maphash.String(h.seed, id)%hubShards]
}

func (h *hub) add(c *Conn) {
	s := h.shard(c.id)
	s.mu.Lock()
	s.conns[c.id] = c
	s.mu.Unlock()
}

func (h *hub) remove(c *Conn) {
	s := h.shard(c.id)
	s.mu.Lock()
	if s.conns[c.id] == c {
		delete(s.conns, c.id)
	}
	s.mu.Unlock()
}

func (h *hub) get(id string) *Conn {
	s := h.shard(id)
	s.mu.RLock()
	c := s.conns[id]
	s.mu.RUnlock()
	return c
}

// each calls fn for every connection; fn must not block.
func (h *hub) each(fn func(*Conn)) {
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for _, c := range s.conns {
			fn(c)
		}
		s.mu.RUnlock()
	}
}

// snapshot returns the connections at one moment.
func (h *hub) snapshot() []*Conn {
	var out []*Conn
	h.each(func(c *Conn) { out = append(out, c) })
	return out
}

func (h *hub) count() int {
	n := 0
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		n += len(s.conns)
		s.mu.RUnlock()
	}
	return n
}

// The Server is the conn.Controller for its own connections.
var _ conn.Controller = (*Server)(nil)

// Lookup returns a local connection by ID, or nil.
func (s *Server) Lookup(id string) *Conn { return s.hub.get(id) }

// Owns reports whether id is a live connection of this node.
func (s *Server) Owns(id string) bool { return s.hub.get(id) != nil }

// Count is the number of connections on this node, handshakes included.
func (s *Server) Count() int { return s.hub.count() }

// Each calls fn for every connection of this node; fn must not block.
func (s *Server) Each(fn func(*Conn)) { s.hub.each(fn) }

// Post sends a message to a local connection.
func (s *Server) Post(_ context.Context, id string, data []byte, binary bool) error {
	c := s.hub.get(id)
	if c == nil {
		return conn.ErrGone
	}
	return c.Send(data, binary)
}

// Info reports a local connection.
func (s *Server) Info(_ context.Context, id string) (conn.Info, error) {
	c := s.hub.get(id)
	if c == nil || c.phase() == closed {
		return conn.Info{}, conn.ErrGone
	}
	return c.Info(), nil
}

// Close closes a local connection with code and reason.
func (s *Server) Close(_ context.Context, id string, code int, reason string) error {
	if err := rules.CheckClose(code, reason); err != nil {
		return err
	}
	c := s.hub.get(id)
	if c == nil {
		return conn.ErrGone
	}
	c.Close(code, reason, ReasonAPIClose)
	return nil
}
