package main

import (
	"fmt"
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
}

// shapedSummary is the worst shaped client's age p95 and stall, and the
// mean of their decodable frame rates.
type shapedSummary struct {
	ran, decoded            bool // the phase ran; some frame was decodable
	p95, stall, fps, minFPS float64
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

func (s shapedSummary) field(prefix string) string {
	if !s.ran {
		return fmt.Sprintf("%sshaped_age_p95_ms=na %sshaped_max_stall_ms=na %sshaped_fps=na", prefix, prefix, prefix)
	}
	if !s.decoded { // no frame to take an age of
		return fmt.Sprintf("%sshaped_age_p95_ms=na %sshaped_max_stall_ms=%.0f %sshaped_fps=0.0", prefix, prefix, s.stall, prefix)
	}
	return fmt.Sprintf("%sshaped_age_p95_ms=%.0f %sshaped_max_stall_ms=%.0f %sshaped_fps=%.1f",
		prefix, s.p95, prefix, s.stall, prefix, s.fps)
}

func (r *report) print(c config) {
	baseP99 := pct(pooledAges(r.base), 0.99)
	fields := []string{"BENCH link", "shaper=toxiproxy"}
	if len(r.healthyWithShaped) > 0 && baseP99 > 0 {
		p99 := pct(pooledAges(r.healthyWithShaped), 0.99)
		fields = append(fields, fmt.Sprintf("healthy_p99_ratio=%.2f", p99/baseP99))
		ws := summarise(r.shapedWS)
		fields = append(fields, ws.field(""), fmt.Sprintf("rss_kib_per_shaped=%.0f", r.rssPerShaped))
		fields = append(fields, fmt.Sprintf("healthy_p99_ms=%.2f base_p99_ms=%.2f shaped_min_fps=%.1f shaped_undecodable=%d kernel_kib_per_shaped=%.0f",
			p99, baseP99, ws.minFPS, ws.undecodable, (r.queues.sendQ+r.queues.proxyRecvQ)/1024))
	} else {
		fields = append(fields, "healthy_p99_ratio=na", summarise(nil).field(""), "rss_kib_per_shaped=na")
	}
	rtc, nt := summarise(r.shapedRTC), summarise(r.shapedNATS)
	fields = append(fields, rtc.field("webrtc_"), nt.field("nats_"))
	if rtc.ran {
		fields = append(fields, fmt.Sprintf("webrtc_shaped_undecodable=%d", rtc.undecodable))
	}
	depth := "64"
	if c.queueDepth > 0 {
		depth = fmt.Sprint(c.queueDepth)
	}
	send := "64KiB"
	if c.sendQueue != "" {
		send = c.sendQueue
	}
	fields = append(fields, fmt.Sprintf("rate_mbit=%g rtt_ms=%g loss=%g link_queue_ms=%g loss_model=fast_retransmit queue_depth=%s send_queue=%s window_s=%g load_start=%s load_end=%s",
		c.link.Rate/1e6, float64(2*c.link.Delay)/1e6, c.link.Loss, float64(c.link.Queue)/1e6, depth, send, c.window.Seconds(), r.load[0], r.load[1]))
	fmt.Println("targets: healthy p99 <= 1.2x base; shaped age p95 <= 500 ms, never a stall over 2 s, decodable throughout")
	fmt.Println(strings.Join(fields, " "))
}
