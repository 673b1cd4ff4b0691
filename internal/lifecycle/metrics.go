package lifecycle

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/switchboardgw/switchboard/pkg/protocol"
)

// Label values. All bounded: route labels are "$default", "custom", "none",
// or a key of Config.Routes.
const (
	outcomeAllow     = "allow"
	outcomeDeny      = "deny"
	outcomeSkip      = "skip"
	outcomeErrAllow  = "error_allow" // integration failed, optional mode accepted
	outcomeErrDeny   = "error_deny"  // integration failed, required mode rejected
	failTimeout      = "timeout"
	failNoResponders = "no_responders"
	failBadReply     = "bad_reply"
	failUnavailable  = "unavailable"

	dropQueueFull     = "queue_full"      // the message lane's bound (QueueLen, QueueBytes)
	dropConnQueueFull = "conn_queue_full" // the connection's own bound: a flooder's messages shed first
	dropNATSError     = "nats_error"
	dropShutdown      = "shutdown"
	dropInflightFull  = "inflight_full"
	dropInvalidKey    = "invalid_route_key"
	dropFenced        = "fenced" // queued before the node's connections were revoked

	routeRouted     = "routed"      // published one-way or sent as a request
	routeInvalidKey = "invalid_key" // selected key refused (then $default or dropped)
	routeDropped    = "dropped"     // not sent: queue or in-flight bound
	routeReplied    = "replied"     // two-way reply delivered
	routeNoReply    = "no_reply"    // two-way: timeout or no responders
	routeError      = "error"       // two-way: backend answered with an error
	routeNoRoute    = "no_route"    // one-way: nobody subscribes (NATS no-responders); error frame sent
	routeUntracked  = "untracked"   // one-way: published unwatched, MaxNoRoutePending was reached

	backpressureWaited   = "waited"   // a handshake waited for room in the lifecycle lane, then went on
	backpressureRejected = "rejected" // no room within the $connect deadline: 503

	labelCustom = "custom"
	labelNone   = "none"
)

type metrics struct {
	decisions       *prometheus.CounterVec
	connectFailures *prometheus.CounterVec
	connectDuration prometheus.Histogram
	published       *prometheus.CounterVec
	failed          *prometheus.CounterVec
	dropped         *prometheus.CounterVec
	retried         *prometheus.CounterVec
	routeMessages   *prometheus.CounterVec
	replyDuration   prometheus.Histogram
	backpressure    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, queued, lifeQueued, inflight func() float64) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		decisions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_connect_decisions_total",
			Help: "$connect decisions by outcome: allow, deny, skip (mode off), error_allow, error_deny.",
		}, []string{"outcome"}),
		connectFailures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_connect_failures_total",
			Help: "$connect integration failures by reason: timeout, no_responders, bad_reply, unavailable.",
		}, []string{"reason"}),
		connectDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchboard_connect_duration_seconds",
			Help:    "Time to get a $connect decision from the integration.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		published: f.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_events_published_total",
			Help: "Events handed to NATS (core) or acknowledged by JetStream, by type.",
		}, []string{"type"}),
		failed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_events_failed_total",
			Help: "Events NATS refused or JetStream did not acknowledge, by type.",
		}, []string{"type"}),
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_events_dropped_total",
			Help: "Events and route messages not delivered, by reason (conn_queue_full, queue_full, nats_error, shutdown, fenced, inflight_full, invalid_route_key) and type (connect, disconnect, message). CONNECT and DISCONNECT are never dropped for room: only shutdown, nats_error and fenced apply to them.",
		}, []string{"reason", "type"}),
		retried: f.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_events_retried_total",
			Help: "Events republished to JetStream after a missing acknowledgement, by type.",
		}, []string{"type"}),
		routeMessages: f.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_route_messages_total",
			Help: "Client messages by route (allow-listed key, $default, custom or none) and outcome: routed, invalid_key, dropped, replied, no_reply, error (two-way), no_route, untracked (one-way).",
		}, []string{"route", "outcome"}),
		replyDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchboard_route_reply_duration_seconds",
			Help:    "Time from sending a two-way route request to its reply.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		backpressure: f.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_lifecycle_backpressure_total",
			Help: "Handshakes that found the lifecycle event lane full, by outcome: waited (room came within the $connect deadline), rejected (503).",
		}, []string{"outcome"}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchboard_events_queued",
		Help: "Events and route messages waiting to be published (both lanes).",
	}, queued)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchboard_lifecycle_events_queued",
		Help: "CONNECT and DISCONNECT events waiting to be published (the lifecycle lane).",
	}, lifeQueued)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchboard_route_inflight",
		Help: "Two-way route requests awaiting a reply.",
	}, inflight)
	return m
}

// eventLabel maps an event type to its metric label.
func eventLabel(typ string) string {
	switch typ {
	case protocol.EventConnect:
		return "connect"
	case protocol.EventDisconnect:
		return "disconnect"
	case protocol.EventResume:
		return "resume"
	}
	return "message"
}
