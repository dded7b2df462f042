package limit

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrmetrics"
)

// connCollector exposes the process's connection counts.
type connCollector struct{ open, max, silent, refused, evicted *prometheus.Desc }

var connMetrics = sync.OnceValue(func() *connCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("caddy", "sdr", name), help, nil, nil)
	}
	return &connCollector{
		open:    desc("conns_open", "Connections open through the sdr_limit listener wrapper."),
		max:     desc("conns_max", "The cap on open connections (0: none)."),
		silent:  desc("conns_silent", "Open connections that have not sent a byte yet: the first closed at the cap."),
		refused: desc("conns_refused_total", "Connections closed at once at the cap, every open one having spoken."),
		evicted: desc("conns_evicted_total", "Connections that had not sent a byte, closed to make room for a new one at the cap."),
	}
})

func (m *connCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.open
	ch <- m.max
	ch <- m.silent
	ch <- m.refused
	ch <- m.evicted
}

func (m *connCollector) Collect(ch chan<- prometheus.Metric) {
	st := processConns.Stats()
	ch <- prometheus.MustNewConstMetric(m.open, prometheus.GaugeValue, float64(st.Open))
	ch <- prometheus.MustNewConstMetric(m.max, prometheus.GaugeValue, float64(processConns.Max()))
	ch <- prometheus.MustNewConstMetric(m.silent, prometheus.GaugeValue, float64(st.Silent))
	ch <- prometheus.MustNewConstMetric(m.refused, prometheus.CounterValue, float64(st.Refused))
	ch <- prometheus.MustNewConstMetric(m.evicted, prometheus.CounterValue, float64(st.Evicted))
}

func registerConnMetrics(reg *prometheus.Registry, log *zap.Logger) {
	if err := sdrmetrics.Register(reg, connMetrics()); err != nil {
		log.Warn("registering sdr_limit metrics", zap.Error(err))
	}
}
