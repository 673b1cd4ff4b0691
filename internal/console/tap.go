package console

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/api"
	"github.com/switchboardgw/switchboard/internal/service"
)

// Route traffic for the tail is taken where it is published. A tail that
// wants it announces a tap on P.console.tap (its filter, its rate, an inbox
// of its own) and renews it while open; every edge keeps the taps announced
// to it and publishes a sample of the matching client messages to each
// tap's inbox. The tail never subscribes to a route subject, so it never
// counts as a responder there: a route without a backend keeps its no-route
// reply while tails are open.

// tapRequest is a tail's announcement; TTLMs 0 removes the tap.
type tapRequest struct {
	Inbox      string `json:"inbox"`
	Route      string `json:"route,omitempty"`
	UserID     string `json:"user,omitempty"`
	Connection string `json:"connection,omitempty"`
	Rate       int    `json:"rate"`
	TTLMs      int64  `json:"ttlMs"`
}

// A tap's bounds: taps one edge keeps (tails of the whole cluster; more are
// ignored), how long an announcement lasts and how often a tail renews it,
// the longest inbox subject and announcement accepted (filters are at most
// 256 bytes each, as GET /@events takes them).
const (
	maxTaps         = 256
	tapTTL          = 15 * time.Second
	tapRenew        = 5 * time.Second
	maxInboxLen     = 256
	maxAnnouncement = 2 << 10
)

// tap is one tail's interest on this edge, with its own token bucket: the
// edge never publishes more than the tail's rate to it.
type tap struct {
	route, user, conn string
	rate              float64
	expires           time.Time
	tokens            float64
	last              time.Time
	dropped           uint64 // skipped by the rate since the last message sent
}

// Tap is the edge side of route traffic in the tail: lifecycle.Tap.
type Tap struct {
	nc      *nats.Conn
	subject string
	node    string
	log     *slog.Logger

	active atomic.Int32 // len(taps): Routed costs one load while nobody tails
	mu     sync.Mutex
	taps   map[string]*tap // by inbox

	ready chan struct{} // closed once subscribed
	gate  service.Gate
}

// NewTap builds the tap of node; nothing is subscribed until Run.
func NewTap(nc *nats.Conn, prefix, node string, log *slog.Logger) (*Tap, error) {
	if nc == nil {
		return nil, errors.New("console: tap: NATS connection required")
	}
	if prefix == "" {
		prefix = "switchboard"
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Tap{nc: nc, subject: tapSubject(prefix), node: node, log: log, taps: map[string]*tap{},
		ready: make(chan struct{})}, nil
}

// Ready is closed once Run takes announcements. A tail announced before
// that is heard at its next renewal.
func (t *Tap) Ready() <-chan struct{} { return t.ready }

func tapSubject(prefix string) string { return prefix + ".console.tap" }

// Run takes announcements and expires taps until ctx ends or Shutdown.
func (t *Tap) Run(ctx context.Context) error {
	if err := t.gate.Start("console: tap"); err != nil {
		return err
	}
	defer t.gate.Finish()
	sub, err := t.nc.Subscribe(t.subject, t.announce)
	if err != nil {
		return fmt.Errorf("console: tap: subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := t.nc.Flush(); err == nil {
		close(t.ready)
	}
	tick := time.NewTicker(tapRenew)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.gate.Stopping():
			return nil
		case now := <-tick.C:
			t.sweep(now)
		}
	}
}

// Shutdown stops Run and waits for it (if it was started).
func (t *Tap) Shutdown(ctx context.Context) error { return t.gate.Stop(ctx, "console: tap") }

// announce adds, renews or removes a tap. Announcements come from anyone
// on NATS, like route traffic itself: they are bounded, not trusted. The
// inbox must be one (nats.go's prefix, no wildcard), so an announcement
// cannot make the edge publish on an event, route or command subject.
func (t *Tap) announce(m *nats.Msg) {
	var r tapRequest
	if len(m.Data) > maxAnnouncement || json.Unmarshal(m.Data, &r) != nil || len(r.Inbox) > maxInboxLen ||
		len(r.Inbox) <= len(nats.InboxPrefix) || !strings.HasPrefix(r.Inbox, nats.InboxPrefix) ||
		strings.ContainsAny(r.Inbox, "*> \t\r\n") {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if r.TTLMs <= 0 {
		delete(t.taps, r.Inbox)
		t.active.Store(int32(len(t.taps)))
		return
	}
	now := time.Now()
	ttl := min(time.Duration(r.TTLMs)*time.Millisecond, tapTTL)
	if tp := t.taps[r.Inbox]; tp != nil {
		tp.expires = now.Add(ttl)
		return
	}
	if len(t.taps) >= maxTaps {
		return
	}
	rate := float64(min(max(r.Rate, 1), api.MaxTailRate))
	t.taps[r.Inbox] = &tap{route: r.Route, user: r.UserID, conn: r.Connection, rate: rate,
		expires: now.Add(ttl), tokens: rate, last: now}
	t.active.Store(int32(len(t.taps)))
}

// sweep forgets expired taps and reports to the others what their rate
// skipped since their last message, so that a quiet tail learns of it.
func (t *Tap) sweep(now time.Time) {
	type report struct {
		inbox   string
		dropped uint64
	}
	var out []report
	t.mu.Lock()
	for inbox, tp := range t.taps {
		switch {
		case now.After(tp.expires):
			delete(t.taps, inbox)
		case tp.dropped > 0:
			out = append(out, report{inbox, tp.dropped})
			tp.dropped = 0
		}
	}
	t.active.Store(int32(len(t.taps)))
	t.mu.Unlock()
	for _, r := range out {
		t.send(r.inbox, tapEvent{Event: api.Event{T: now.UnixMilli(), Type: "tick", Node: t.node}, Dropped: r.dropped})
	}
}

// tapEvent is what a tap's inbox receives: a tail entry and what the edge
// skipped before it.
type tapEvent struct {
	api.Event
	Dropped uint64 `json:"dropped,omitempty"`
}

// Routed implements lifecycle.Tap: for each tap whose filter matches and
// whose rate allows, one message to its inbox. Nobody tailing: one atomic
// load.
func (t *Tap) Routed(route, connID, userID string, payload []byte, binary bool) {
	if t.active.Load() == 0 {
		return
	}
	type hit struct {
		inbox   string
		dropped uint64
	}
	var hits [4]hit
	out := hits[:0]
	now := time.Now()
	t.mu.Lock()
	for inbox, tp := range t.taps {
		if tp.route != "" && tp.route != route || tp.user != "" && tp.user != userID || tp.conn != "" && tp.conn != connID ||
			now.After(tp.expires) {
			continue
		}
		tp.tokens = min(tp.tokens+now.Sub(tp.last).Seconds()*tp.rate, tp.rate)
		tp.last = now
		if tp.tokens < 1 {
			tp.dropped++
			continue
		}
		tp.tokens--
		out = append(out, hit{inbox, tp.dropped})
		tp.dropped = 0
	}
	t.mu.Unlock()
	if len(out) == 0 {
		return
	}
	ev := api.Event{T: now.UnixMilli(), Type: "message", Route: route, ConnectionID: connID, UserID: userID, Node: t.node,
		Bytes: len(payload), Preview: preview(payload, binary)}
	for _, h := range out {
		t.send(h.inbox, tapEvent{Event: ev, Dropped: h.dropped})
	}
}

func (t *Tap) send(inbox string, ev tapEvent) {
	b, err := json.Marshal(ev)
	if err == nil {
		err = t.nc.Publish(inbox, b)
	}
	if err != nil {
		t.log.Debug("console: tap: publish failed", "err", err)
	}
}

// preview is the start of a message as the tail shows it: text as is,
// binary in base64, as the MESSAGE event's body has it.
func preview(payload []byte, binary bool) string {
	if binary {
		n := min(len(payload), previewMax/4*3)
		s := base64.StdEncoding.EncodeToString(payload[:n])
		if n < len(payload) {
			s += "…"
		}
		return s
	}
	return truncate(string(payload[:min(len(payload), previewMax+4)]), previewMax)
}
