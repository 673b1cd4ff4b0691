package cluster

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

type dtoHistogram struct{ count uint64 }

func (h *dtoHistogram) read(t *testing.T, o prometheus.Histogram) {
	t.Helper()
	var m dto.Metric
	if err := o.Write(&m); err != nil {
		t.Fatal(err)
	}
	h.count = m.GetHistogram().GetSampleCount()
}

func TestMetricsPassLintAndRegisterOnce(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	// Touch every vector so that it has a child to lint.
	m.registryDuration.WithLabelValues("lookup").Observe(0.001)
	m.registryErrors.WithLabelValues("lookup").Inc()
	m.routeSeconds.WithLabelValues("post", "remote").Observe(0.001)
	m.routed.WithLabelValues("post", "ok").Inc()
	m.served.WithLabelValues("post", "ok").Inc()
	m.renewals.WithLabelValues("held").Inc()
	for _, c := range m.collectors() {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("metric %s: %s", p.Metric, p.Text)
		}
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n < len(m.collectors()) {
		t.Fatalf("gathered %d series, %v; want at least one per metric", n, err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("registering the metrics twice on one registerer succeeded")
	}
}
