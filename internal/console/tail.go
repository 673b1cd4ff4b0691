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
// subjects (and the route subjects with f.Routes), sampled to f.Rate a
// second, into a buffer of tailBuffer; what does not fit is counted as
// dropped, never queued.
func (s *Service) Tail(ctx context.Context, f api.TailFilter, emit func(api.Event, uint64) error) error {
	select {
	case s.tails <- struct{}{}:
	default:
		return api.ErrTooManyViewers
	}
	defer func() { <-s.tails }()

	ch := make(chan *nats.Msg, tailBuffer)
	var subs []*nats.Subscription
	defer func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}()
	subjects := []string{s.deps.Prefix + ".event.connect", s.deps.Prefix + ".event.disconnect"}
	if f.Routes {
		// A plain subscriber to a route counts as a responder: while this
		// tail is open, a route without a backend is not reported to its
		// clients as such (docs/api.md says so).
		subjects = append(subjects, s.deps.Prefix+".route.>")
	}
	for _, subj := range subjects {
		sub, err := s.deps.NC.ChanSubscribe(subj, ch)
		if err != nil {
			return err
		}
		// Slow-consumer limits of NATS bound what piles up before ch.
		_ = sub.SetPendingLimits(tailBuffer, 1<<20)
		subs = append(subs, sub)
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
	if rate <= 0 {
		rate = 20
	}
	// A token bucket of one second's worth.
	tokens, last := float64(rate), time.Now()
	var dropped uint64
	unfiltered := f.UserID == "" && f.ConnectionID == "" && f.Route == ""
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stop:
			return nil
		case <-tick.C:
			for _, sub := range subs {
				if n, _ := sub.Dropped(); n > 0 {
					dropped += uint64(n)
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
			if tokens < 1 && unfiltered {
				dropped++ // skipped without decoding: a busy cluster costs the tail little
				continue
			}
			ev, ok := s.decode(m, f)
			if !ok {
				continue
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

// eventBody is the part of an event a tail shows and filters on.
type eventBody struct {
	RequestContext struct {
		RouteKey     string `json:"routeKey"`
		EventType    string `json:"eventType"`
		ConnectionID string `json:"connectionId"`
		Switchboard  struct {
			NodeID string `json:"nodeId"`
			UserID string `json:"userId"`
		} `json:"switchboard"`
	} `json:"requestContext"`
	Body string `json:"body"`
}

// decode turns a NATS event into a tail entry and applies the filter.
func (s *Service) decode(m *nats.Msg, f api.TailFilter) (api.Event, bool) {
	ev := api.Event{T: time.Now().UnixMilli(), Bytes: len(m.Data), ConnectionID: m.Header.Get("Switchboard-Connection-Id")}
	switch {
	case strings.HasSuffix(m.Subject, ".event.connect"):
		ev.Type = "connect"
	case strings.HasSuffix(m.Subject, ".event.disconnect"):
		ev.Type = "disconnect"
	default:
		ev.Type = "message"
		ev.Route = strings.TrimPrefix(m.Subject, s.deps.Prefix+".route.")
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
			if ev.Type == "message" && rc.RouteKey != "" {
				ev.Route = rc.RouteKey
			}
			ev.Preview = truncate(b.Body, previewMax)
		}
	}
	if f.ConnectionID != "" && ev.ConnectionID != f.ConnectionID {
		return ev, false
	}
	if f.UserID != "" && ev.UserID != f.UserID {
		return ev, false
	}
	if f.Route != "" && (ev.Type != "message" || ev.Route != f.Route) {
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
