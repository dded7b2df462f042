package recorder

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/sdrmetrics"
	"github.com/sdr-os/sdr-caddy/internal/recording"
)

// The recorders of the configs running now, and the counts of those gone,
// so that the counters keep counting across config reloads.
var (
	recMu   sync.Mutex
	live    []*recording.Recorder
	retired = recording.Stats{Frames: map[string]uint64{}}
)

func track(r *recording.Recorder) {
	recMu.Lock()
	defer recMu.Unlock()
	live = append(live, r)
}

func untrack(r *recording.Recorder) {
	recMu.Lock()
	defer recMu.Unlock()
	for i, l := range live {
		if l == r {
			live = append(live[:i], live[i+1:]...)
			add(&retired, r.Stats())
			return
		}
	}
}

func add(dst *recording.Stats, s recording.Stats) {
	for i := range dst.Records {
		dst.Records[i] += s.Records[i]
		dst.Dropped[i] += s.Dropped[i]
	}
	for k, v := range s.Frames {
		dst.Frames[k] += v
	}
	dst.Bytes += s.Bytes
	dst.Errors += s.Errors
	dst.KeyframeRequests += s.KeyframeRequests
}

// collector reports the recorders' counters.
type collector struct {
	records, frames, bytes, dropped, errors, keyframes, state *prometheus.Desc
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	o := sdrmetrics.Opts(name, help)
	return prometheus.NewDesc(prometheus.BuildFQName(o.Namespace, o.Subsystem, o.Name), o.Help, labels, nil)
}

var metrics = &collector{
	records: desc("recorder_records_total", "Records published into the recording, by kind: video (frames), telemetry, command, gate.", "kind"),
	frames:  desc("recorder_frames_total", "Video frames published into the recording, by stream.", "stream"),
	bytes:   desc("recorder_bytes_total", "Bytes of record bodies published into the recording."),
	dropped: desc("recorder_dropped_total", "Records dropped, by kind: the recorder's queue was full, or it was not recording.", "kind"),
	errors:  desc("recorder_errors_total", "Records JetStream refused or did not acknowledge in time (a video burst whose acknowledgement failed counts each of its messages)."),
	keyframes: desc("recorder_keyframe_requests_total",
		"Keyframes the recorder asked producers for, when none came for idr_interval."),
	state: desc("recorder_state", "The recorder's state: 0 starting (setting up the stream), 1 recording, 2 stopped (JetStream out of storage), 4 paused (POST /sdr/recorder/pause on the admin API)."),
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.records, c.frames, c.bytes, c.dropped, c.errors, c.keyframes, c.state} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	recMu.Lock()
	total := recording.Stats{Frames: map[string]uint64{}}
	add(&total, retired)
	state := -1
	for _, r := range live {
		s := r.Stats()
		add(&total, s)
		state = int(s.State)
	}
	recMu.Unlock()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for k := range total.Records {
		kind := recording.Kind(k).String()
		counter(c.records, total.Records[k], kind)
		counter(c.dropped, total.Dropped[k], kind)
	}
	for stream, n := range total.Frames {
		counter(c.frames, n, stream)
	}
	counter(c.bytes, total.Bytes)
	counter(c.errors, total.Errors)
	counter(c.keyframes, total.KeyframeRequests)
	if state >= 0 {
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, float64(state))
	}
}

func registerMetrics(reg *prometheus.Registry) error {
	if err := sdrmetrics.Register(reg, metrics); err != nil {
		return fmt.Errorf("sdr_recorder: registering metrics: %w", err)
	}
	return nil
}
