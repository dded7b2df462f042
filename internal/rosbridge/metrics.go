package rosbridge

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the mux's Prometheus collectors. Create them once per process
// (NewMetrics) and register Collectors into each registry; several muxes
// (overlapping config loads) may share one Metrics.
type Metrics struct {
	// Clients counts connected rosbridge clients.
	Clients prometheus.Gauge
	// UpstreamSubscriptions counts topics subscribed upstream.
	UpstreamSubscriptions prometheus.Gauge
	// Messages counts rosbridge messages by direction: upstream_in (read
	// from rosbridge_server), client_out (written to clients), client_in
	// (read from clients), upstream_out (written to rosbridge_server).
	Messages *prometheus.CounterVec
	// Drops counts topic messages a client did not get, by reason: queue
	// (its queue was full and the oldest went), throttle (throttle_rate),
	// rate_limit (an op from a client over its rate), gated (a motion
	// publish the safety gate held back).
	Drops *prometheus.CounterVec
	// Denials counts refused ops by kind: subscribe, publish, service,
	// motion, op (an op sdr_ros does not serve), origin (advertise, publish
	// or call_service from a connection whose Origin is not trusted), name
	// (a topic or service name outside the ROS naming rules), invalid,
	// not_controller (a motion publish of a client that does not hold the
	// control lease), and the strict JSON check's duplicate_key,
	// invalid_utf8 (also text that is not UTF-8, which closes the
	// connection with 1007) and too_deep.
	Denials *prometheus.CounterVec
	// ServiceTimeouts counts service calls answered with result false
	// because the upstream did not answer in time.
	ServiceTimeouts prometheus.Counter
	// UpstreamRefused counts clients refused with 502 while the upstream
	// was not connected.
	UpstreamRefused prometheus.Counter
	// Closes counts clients closed by a limit, by reason: fragments (a
	// message in too many frames), frame_rate (frames faster than the
	// frame limit), ping_timeout (no reply to a ping).
	Closes *prometheus.CounterVec
}

// NewMetrics creates the collectors, named caddy_sdr_ros_*.
func NewMetrics() *Metrics {
	const ns, sub = "caddy", "sdr"
	return &Metrics{
		Clients: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "ros_clients", Help: "Connected rosbridge clients of sdr_ros."}),
		UpstreamSubscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "ros_upstream_subscriptions", Help: "Topics sdr_ros subscribes to on rosbridge_server."}),
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "ros_messages_total", Help: "rosbridge messages by direction (upstream_in, upstream_out, client_in, client_out)."},
			[]string{"direction"}),
		Drops: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "ros_drops_total", Help: "Messages sdr_ros dropped, by reason (queue, throttle, rate_limit, gated)."},
			[]string{"reason"}),
		Denials: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "ros_denials_total", Help: "Ops sdr_ros refused, by kind (subscribe, publish, service, motion, op, origin, name, invalid, not_controller, duplicate_key, invalid_utf8, too_deep)."},
			[]string{"kind"}),
		ServiceTimeouts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "ros_service_timeouts_total", Help: "Service calls sdr_ros answered with result false after its timeout."}),
		UpstreamRefused: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "ros_upstream_refused_total", Help: "Clients sdr_ros refused with 502 because rosbridge_server was not connected."}),
		Closes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "ros_closes_total", Help: "Clients sdr_ros closed for a limit, by reason (fragments, frame_rate, ping_timeout)."},
			[]string{"reason"}),
	}
}

// Collectors lists the collectors for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Clients, m.UpstreamSubscriptions, m.Messages, m.Drops, m.Denials, m.ServiceTimeouts, m.UpstreamRefused, m.Closes}
}

// counters caches the labelled children the hot paths use.
type counters struct {
	m                                        *Metrics
	upIn, upOut, clientIn, clientOut         prometheus.Counter
	dropQueue, dropThrottle, dropRate, dropG prometheus.Counter
}

func newCounters(m *Metrics) *counters {
	if m == nil {
		m = NewMetrics() // unregistered: counts go nowhere
	}
	return &counters{
		m:            m,
		upIn:         m.Messages.WithLabelValues("upstream_in"),
		upOut:        m.Messages.WithLabelValues("upstream_out"),
		clientIn:     m.Messages.WithLabelValues("client_in"),
		clientOut:    m.Messages.WithLabelValues("client_out"),
		dropQueue:    m.Drops.WithLabelValues("queue"),
		dropThrottle: m.Drops.WithLabelValues("throttle"),
		dropRate:     m.Drops.WithLabelValues("rate_limit"),
		dropG:        m.Drops.WithLabelValues("gated"),
	}
}

func (c *counters) deny(kind string) { c.m.Denials.WithLabelValues(kind).Inc() }
