package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// steady returns a flow that recorded n frames 1/fps apart from t0, each
// of the age age(i).
func steady(t0 time.Time, n int, age func(i int) time.Duration) *flow {
	f := newFlow()
	f.start(t0)
	var at time.Time
	for i := range n {
		at = t0.Add(time.Duration(i) * time.Second / 20)
		f.frames = append(f.frames, obs{at, age(i)})
	}
	f.stop(at)
	return f
}

// The BENCH line carries the fields first, in its order, with the
// values the flows give: the worst shaped client's age p95 and stall, and
// how much the age grew over the window (NATS's here).
func TestBenchLine(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	flat := func(d time.Duration) func(int) time.Duration { return func(int) time.Duration { return d } }
	r := &report{
		base:              []*flow{steady(t0, 100, flat(2*time.Millisecond))},
		healthyWithShaped: []*flow{steady(t0, 100, flat(3*time.Millisecond))},
		shapedWS:          []*flow{steady(t0, 100, flat(400*time.Millisecond)), steady(t0, 100, flat(450*time.Millisecond))},
		shapedNATS: []*flow{steady(t0, 100, func(i int) time.Duration {
			return time.Duration(i) * 100 * time.Millisecond
		})},
		rssPerShaped: 40,
		ringPct:      50,
		load:         [2]string{"1.00,1.00,1.00", "2.00,2.00,2.00"},
	}
	c := config{window: 5 * time.Second, link: Link{Rate: 4e6, Delay: 20 * time.Millisecond, Loss: 0.01, Queue: 100 * time.Millisecond}}
	var out bytes.Buffer
	r.print(&out, c)
	if !strings.Contains(out.String(), "ring reader got only 50%") {
		t.Errorf("no note of the starved phase in\n%s", out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	line := lines[len(lines)-1]
	want := []string{"BENCH link", "shaper=toxiproxy", "healthy_p99_ratio=1.50", "shaped_age_p95_ms=450",
		"shaped_max_stall_ms=50", "shaped_fps=20.2", "rss_kib_per_shaped=40",
		"webrtc_shaped_age_p95_ms=na", "webrtc_shaped_max_stall_ms=na", "webrtc_shaped_fps=na",
		"nats_shaped_age_p95_ms=9500", "nats_shaped_max_stall_ms=50", "nats_shaped_fps=20.2"}
	rest := line
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("%q missing or out of order in\n%s", w, line)
		}
		rest = rest[i+len(w):]
	}
	for _, w := range []string{" shaped_age_growth_ms=0 ", " nats_shaped_age_growth_ms=5000 ", " queue_depth=64 ", " max_lag=off ", " send_queue=64KiB ", " ring_read_min_pct=50 ", " load_start=1.00,1.00,1.00 "} {
		if !strings.Contains(line, w) {
			t.Errorf("%q missing in\n%s", w, line)
		}
	}
}

// The line names the max_lag the server ran with: off by default, else the
// duration as -max-lag gave it.
func TestBenchLineMaxLag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		maxLag time.Duration
		want   string
	}{{0, " max_lag=off "}, {250 * time.Millisecond, " max_lag=250ms "}} {
		var out bytes.Buffer
		(&report{load: [2]string{"na", "na"}}).print(&out, config{maxLag: tc.maxLag, window: time.Second})
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("max lag %v: %q missing in\n%s", tc.maxLag, tc.want, out.String())
		}
	}
}
