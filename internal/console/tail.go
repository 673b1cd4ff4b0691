package console

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/internal/api"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// A tail's bounds: events waiting for a slow viewer, the preview of a body,
// and how often an idle stream says it is alive.
const (
	tailBuffer  = 64
	previewMax  = 200
	tickEvery   = 15 * time.Second
	maxBodyScan = 64 << 10 // events larger than this are shown without decoding
)

// Tail implements api.ClusterInfo: its own NATS subscriptions to the event
// subjects (and, with f.Routes, a tap on every edge: tap.go), sampled to
// f.Rate a second, into a buffer of tailBuffer; what does not fit is
// counted as dropped, never queued.
func (s *Service) Tail(ctx context.Context, f api.TailFilter, emit func(api.Event, uint64) error) error {
	select {
	case s.tails <- struct{}{}:
	default:
		return api.ErrTooManyViewers
	}
	defer func() { <-s.tails }()
	if f.Rate <= 0 {
		f.Rate = 20
	}

	ch := make(chan *nats.Msg, tailBuffer)
	var subs []*nats.Subscription
	defer func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}()
	subj := protocol.NewSubjects(s.deps.Prefix)
	subjects := []string{subj.EventConnect, subj.EventDisconnect, subj.EventResume}
	var inbox string
	if f.Routes {
		// Route traffic comes from the edges' taps to an inbox of this
		// tail, never from a route subject: a subscriber there would count
		// as a backend and hide a route's missing one.
		inbox = s.deps.NC.NewInbox()
		subjects = append(subjects, inbox)
	}
	for _, subj := range subjects {
		sub, err := s.deps.NC.ChanSubscribe(subj, ch)
		if err != nil {
			return err
		}
		// ch bounds what piles up: nats.go drops (and counts) what does
		// not fit.
		subs = append(subs, sub)
	}
	var renew <-chan time.Time
	if f.Routes {
		if err := s.announceTap(inbox, f, tapTTL); err != nil {
			return err
		}
		defer func() { _ = s.announceTap(inbox, f, 0) }() // expiry covers a lost one
		t := time.NewTicker(tapRenew)
		defer t.Stop()
		renew = t.C
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second) // nats.go wants a deadline
	err := s.deps.NC.FlushWithContext(fctx)
	cancel()
	if err != nil {
		return fmt.Errorf("console: tail: %w", err)
	}
	if err := emit(api.Event{T: time.Now().UnixMilli(), Type: "open"}, 0); err != nil {
		return nil
	}
	rate := f.Rate
	// A token bucket of one second's worth.
	tokens, last := float64(rate), time.Now()
	var dropped uint64
	unfiltered := f.UserID == "" && f.ConnectionID == "" && f.Route == ""
	lost := make([]int, len(subs)) // what nats.go dropped, as last seen
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.gate.Stopping():
			return nil
		case <-renew:
			_ = s.announceTap(inbox, f, tapTTL) // a lost renewal: the next one
		case <-tick.C:
			for i, sub := range subs { // Dropped is a running total
				if n, err := sub.Dropped(); err == nil && n > lost[i] {
					dropped += uint64(n - lost[i])
					lost[i] = n
				}
			}
			if err := emit(api.Event{T: time.Now().UnixMilli(), Type: "tick"}, dropped); err != nil {
				return nil
			}
			dropped = 0
		case m := <-ch:
			now := time.Now()
			tokens += now.Sub(last).Seconds() * float64(rate)
			last = now
			if tokens > float64(rate) {
				tokens = float64(rate)
			}
			var ev api.Event
			if m.Subject == inbox {
				var te tapEvent
				if json.Unmarshal(m.Data, &te) != nil {
					continue
				}
				dropped += te.Dropped // skipped by the edge's share of the rate
				if te.Type != "message" {
					continue
				}
				ev = te.Event
			} else {
				if tokens < 1 && unfiltered {
					dropped++ // skipped without decoding: a busy cluster costs the tail little
					continue
				}
				var ok bool
				if ev, ok = s.decode(m, f); !ok {
					continue
				}
			}
			if tokens < 1 {
				dropped++
				continue
			}
			tokens--
			if err := emit(ev, dropped); err != nil {
				return nil
			}
			dropped = 0
		}
	}
}

// eventBody is the part of a lifecycle event a tail shows and filters on.
type eventBody struct {
	RequestContext struct {
		ConnectionID string `json:"connectionId"`
		Switchboard  struct {
			NodeID     string `json:"nodeId"`
			UserID     string `json:"userId"`
			DetachedMs int64  `json:"detachedMs"`
		} `json:"switchboard"`
	} `json:"requestContext"`
}

// decode turns a CONNECT, DISCONNECT or RESUME event into a tail entry and applies
// the filter (route traffic comes filtered from the taps).
func (s *Service) decode(m *nats.Msg, f api.TailFilter) (api.Event, bool) {
	if f.Route != "" {
		return api.Event{}, false // only messages of that route
	}
	ev := api.Event{T: time.Now().UnixMilli(), Bytes: len(m.Data), ConnectionID: m.Header.Get(protocol.HeaderConnID)}
	switch {
	case strings.HasSuffix(m.Subject, "."+protocol.SuffixEventDisconnect):
		ev.Type = "disconnect"
	case strings.HasSuffix(m.Subject, "."+protocol.SuffixEventResume):
		ev.Type = "resume"
	default:
		ev.Type = "connect"
	}
	if f.ConnectionID != "" && ev.ConnectionID != "" && ev.ConnectionID != f.ConnectionID {
		return ev, false
	}
	if len(m.Data) <= maxBodyScan {
		var b eventBody
		if json.Unmarshal(m.Data, &b) == nil {
			rc := b.RequestContext
			if ev.ConnectionID == "" {
				ev.ConnectionID = rc.ConnectionID
			}
			ev.UserID, ev.Node = rc.Switchboard.UserID, rc.Switchboard.NodeID
			if ev.Type == "resume" {
				ev.DetachedMs = max(rc.Switchboard.DetachedMs, 0)
			}
		}
	}
	if f.ConnectionID != "" && ev.ConnectionID != f.ConnectionID {
		return ev, false
	}
	if f.UserID != "" && ev.UserID != f.UserID {
		return ev, false
	}
	return ev, true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// announceTap asks every edge for the route traffic of this tail (ttl 0:
// no longer).
func (s *Service) announceTap(inbox string, f api.TailFilter, ttl time.Duration) error {
	b, err := json.Marshal(tapRequest{Inbox: inbox, Route: f.Route, UserID: f.UserID, Connection: f.ConnectionID,
		Rate: f.Rate, TTLMs: ttl.Milliseconds()})
	if err == nil {
		err = s.deps.NC.Publish(tapSubject(s.deps.Prefix), b)
	}
	if err != nil {
		return fmt.Errorf("console: tail: announce tap: %w", err)
	}
	return nil
}
