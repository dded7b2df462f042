package stream

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrmetrics"
	"github.com/sdr-os/sdr-caddy/internal/rtc"
)

// rtcMetrics are the WebRTC collectors, created once per process and
// registered into the registry of every config load.
type rtcMetrics struct {
	sessions                                                           *prometheus.GaugeVec
	started, framesSent, framesDropped, framesUnsupported, keyframeReq *prometheus.CounterVec
	messages                                                           *prometheus.CounterVec
}

var rtcMetricsOnce = func() *rtcMetrics {
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts(sdrmetrics.Opts("webrtc_"+name, help)), []string{"stream"})
	}
	return &rtcMetrics{
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts(sdrmetrics.Opts("webrtc_sessions",
			"WebRTC sessions open (WHEP and /stream/ws 0x03).")), []string{"stream"}),
		started:           counter("sessions_total", "WebRTC sessions started."),
		framesSent:        counter("frames_sent_total", "Frames sent on WebRTC video tracks (one per session per frame)."),
		framesDropped:     counter("frames_dropped_total", "Frames a session dropped because it fell behind (it resumes at the next keyframe)."),
		framesUnsupported: counter("frames_unsupported_total", "Frames not sent because they are not H.264."),
		keyframeReq:       counter("keyframe_requests_total", "Keyframe requests made on RTCP PLI/FIR or after a drop (per session, before the stream coalesces)."),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts(sdrmetrics.Opts("webrtc_messages_total",
			"DataChannel and 0x03 signaling messages by channel (control, commands, other, signaling) and result.")), []string{"stream", "channel", "result"}),
	}
}()

func registerRTCMetrics(reg *prometheus.Registry, log *zap.Logger) *rtcMetrics {
	m := rtcMetricsOnce
	if err := sdrmetrics.Register(reg, m.sessions, m.started, m.framesSent, m.framesDropped,
		m.framesUnsupported, m.keyframeReq, m.messages); err != nil {
		log.Warn("registering webrtc metrics", zap.Error(err))
	}
	return m
}

// forStream binds the collectors to a stream.
func (m *rtcMetrics) forStream(name string) rtc.Metrics {
	return rtc.Metrics{
		Sessions:          m.sessions.WithLabelValues(name),
		SessionsStarted:   m.started.WithLabelValues(name),
		FramesSent:        m.framesSent.WithLabelValues(name),
		FramesDropped:     m.framesDropped.WithLabelValues(name),
		FramesUnsupported: m.framesUnsupported.WithLabelValues(name),
		KeyframeRequests:  m.keyframeReq.WithLabelValues(name),
		Messages:          m.messages.MustCurryWith(prometheus.Labels{"stream": name}),
	}
}
