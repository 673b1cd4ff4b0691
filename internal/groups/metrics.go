package groups

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Send kinds: the values of the kind label.
const (
	kindGroup     = "group"
	kindUser      = "user"
	kindBroadcast = "broadcast"
)

type metrics struct {
	sends         map[string]prometheus.Counter
	delivered     prometheus.Counter
	failed        prometheus.Counter
	members       prometheus.Gauge
	subscriptions prometheus.Gauge
	storeErrors   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	sends := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchboard_group_sends_total",
		Help: "Messages published to a group, a user or everyone (one per message, counted where the API call was made).",
	}, []string{"kind"})
	m := &metrics{
		sends: map[string]prometheus.Counter{},
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_frames_delivered_total",
			Help: "Frames written or queued to local members by group, user and broadcast fan-out.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_group_deliveries_failed_total",
			Help: "Fan-out frames not delivered to a local member (connection closing, or closed as a slow consumer).",
		}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_group_members",
			Help: "Group memberships of this node's connections.",
		}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_group_subscriptions",
			Help: "NATS subscriptions this node holds for groups and users with local members.",
		}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_group_store_errors_total",
			Help: "Failed writes to the cluster-wide membership store (listings may show stale members).",
		}),
	}
	for _, c := range []prometheus.Collector{sends, m.delivered, m.failed, m.members, m.subscriptions, m.storeErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("groups: register metrics: %w", err)
		}
	}
	for _, k := range []string{kindGroup, kindUser, kindBroadcast} {
		m.sends[k] = sends.WithLabelValues(k)
	}
	return m, nil
}
