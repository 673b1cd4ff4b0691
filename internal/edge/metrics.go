package edge

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	open           prometheus.Gauge
	accepted       prometheus.Counter
	rejected       *prometheus.CounterVec
	closed         *prometheus.CounterVec
	framesIn       prometheus.Counter
	framesOut      prometheus.Counter
	bytesIn        prometheus.Counter
	bytesOut       prometheus.Counter
	messagesIn     prometheus.Counter
	pendingDropped prometheus.Counter
	appPings       prometheus.Counter
	trims          prometheus.Counter
	pongsCoalesced prometheus.Counter
	handshake      prometheus.Histogram

	deflateNegotiated prometheus.Counter
	deflatePlain      *prometheus.CounterVec
	deflateCompressed *prometheus.CounterVec
	deflateSeconds    *prometheus.CounterVec
	deflateBusy       prometheus.Counter
}

// Directions of compression work: out is compressing for clients, in is
// inflating what they sent.
const (
	dirOut = "out"
	dirIn  = "in"
)

// Rejection reasons counted at accept, before anything is read.
const (
	rejectOverload     = "overload"      // MaxHandshakes in progress
	rejectIPHandshakes = "ip_handshakes" // the source has MaxHandshakesPerIP in progress
)

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		open: f.NewGauge(prometheus.GaugeOpts{Name: "switchboard_connections",
			Help: "WebSocket connections open on this node."}),
		accepted: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_connections_accepted_total",
			Help: "Upgrades completed (101 sent)."}),
		rejected: f.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_connections_rejected_total",
			Help: "Upgrade requests refused, by reason."}, []string{"reason"}),
		closed: f.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_connections_closed_total",
			Help: "Connections ended, by reason."}, []string{"reason"}),
		framesIn: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_frames_received_total",
			Help: "WebSocket frames received from clients, control frames included."}),
		framesOut: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_frames_sent_total",
			Help: "WebSocket frames sent or queued to clients."}),
		bytesIn: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_received_bytes_total",
			Help: "Bytes read from client sockets after the handshake."}),
		bytesOut: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_sent_bytes_total",
			Help: "Bytes written or queued to client sockets after the handshake."}),
		messagesIn: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_messages_received_total",
			Help: "Complete client messages (after reassembly) handed to the node."}),
		pendingDropped: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_pending_posts_dropped_total",
			Help: "Messages posted during $connect that were dropped (queue full or connection denied)."}),
		appPings: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_app_pings_total",
			Help: "Application-level pings answered by the edge without a backend."}),
		trims: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_memory_trims_total",
			Help: "Times the edge gave a connect burst's leftover memory back to the OS once the burst was over (one forced GC each)."}),
		pongsCoalesced: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_pongs_coalesced_total",
			Help: "Pongs never sent because a later ping of the same client replaced them while its queue had a backlog (RFC 6455 §5.5.3)."}),
		handshake: f.NewHistogram(prometheus.HistogramOpts{Name: "switchboard_handshake_duration_seconds",
			Help:    "Time from accept to the 101 response, $connect included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		deflateNegotiated: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_compression_negotiated_total",
			Help: "Upgrades that negotiated permessage-deflate (-compression)."}),
		deflatePlain: f.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_compression_plain_bytes_total",
			Help: "Message bytes before compression (out: compressed for clients, once per fan-out message and node) or after inflating (in: from clients)."}, []string{"direction"}),
		deflateCompressed: f.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_compression_compressed_bytes_total",
			Help: "The same messages' bytes after compression (out; a message that did not shrink counts its plain size, as it is sent) or as received compressed (in)."}, []string{"direction"}),
		deflateSeconds: f.NewCounterVec(prometheus.CounterOpts{Name: "switchboard_compression_seconds_total",
			Help: "Time spent compressing (out) and inflating (in) messages: CPU-bound work on the calling goroutine."}, []string{"direction"}),
		deflateBusy: f.NewCounter(prometheus.CounterOpts{Name: "switchboard_compression_busy_total",
			Help: "Messages for one connection (posts, two-way replies) sent uncompressed because every compressor was in use (their number is bounded by the cores)."}),
	}
	for _, d := range []string{dirOut, dirIn} {
		m.deflatePlain.WithLabelValues(d)
		m.deflateCompressed.WithLabelValues(d)
		m.deflateSeconds.WithLabelValues(d)
	}
	for _, r := range []string{"bad_request", "timeout", "too_large", "origin", "path", "denied", rejectOverload, rejectIPHandshakes, "draining", "error"} {
		m.rejected.WithLabelValues(r)
	}
	for r := CloseReason(0); r < reasonCount; r++ {
		m.closed.WithLabelValues(r.String())
	}
	return m
}

// registerHandshakeGauges exports the handshake slots in use, overall and
// by source, read when scraped.
func registerHandshakeGauges(reg prometheus.Registerer, s *Server) {
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchboard_handshakes_in_progress",
		Help: "Handshakes in progress (accepted, not yet upgraded or refused); at most -max-handshakes."},
		func() float64 { return float64(len(s.hsSem)) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchboard_handshake_sources",
		Help: "Sources (IPv4 addresses, IPv6 /64s) with a handshake in progress counted against -max-handshakes-per-ip."},
		func() float64 {
			if s.perSource == nil {
				return 0
			}
			return float64(s.perSource.sources())
		})
}
