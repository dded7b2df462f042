package encoder

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrmetrics"
	"github.com/sdr-os/sdr-caddy/nvenc"
)

// encoderMetrics are sdr_encoder's collectors, created once per process and
// registered into the registry of every config load.
type encoderMetrics struct {
	encode    *prometheus.HistogramVec
	frames    *prometheus.CounterVec
	keyframes *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	fallbacks *prometheus.CounterVec
	invalid   *prometheus.CounterVec
	backend   *prometheus.GaugeVec
	sessions  *encoderCollector
}

var encoderMetricsOnce = func() *encoderMetrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts(sdrmetrics.Opts("encoder_"+name, help)), append([]string{"encoder"}, labels...))
	}
	return &encoderMetrics{
		encode: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "caddy", Subsystem: "sdr", Name: "encoder_encode_seconds",
			Help:    "Time to encode one frame (conversion included).",
			Buckets: []float64{0.001, 0.002, 0.004, 0.008, 0.012, 0.016, 0.025, 0.033, 0.05, 0.1, 0.25},
		}, []string{"encoder"}),
		frames:    counter("frames_total", "Frames encoded."),
		keyframes: counter("keyframes_total", "IDR frames encoded (GOP starts, forced IDRs, encoder reopenings)."),
		bytes:     counter("bytes_total", "Encoded bytes."),
		fallbacks: counter("fallbacks_total", "Encoder openings where a preferred backend failed and a later one was used; backend is the one that failed.", "backend"),
		invalid:   counter("raw_invalid_total", "Raw-ring frames rejected (not a raw pixel format, bad descriptor or size)."),
		backend: prometheus.NewGaugeVec(prometheus.GaugeOpts(sdrmetrics.Opts("encoder_backend",
			"1 for the FFmpeg encoder each encoder uses now (h264_nvenc, libx264, ...), 0 for those it used before.")), []string{"encoder", "backend"}),
		sessions: &encoderCollector{},
	}
}()

func registerEncoderMetrics(reg *prometheus.Registry, log *zap.Logger) *encoderMetrics {
	m := encoderMetricsOnce
	if err := sdrmetrics.Register(reg, m.encode, m.frames, m.keyframes, m.bytes, m.fallbacks, m.invalid, m.backend, m.sessions); err != nil {
		log.Warn("registering sdr_encoder metrics", zap.Error(err))
	}
	return m
}

func (m *encoderMetrics) observe(name string, fs nvenc.FrameStats) {
	m.encode.WithLabelValues(name).Observe(fs.Encode.Seconds())
	m.frames.WithLabelValues(name).Inc()
	m.bytes.WithLabelValues(name).Add(float64(fs.FrameBytes))
	if fs.Keyframe {
		m.keyframes.WithLabelValues(name).Inc()
	}
}

func (m *encoderMetrics) opened(name, backend string, att []nvenc.Attempt) {
	// A codec change can move to another backend family: forget the old ones.
	m.backend.DeletePartialMatch(prometheus.Labels{"encoder": name})
	for _, a := range att {
		if a.Error != "" {
			m.fallbacks.WithLabelValues(name, a.Backend).Inc()
		}
		v := 0.0
		if a.Backend == backend {
			v = 1
		}
		m.backend.WithLabelValues(name, a.Backend).Set(v)
	}
}

// encoderCollector reports the state of the running sessions: frame rate,
// skipped frames, errors.
type encoderCollector struct{}

var (
	encoderFPSDesc = prometheus.NewDesc(prometheus.BuildFQName("caddy", "sdr", "encoder_fps"),
		"Frames encoded per second, averaged over the last few seconds.", []string{"encoder"}, nil)
	encoderSkippedDesc = prometheus.NewDesc(prometheus.BuildFQName("caddy", "sdr", "encoder_skipped_total"),
		"Raw frames not encoded because a newer one arrived first (encoding fell behind) or max_fps held them back.", []string{"encoder"}, nil)
	encoderErrorsDesc = prometheus.NewDesc(prometheus.BuildFQName("caddy", "sdr", "encoder_errors_total"),
		"Failed encodes and failed encoder openings.", []string{"encoder"}, nil)
	encoderKeyRequestsDesc = prometheus.NewDesc(prometheus.BuildFQName("caddy", "sdr", "encoder_keyframe_requests_total"),
		"Keyframe requests received (sdr_stream in-process, NATS force_idr).", []string{"encoder"}, nil)
)

func (*encoderCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- encoderFPSDesc
	ch <- encoderSkippedDesc
	ch <- encoderErrorsDesc
	ch <- encoderKeyRequestsDesc
}

func (*encoderCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range listEncoders() {
		st := s.session.Stats()
		ch <- prometheus.MustNewConstMetric(encoderFPSDesc, prometheus.GaugeValue, st.FPS, s.name)
		ch <- prometheus.MustNewConstMetric(encoderSkippedDesc, prometheus.CounterValue, float64(st.Skipped), s.name)
		ch <- prometheus.MustNewConstMetric(encoderErrorsDesc, prometheus.CounterValue, float64(st.Errors), s.name)
		ch <- prometheus.MustNewConstMetric(encoderKeyRequestsDesc, prometheus.CounterValue, float64(st.KeyframeAsked), s.name)
	}
}
