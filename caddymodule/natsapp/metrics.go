package natsapp

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrmetrics"
)

// natsMetrics are created once per process and registered into each config's
// registry (it is new on every load).
var natsMetrics = struct {
	connected       prometheus.Gauge
	reconnects      prometheus.Counter
	disconnects     prometheus.Counter
	errors          prometheus.Counter
	telemetry       *prometheus.CounterVec
	commands        *prometheus.CounterVec
	gateMode        *prometheus.GaugeVec
	gateArmed       *prometheus.GaugeVec
	gateTransitions *prometheus.CounterVec
	wsClients       prometheus.Gauge
	wsDropped       prometheus.Counter
	wsCloses        *prometheus.CounterVec
	leaseHeld       *prometheus.GaugeVec
	leaseTakes      *prometheus.CounterVec
	leaseReleases   *prometheus.CounterVec
	leaseRefused    *prometheus.CounterVec
}{
	connected: prometheus.NewGauge(prometheus.GaugeOpts(sdrmetrics.Opts("nats_connected",
		"1 while the NATS connection is up, 0 while it is down or reconnecting."))),
	reconnects: prometheus.NewCounter(prometheus.CounterOpts(sdrmetrics.Opts("nats_reconnects_total",
		"Successful NATS reconnections."))),
	disconnects: prometheus.NewCounter(prometheus.CounterOpts(sdrmetrics.Opts("nats_disconnects_total",
		"Times the NATS connection was lost."))),
	errors: prometheus.NewCounter(prometheus.CounterOpts(sdrmetrics.Opts("nats_async_errors_total",
		"Asynchronous NATS errors, mostly slow-consumer drops of telemetry."))),
	telemetry: prometheus.NewCounterVec(prometheus.CounterOpts(sdrmetrics.Opts("nats_telemetry_messages_total",
		"Telemetry messages from NATS by result: relayed, oversize, subject_too_long.")), []string{"result"}),
	commands: prometheus.NewCounterVec(prometheus.CounterOpts(sdrmetrics.Opts("nats_commands_total",
		"Client commands by status: published, rejected, gated, unavailable, and, acked rejected, rejected_origin (the connection's Origin is not trusted), rejected_duplicate_key, rejected_invalid_utf8, rejected_too_deep (the body fails the strict JSON check) and rejected_not_controller (the control lease); control: take_control and release_control answered ok; kept: keep taken by the flight recorder.")), []string{"status"}),
	gateMode: prometheus.NewGaugeVec(prometheus.GaugeOpts(sdrmetrics.Opts("gate_mode",
		"Safety gate of each stream: 0 ARMED, 1 HOLD, 2 ESTOP.")), []string{"stream"}),
	gateArmed: prometheus.NewGaugeVec(prometheus.GaugeOpts(sdrmetrics.Opts("gate_armed",
		"1 once the stream's video has delivered its first frame and armed its safety gate, 0 before.")), []string{"stream"}),
	gateTransitions: prometheus.NewCounterVec(prometheus.CounterOpts(sdrmetrics.Opts("gate_transitions_total",
		"Safety gate transitions by stream and the mode entered.")), []string{"stream", "mode"}),
	wsClients: prometheus.NewGauge(prometheus.GaugeOpts(sdrmetrics.Opts("nats_ws_clients",
		"WebSocket clients of the sdr_nats handler."))),
	wsDropped: prometheus.NewCounter(prometheus.CounterOpts(sdrmetrics.Opts("nats_ws_telemetry_dropped_total",
		"Telemetry messages dropped for sdr_nats handler clients that fell behind."))),
	wsCloses: prometheus.NewCounterVec(prometheus.CounterOpts(sdrmetrics.Opts("nats_ws_closes_total",
		"sdr_nats handler clients closed for a limit, by reason (fragments, frame_rate, ping_timeout).")), []string{"reason"}),
	leaseHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts(sdrmetrics.Opts("control_lease_held",
		"1 while a connection holds the stream's control lease, 0 while nobody does.")), []string{"stream"}),
	leaseTakes: prometheus.NewCounterVec(prometheus.CounterOpts(sdrmetrics.Opts("control_lease_takes_total",
		"take_control by stream and result: taken, refused (another connection holds the lease).")), []string{"stream", "result"}),
	leaseReleases: prometheus.NewCounterVec(prometheus.CounterOpts(sdrmetrics.Opts("control_lease_releases_total",
		"Ends of a hold of the control lease by stream and reason: released, closed (the holder's connection ended), idle.")), []string{"stream", "reason"}),
	leaseRefused: prometheus.NewCounterVec(prometheus.CounterOpts(sdrmetrics.Opts("control_lease_refused_total",
		"Commands refused as not the controller's, on every path (0x04, DataChannels, ROS motion publishes).")), []string{"stream"}),
}

func natsRegisterMetrics(reg *prometheus.Registry) error {
	m := natsMetrics
	if err := sdrmetrics.Register(reg, m.connected, m.reconnects, m.disconnects, m.errors, m.telemetry,
		m.commands, m.gateMode, m.gateArmed, m.gateTransitions, m.wsClients, m.wsDropped, m.wsCloses,
		m.leaseHeld, m.leaseTakes, m.leaseReleases, m.leaseRefused); err != nil {
		return fmt.Errorf("sdr_nats: registering metrics: %w", err)
	}
	return nil
}
