package stream

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrmetrics"
	"github.com/sdr-os/sdr-caddy/internal/hub"
)

// streamMetrics are sdr_stream's collectors. They are created once per
// process and registered into the registry of every config load, so that
// counters keep counting across reloads.
type streamMetrics struct {
	clients *prometheus.GaugeVec
	framesIn, framesOut, bytesOut, lagSkips, keyframeWaits,
	keyframeTimeouts, idrRequests, ignored, telemetryDropped, handovers,
	originRejected, clientsRejected *prometheus.CounterVec
	closes   *prometheus.CounterVec
	delivery *prometheus.HistogramVec
	ring     *ringCollector
}

var streamMetricsOnce = func() *streamMetrics {
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts(sdrmetrics.Opts("stream_"+name, help)), []string{"stream"})
	}
	return &streamMetrics{
		clients: prometheus.NewGaugeVec(prometheus.GaugeOpts(sdrmetrics.Opts("stream_clients",
			"WebSocket clients connected to the stream.")), []string{"stream"}),
		framesIn:         counter("frames_in_total", "Frames the stream received from its source."),
		framesOut:        counter("frames_out_total", "Frames written to clients (one per client per frame)."),
		bytesOut:         counter("bytes_out_total", "Bytes written to clients, WebSocket framing included."),
		lagSkips:         counter("lag_skips_total", "Times a client fell behind and skipped to a keyframe."),
		keyframeWaits:    counter("keyframe_waits_total", "Times a client had to wait for a keyframe (joined without a kept GOP, or skipped with none in reach)."),
		keyframeTimeouts: counter("keyframe_timeouts_total", "Clients closed (code 4000) after waiting longer than the IDR timeout for a keyframe."),
		idrRequests:      counter("idr_requests_total", "Keyframe requests sent to the producer, after coalescing."),
		ignored:          counter("client_messages_ignored_total", "Client messages of unknown or unsupported type."),
		telemetryDropped: counter("telemetry_dropped_total", "Telemetry messages and replies dropped for a client whose queue was full."),
		handovers:        counter("handovers_total", "Writes the send round left to a client's own goroutine because the client's socket was full."),
		originRejected:   counter("origin_rejected_total", "Commands (0x04) from connections whose Origin is not trusted, each refused."),
		clientsRejected:  counter("clients_rejected_total", "WebSocket upgrades refused at max_clients."),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts(sdrmetrics.Opts("stream_closes_total",
			"Clients closed for a limit, by reason: fragments (a message in too many frames), frame_rate (frames faster than the limit), ping_timeout (no reply to pings).")),
			[]string{"stream", "reason"}),
		delivery: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "caddy", Subsystem: "sdr", Name: "stream_delivery_seconds",
			Help:    "Time from reading a frame from the source to writing it to a client's socket.",
			Buckets: []float64{0.0005, 0.001, 0.002, 0.005, 0.01, 0.0167, 0.033, 0.1, 0.25, 1},
		}, []string{"stream"}),
		ring: &ringCollector{},
	}
}()

// registerStreamMetrics registers the collectors into reg (new on every
// config load) and returns them; a collector registered already is reused.
func registerStreamMetrics(reg *prometheus.Registry, log *zap.Logger) *streamMetrics {
	m := streamMetricsOnce
	if err := sdrmetrics.Register(reg, m.clients, m.framesIn, m.framesOut, m.bytesOut, m.lagSkips,
		m.keyframeWaits, m.keyframeTimeouts, m.idrRequests, m.ignored, m.telemetryDropped, m.handovers,
		m.originRejected, m.clientsRejected, m.closes, m.delivery, m.ring); err != nil {
		log.Warn("registering sdr_stream metrics", zap.Error(err))
	}
	return m
}

// forStream returns the collectors of one handler's hub. frames_in_total
// is not among them: the stream's group counts each frame of the source
// once, however many handlers serve it (streamGroup).
func (m *streamMetrics) forStream(name string) hub.Metrics {
	cv := func(c *prometheus.CounterVec) prometheus.Counter { return c.WithLabelValues(name) }
	return hub.Metrics{
		Clients:          m.clients.WithLabelValues(name),
		FramesOut:        cv(m.framesOut),
		BytesOut:         cv(m.bytesOut),
		LagSkips:         cv(m.lagSkips),
		KeyframeWaits:    cv(m.keyframeWaits),
		KeyframeTimeouts: cv(m.keyframeTimeouts),
		IDRRequests:      cv(m.idrRequests),
		MessagesIgnored:  cv(m.ignored),
		TelemetryDropped: cv(m.telemetryDropped),
		Handovers:        cv(m.handovers),
		Delivery:         m.delivery.WithLabelValues(name),
		Closes:           m.closes.MustCurryWith(prometheus.Labels{"stream": name}),
	}
}

// ringCollector reports the counters of every shared ring reader, labelled
// with the ring's path.
type ringCollector struct{}

var ringDescs = func() map[string]*prometheus.Desc {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("caddy", "sdr", "stream_ring_"+name), help, []string{"path"}, nil)
	}
	return map[string]*prometheus.Desc{
		"frames":        d("frames_total", "Frames the ring reader delivered."),
		"bytes":         d("bytes_total", "Payload bytes the ring reader delivered."),
		"torn":          d("torn_reads_total", "Copies discarded because the slot changed during the copy: the sequence or write_len changed, or a header size that disagrees with write_len."),
		"crc":           d("crc_failures_total", "Copies discarded for a failed CRC (a torn frame the sequence check missed)."),
		"malformed":     d("malformed_total", "Commits discarded for a write_len out of bounds (read twice) or an empty payload."),
		"gaps":          d("gaps_total", "Frames the reader missed (forward frame_seq gaps)."),
		"restarts":      d("restarts_total", "Writer restarts detected."),
		"remaps":        d("remaps_total", "Mappings after the first (file replaced or resized)."),
		"faults":        d("faults_total", "Memory faults of a truncated mapping, contained."),
		"sizeMismatch":  d("size_mismatch_total", "Mappings of a ring file whose size differs from the configured size."),
		"keyframeWaits": d("keyframe_waits_total", "Frames held back by keyframe gating, or after a writer restart until its keyframe."),
		"oversize":      d("oversize_total", "Frames dropped, before any copy, for a payload over max_frame_size."),
		"polls":         d("polls_total", "Reads of the control region (the cost of waiting)."),
		"attached":      d("attached", "1 while the reader holds a mapping of the ring."),
	}
}()

func (ringCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range ringDescs {
		ch <- d
	}
}

func (ringCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	ringPool.Range(func(_, v any) bool {
		rs, ok := v.(ringShare)
		if !ok {
			return true
		}
		path := rs.Reader().Config().Path
		if seen[path] { // two readers of one path (different settings): report the first
			return true
		}
		seen[path] = true
		st := rs.Reader().Stats()
		c := func(k string, v uint64) {
			ch <- prometheus.MustNewConstMetric(ringDescs[k], prometheus.CounterValue, float64(v), path)
		}
		c("frames", st.Frames)
		c("bytes", st.Bytes)
		c("torn", st.TornReads)
		c("crc", st.CRCFailures)
		c("malformed", st.Malformed)
		c("gaps", st.Gaps)
		c("restarts", st.Restarts)
		c("remaps", st.Remaps)
		c("faults", st.Faults)
		c("sizeMismatch", st.SizeMismatch)
		c("keyframeWaits", st.KeyframeWaits)
		c("oversize", st.Oversize)
		c("polls", st.Polls)
		att := 0.0
		if st.Attached {
			att = 1
		}
		ch <- prometheus.MustNewConstMetric(ringDescs["attached"], prometheus.GaugeValue, att, path)
		return true
	})
}
