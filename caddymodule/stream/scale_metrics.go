package stream

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrmetrics"
)

// scaleCollector reports the counters of the process's NATS video sources
// (edges) and publishers (origins), label subject. They live in pools that
// outlive a config, so they are read at scrape time like the ring readers.
type scaleCollector struct{}

var scaleDescs = func() map[string]*prometheus.Desc {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("caddy", "sdr", name), help, append([]string{"subject"}, labels...), nil)
	}
	return map[string]*prometheus.Desc{
		"pubFrames":   d("stream_publish_frames_total", "Frames an origin published on NATS."),
		"pubBytes":    d("stream_publish_bytes_total", "Payload bytes an origin published on NATS."),
		"pubSplit":    d("stream_publish_split_frames_total", "Frames larger than the server's max_payload, published in parts."),
		"pubDropped":  d("stream_publish_dropped_total", "Frames not published: reason queue (the sender fell behind), disconnected (NATS down), error (refused by the client library).", "reason"),
		"pubIDRIn":    d("stream_publish_idr_received_total", "Keyframe requests received from edges."),
		"pubHeld":     d("stream_publish_held_total", "Checks (every 100 ms) that found the origin's source reading frames without handing them on (keyframe gating); each asks the producer for a keyframe."),
		"pubIDROut":   d("stream_publish_idr_forwarded_total", "Keyframe requests passed to the producer, after coalescing."),
		"natsFrames":  d("stream_nats_frames_total", "Frames an edge received from NATS."),
		"natsBytes":   d("stream_nats_bytes_total", "Payload bytes an edge received from NATS."),
		"natsGaps":    d("stream_nats_gaps_total", "Frames an edge missed (forward frame_seq gaps)."),
		"natsRestart": d("stream_nats_restarts_total", "Times frame_seq went backwards (the origin's writer restarted)."),
		"natsWaits":   d("stream_nats_keyframe_waits_total", "Frames held back after a gap until a keyframe."),
		"natsBad":     d("stream_nats_discarded_total", "Messages or frames discarded: reason malformed, crc, part.", "reason"),
		"natsUp":      d("stream_nats_origin_discontinuities_total", "Gaps and restarts the origin announced (its own reader's), passed on ungated."),
		"natsIDR":     d("stream_nats_idr_requests_total", "Keyframe requests an edge sent to the origin, after coalescing."),
		"natsAge":     d("stream_nats_last_frame_age_seconds", "Seconds since the edge last received a frame; -1 before the first."),
	}
}()

var scaleCollectorOnce = &scaleCollector{}

func registerScaleMetrics(reg *prometheus.Registry, log *zap.Logger) {
	if err := sdrmetrics.Register(reg, scaleCollectorOnce); err != nil {
		log.Warn("registering sdr_stream scale-out metrics", zap.Error(err))
	}
}

func (*scaleCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range scaleDescs {
		ch <- d
	}
}

func (*scaleCollector) Collect(ch chan<- prometheus.Metric) {
	c := func(k string, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(scaleDescs[k], prometheus.CounterValue, float64(v), labels...)
	}
	seen := map[string]bool{}
	publisherPool.Range(func(_, v any) bool {
		p, ok := v.(publisherShare)
		if !ok || seen[p.Subject()] {
			return true
		}
		seen[p.Subject()] = true
		st, subj := p.Stats(), p.Subject()
		c("pubFrames", st.Frames, subj)
		c("pubBytes", st.Bytes, subj)
		c("pubSplit", st.SplitFrames, subj)
		c("pubDropped", st.DroppedQueue, subj, "queue")
		c("pubDropped", st.DroppedDisconnected, subj, "disconnected")
		c("pubDropped", st.Errors, subj, "error")
		c("pubIDRIn", st.IDRReceived, subj)
		c("pubIDROut", st.IDRForwarded, subj)
		c("pubHeld", st.Held, subj)
		return true
	})
	seen = map[string]bool{}
	natsSourcePool.Range(func(_, v any) bool {
		s, ok := v.(natsSourceShare)
		if !ok || seen[s.Subject()] {
			return true
		}
		seen[s.Subject()] = true
		st, subj := s.Stats(), s.Subject()
		c("natsFrames", st.Frames, subj)
		c("natsBytes", st.Bytes, subj)
		c("natsGaps", st.Gaps, subj)
		c("natsRestart", st.Restarts, subj)
		c("natsWaits", st.KeyframeWaits, subj)
		c("natsBad", st.Malformed, subj, "malformed")
		c("natsBad", st.CRCFailures, subj, "crc")
		c("natsBad", st.PartsDropped, subj, "part")
		c("natsUp", st.Upstream, subj)
		c("natsIDR", st.IDRRequests, subj)
		age := -1.0
		if t := s.LastArrival(); !t.IsZero() {
			age = time.Since(t).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(scaleDescs["natsAge"], prometheus.GaugeValue, age, subj)
		return true
	})
}
