package main

import (
	"fmt"
	"io"
	"strings"
)

// report gathers what the phases measured for the BENCH line.
type report struct {
	base              []*flow // the healthy clients alone, before and after ws
	healthyWithShaped []*flow // the same clients beside the shaped ones
	shapedWS          []*flow
	shapedRTC         []*flow
	shapedNATS        []*flow
	healthyNATS       []*flow
	rssShaped         int64
	rssPerShaped      float64
	queues            sockQueues
	load              [2]string
	ringPct           float64 // the least of the stream the ring reader got in a phase, percent
}

// shapedSummary is the worst shaped client's age p95 and stall, and the
// mean of their decodable frame rates.
type shapedSummary struct {
	ran, decoded            bool // the phase ran; some frame was decodable
	p95, stall, fps, minFPS float64
	growth                  float64 // the most a client's age p95 grew from the first half of the window to the second, ms
	undecodable             int
}

func summarise(fs []*flow) shapedSummary {
	if len(fs) == 0 {
		return shapedSummary{}
	}
	s := shapedSummary{ran: true, minFPS: -1}
	for _, f := range fs {
		st := f.stats()
		s.p95 = max(s.p95, st.p95)
		if s.growth == 0 || st.p95Late-st.p95Early > s.growth {
			s.growth = st.p95Late - st.p95Early
		}
		s.stall = max(s.stall, st.maxStall)
		s.fps += st.fps / float64(len(fs))
		if s.minFPS < 0 || st.fps < s.minFPS {
			s.minFPS = st.fps
		}
		s.undecodable += st.undecodable
		s.decoded = s.decoded || st.frames > 0
	}
	return s
}

// keys names a system's three fields of the BENCH line.
type keys struct{ age, stall, fps, growth string }

var (
	wsKeys     = keys{"shaped_age_p95_ms=", "shaped_max_stall_ms=", "shaped_fps=", "shaped_age_growth_ms="}
	webrtcKeys = keys{"webrtc_shaped_age_p95_ms=", "webrtc_shaped_max_stall_ms=", "webrtc_shaped_fps=", "webrtc_shaped_age_growth_ms="}
	natsKeys   = keys{"nats_shaped_age_p95_ms=", "nats_shaped_max_stall_ms=", "nats_shaped_fps=", "nats_shaped_age_growth_ms="}
)

// field is the system's age p95, longest stall and fps; growth adds how
// much the age p95 grew within the window.
func (s shapedSummary) field(k keys) string {
	if !s.ran {
		return k.age + "na " + k.stall + "na " + k.fps + "na"
	}
	if !s.decoded { // no frame to take an age of
		return fmt.Sprintf("%sna %s%.0f %s0.0", k.age, k.stall, s.stall, k.fps)
	}
	return fmt.Sprintf("%s%.0f %s%.0f %s%.1f", k.age, s.p95, k.stall, s.stall, k.fps, s.fps)
}

// print writes the report's last two lines: the targets, and the BENCH
// line, whose first fields are the (shaper, healthy_p99_ratio, the
// shaped WebSocket clients', rss_kib_per_shaped, then the WebRTC and NATS
// systems' age, stall and fps), then the details and the conditions.
func (r *report) print(w io.Writer, c config) {
	baseP99 := pct(pooledAges(r.base), 0.99)
	fields := []string{"BENCH link", "shaper=toxiproxy"}
	if len(r.healthyWithShaped) > 0 && baseP99 > 0 {
		p99 := pct(pooledAges(r.healthyWithShaped), 0.99)
		fields = append(fields, fmt.Sprintf("healthy_p99_ratio=%.2f", p99/baseP99))
		ws := summarise(r.shapedWS)
		fields = append(fields, ws.field(wsKeys), fmt.Sprintf("rss_kib_per_shaped=%.0f", r.rssPerShaped))
		fields = append(fields, fmt.Sprintf("healthy_p99_ms=%.2f base_p99_ms=%.2f shaped_min_fps=%.1f shaped_undecodable=%d sock_kib_per_shaped=%.0f kernel_kib_per_shaped=%.0f",
			p99, baseP99, ws.minFPS, ws.undecodable, r.queues.wmem/1024, (r.queues.sendQ+r.queues.proxyRecvQ)/1024))
	} else {
		fields = append(fields, "healthy_p99_ratio=na", summarise(nil).field(wsKeys), "rss_kib_per_shaped=na")
	}
	rtc, nt := summarise(r.shapedRTC), summarise(r.shapedNATS)
	fields = append(fields, rtc.field(webrtcKeys), nt.field(natsKeys))
	for _, g := range []struct {
		s shapedSummary
		k keys
	}{{summarise(r.shapedWS), wsKeys}, {rtc, webrtcKeys}, {nt, natsKeys}} {
		if g.s.ran && g.s.decoded {
			fields = append(fields, fmt.Sprintf("%s%.0f", g.k.growth, g.s.growth))
		}
	}
	if rtc.ran {
		fields = append(fields, fmt.Sprintf("webrtc_shaped_undecodable=%d", rtc.undecodable))
	}
	depth := "64"
	if c.queueDepth > 0 {
		depth = fmt.Sprint(c.queueDepth)
	}
	maxLag := "off"
	if c.maxLag > 0 {
		maxLag = c.maxLag.String()
	}
	send := "64KiB"
	if c.sendQueue != "" {
		send = c.sendQueue
	}
	fields = append(fields, fmt.Sprintf("rate_mbit=%g rtt_ms=%g loss=%g link_queue_ms=%g loss_model=fast_retransmit queue_depth=%s max_lag=%s send_queue=%s window_s=%g ring_read_min_pct=%.0f load_start=%s load_end=%s",
		c.link.Rate/1e6, float64(2*c.link.Delay)/1e6, c.link.Loss, float64(c.link.Queue)/1e6, depth, maxLag, send, c.window.Seconds(), r.ringPct, r.load[0], r.load[1]))
	fmt.Fprintln(w, "targets: healthy p99 <= 1.2x base; shaped age p95 <= 500 ms, never a stall over 2 s, decodable throughout")
	if r.ringPct > 0 && r.ringPct < 90 {
		fmt.Fprintf(w, "note: in one phase the server's ring reader got only %.0f%% of the stream's frames: the machine starved the server or the writer, and the figures show that more than the link\n", r.ringPct)
	}
	fmt.Fprintln(w, strings.Join(fields, " "))
}
