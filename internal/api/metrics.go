package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Operation label values: a fixed set, so the label stays bounded.
const (
	opPost    = "post"
	opGet     = "get"
	opDelete  = "delete"
	opHead    = "head"
	opBatch   = "batch"
	opState   = "state"
	opUnknown = "unknown"
)

var operations = []string{opPost, opGet, opDelete, opHead, opBatch, opState, opUnknown}

type metrics struct {
	requests  *prometheus.CounterVec
	durations *prometheus.HistogramVec
	duration  map[string]prometheus.Observer
}

// addOperations adds the series of an extension's operations (before serving).
func (m *metrics) addOperations(ops []string) {
	for _, op := range ops {
		m.duration[op] = m.durations.WithLabelValues(op)
	}
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchboard_api_requests_total",
		Help: "@connections API requests by operation and HTTP status code.",
	}, []string{"operation", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "switchboard_api_request_duration_seconds",
		Help:    "@connections API request duration, from the first byte read to the response written.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
	}, []string{"operation"})
	for _, c := range []prometheus.Collector{requests, duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("api: register metrics: %w", err)
		}
	}
	m := &metrics{requests: requests, durations: duration, duration: make(map[string]prometheus.Observer, len(operations))}
	for _, op := range operations {
		m.duration[op] = duration.WithLabelValues(op)
	}
	return m, nil
}

func (m *metrics) observe(op string, status int, seconds float64) {
	m.requests.WithLabelValues(op, statusLabel(status)).Inc()
	m.duration[op].Observe(seconds)
}

// statusLabel avoids formatting the common codes on every request.
func statusLabel(status int) string {
	switch status {
	case http.StatusOK:
		return "200"
	case http.StatusNoContent:
		return "204"
	case http.StatusGone:
		return "410"
	case http.StatusForbidden:
		return "403"
	case http.StatusTooManyRequests:
		return "429"
	}
	return strconv.Itoa(status)
}
