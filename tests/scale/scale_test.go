package scale

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

const gapsMetric = `caddy_sdr_stream_nats_gaps_total{subject="video.front"}`

// topology is an origin on node 0, edge 1 a client of node 1, edge 2 an
// embedded server that is a leaf of node 2.
type topology struct {
	cl           *cluster
	sim          *sim
	origin       *caddy
	edge1, edge2 *caddy
}

func startTopology(t *testing.T, fps, gop, keyBytes int) *topology {
	t.Helper()
	cl := startCluster(t)
	s := startSim(t, cl.nodes[0].URL(), fps, gop, keyBytes)
	originPort, edge1Port, edge2Port := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	tp := &topology{cl: cl, sim: s}
	tp.origin = startCaddy(t, caddyfile(originPort,
		fmt.Sprintf("\t\turl %s\n\t\tname origin\n\t\treconnect_wait_max 300ms", cl.nodes[0].URL()),
		// Gating at the origin too: its own clients then get nothing
		// undecodable when its ring reader misses a frame on this loaded
		// machine (the edges gate on their own).
		fmt.Sprintf("\t\t\tsource shm %s\n\t\t\tkeyframe_gating on\n\t\t\tpublish", s.path)), originPort)
	tp.edge1 = startCaddy(t, caddyfile(edge1Port,
		fmt.Sprintf("\t\turl %s\n\t\tname edge-1\n\t\treconnect_wait_max 300ms", cl.nodes[1].URL()),
		"\t\t\tsource nats video.front"), edge1Port)
	tp.edge2 = startCaddy(t, caddyfile(edge2Port,
		fmt.Sprintf("\t\tname edge-2\n\t\tembedded {\n\t\t\tlisten 127.0.0.1:%d\n\t\t\tleaf_remote %s\n\t\t}",
			testenv.FreePort(t), cl.nodes[2].LeafURL()),
		"\t\t\tsource nats video.front"), edge2Port)
	// The leaf connection comes up in the background.
	if !testwait.Until(20*time.Second, func() bool { return cl.nodes[2].varz("leafnodes") >= 1 }) {
		t.Fatalf("edge 2's embedded server did not connect as a leaf to %s", cl.nodes[2].name)
	}
	return tp
}

// TestFramesReachEveryEdgeByteIdentical: frames written into the origin's
// ring, keyframes larger than NATS's 1 MiB max_payload among them, reach
// WebSocket clients on the origin, on an edge in the cluster and on an
// edge behind a leaf node, byte for byte, each client starting at a
// keyframe; the edges' keyframe requests reach the ring's writer through
// NATS, coalesced.
func TestFramesReachEveryEdgeByteIdentical(t *testing.T) {
	tp := startTopology(t, 30, 30, 1<<20+200_000)
	start := time.Now()
	viewers := []*viewer{watch(t, tp.origin.ws, tp.sim, false)}
	for range 3 {
		viewers = append(viewers, watch(t, tp.edge1.ws, tp.sim, false), watch(t, tp.edge2.ws, tp.sim, false))
	}
	for _, v := range viewers {
		v.waitFrames(90, start, 30*time.Second)
	}
	for _, v := range viewers {
		v.Close()
		v.check()
		vs, _ := v.snapshot()
		keys := 0
		for _, f := range vs {
			if f.key {
				keys++
			}
		}
		if keys < 2 {
			t.Errorf("client of %s got %d keyframes in %d frames, want the 1.2 MB keyframes too", v.url, keys, len(vs))
		}
	}
	split := metric(t, tp.origin.AdminAddr, `caddy_sdr_stream_publish_split_frames_total{subject="video.front"}`)
	if split < 2 {
		t.Errorf("origin split %g frames, want the keyframes over max_payload split", split)
	}
	for _, e := range []*caddy{tp.edge1, tp.edge2} {
		if v := metric(t, e.AdminAddr, `caddy_sdr_stream_nats_discarded_total{reason="part",subject="video.front"}`); v != 0 {
			t.Errorf("edge %s dropped %g parts", e.base, v)
		}
	}
	// Seven clients joined, each asking for a keyframe; the origin passes
	// at most one request per 500 ms on to the writer.
	elapsed := time.Since(start)
	idrs := tp.sim.idrsSince(start)
	if idrs < 1 || idrs > int(elapsed/(500*time.Millisecond))+2 {
		t.Errorf("the writer got %d force_idr requests in %s, want 1 to %d", idrs, elapsed, int(elapsed/(500*time.Millisecond))+2)
	}
	if v := metric(t, tp.origin.AdminAddr, `caddy_sdr_stream_publish_idr_received_total{subject="video.front"}`); v < 1 {
		t.Errorf("origin received %g keyframe requests from edges", v)
	}
}

// TestNATSNodeKilledMidStream: the node an edge is connected to is killed
// and restarted: the edge's clients stay connected, get nothing
// undecodable, and resume at a keyframe after the reconnection (the gap is
// counted), and its keyframe request reaches the ring's writer through
// NATS; the other edge keeps streaming meanwhile. Then the origin's node
// goes down and comes back: every edge resumes.
// The writer's GOP is 10 s: every resumption needs a keyframe request to
// reach it through NATS (the edges' after a loss, or the origin's
// publisher's while its gated ring holds frames after a missed one).
func TestNATSNodeKilledMidStream(t *testing.T) {
	tp := startTopology(t, 30, 300, 30_000)
	start := time.Now()
	e1 := []*viewer{watch(t, tp.edge1.ws, tp.sim, false), watch(t, tp.edge1.ws, tp.sim, false)}
	e2 := watch(t, tp.edge2.ws, tp.sim, false)
	for _, v := range append(e1, e2) {
		v.waitFrames(30, start, 30*time.Second)
	}

	// Edge 1's node.
	waitsMetric := `caddy_sdr_stream_nats_keyframe_waits_total{subject="video.front"}`
	waits := metric(t, tp.edge1.AdminAddr, waitsMetric)
	// The node stays down until the writer has written 15 frames (edge 1
	// misses them) and edge 1's gate went to HOLD, however long that takes.
	holdMetric := `caddy_sdr_gate_transitions_total{mode="HOLD",stream="front"}`
	tp.cl.nodes[1].Kill()
	down, written := time.Now(), tp.sim.frames()
	e2.waitFrames(20, down, 10*time.Second) // the other edge is unaffected
	testwait.For(t, "15 frames written while edge 1's node is down", func() bool { return tp.sim.frames() >= written+15 })
	waitMetric(t, tp.edge1.AdminAddr, holdMetric, func(v float64) bool { return v >= 1 }, 10*time.Second)
	tp.cl.nodes[1].Start()
	up := time.Now()
	for _, v := range e1 {
		v.waitFrames(30, up, 8*time.Second)
	}
	if g := waitMetric(t, tp.edge1.AdminAddr, gapsMetric, func(v float64) bool { return v >= 10 }, 10*time.Second); g < 10 {
		t.Fatalf("edge 1 counted %g missed frames while 15 were written", g)
	}
	// Unless the first frame after the gap happened to be a keyframe, the
	// edge held deltas and asked the writer for one.
	if n := tp.sim.idrsSince(down); n < 1 && metric(t, tp.edge1.AdminAddr, waitsMetric) > waits {
		t.Errorf("no keyframe request reached the writer after edge 1 lost frames (edge sent %g, origin received %g, forwarded %g)",
			metric(t, tp.edge1.AdminAddr, `caddy_sdr_stream_nats_idr_requests_total{subject="video.front"}`),
			metric(t, tp.origin.AdminAddr, `caddy_sdr_stream_publish_idr_received_total{subject="video.front"}`),
			metric(t, tp.origin.AdminAddr, `caddy_sdr_stream_publish_idr_forwarded_total{subject="video.front"}`))
	}

	// The origin's node (the writer's NATS connection too).
	tp.cl.nodes[0].Kill()
	written = tp.sim.frames()
	testwait.For(t, "15 frames written while the origin's node is down", func() bool { return tp.sim.frames() >= written+15 })
	tp.cl.nodes[0].Start()
	up = time.Now()
	for _, v := range append(e1, e2) {
		v.waitFrames(30, up, 10*time.Second)
	}
	waitMetric(t, tp.edge2.AdminAddr, gapsMetric, func(v float64) bool { return v >= 10 }, 10*time.Second)
	for _, v := range append(e1, e2) {
		v.Close()
		if jumps := v.check(); jumps < 1 {
			t.Errorf("client of %s saw no jump in frame_seq across the outages", v.url)
		}
	}
	// (The safety gate of each edge is fed by frame arrival at that edge:
	// edge 1's went to HOLD while its node was down, waited for above.)
}

// TestEdgeRestarted: an edge process restarts; its clients reconnect and
// start at a keyframe. The new edge has no GOP yet: it asks the origin for
// a keyframe through NATS.
func TestEdgeRestarted(t *testing.T) {
	tp := startTopology(t, 30, 60, 30_000)
	start := time.Now()
	vs := []*viewer{watch(t, tp.edge1.ws, tp.sim, true), watch(t, tp.edge1.ws, tp.sim, true)}
	for _, v := range vs {
		v.waitFrames(30, start, 30*time.Second)
	}
	tp.edge1.Stop(t)
	for _, v := range vs {
		v.waitEnded(1) // the clients saw the edge go
	}
	again := startCaddy(t, tp.edge1.file, tp.edge1.port)
	up := time.Now()
	for _, v := range vs {
		v.waitFrames(30, up, 15*time.Second)
	}
	for _, v := range vs {
		v.Close()
		_, sessions := v.snapshot()
		if len(sessions) < 2 {
			t.Errorf("client of %s did not reconnect", v.url)
		}
		v.check()
	}
	if n := metric(t, again.AdminAddr, `caddy_sdr_stream_nats_idr_requests_total{subject="video.front"}`); n < 1 {
		t.Errorf("the restarted edge sent %g keyframe requests", n)
	}
}

// TestEdgeReloadKeepsSubscription: a config reload on an edge keeps its
// NATS subscription (shared like the ring reader; its counters go on): the
// clients, closed with 1012, reconnect and start at a keyframe. (That a
// kept GOP is replayed to the new handler's hub is a unit test of
// natsvideo: a client reconnecting to the old listener during the overlap
// already asks for a keyframe here.)
func TestEdgeReloadKeepsSubscription(t *testing.T) {
	tp := startTopology(t, 30, 60, 30_000)
	start := time.Now()
	v := watch(t, tp.edge1.ws, tp.sim, true)
	v.waitFrames(30, start, 30*time.Second)
	framesMetric := `caddy_sdr_stream_nats_frames_total{subject="video.front"}`
	before := metric(t, tp.edge1.AdminAddr, framesMetric)

	tp.edge1.Load(t, strings.Replace(tp.edge1.file, "source nats video.front", "source nats video.front\n\t\t\tmax_clients 1000", 1))
	reloaded := time.Now()
	if !testwait.Until(15*time.Second, func() bool { _, sessions := v.snapshot(); return len(sessions) >= 2 }) {
		t.Fatal("the client was not closed and reconnected by the reload")
	}
	v.waitFrames(30, reloaded, 15*time.Second)
	v.Close()
	v.check()
	vs, sessions := v.snapshot()
	first := vs[sessions[len(sessions)-1]]
	if !first.key {
		t.Errorf("after the reload the client started at frame_seq %d, not a keyframe", first.seq)
	}
	if after := metric(t, tp.edge1.AdminAddr, framesMetric); after <= before {
		t.Errorf("nats frames counter went from %g to %g: the subscription was not kept", before, after)
	}
}
