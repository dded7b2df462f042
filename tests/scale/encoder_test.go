package scale

import (
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestEncoderOriginKeyframeOnEdgeRequest: the origin's stream is an
// sdr_encoder stream (test pattern, H.264, a GOP of 1000 frames = 33 s,
// its own NATS listener off). A client joining an edge long after the
// first keyframe gets a keyframe within seconds: the edge's request went
// through the cluster to the origin's publisher, which asked the encoder
// directly.
func TestEncoderOriginKeyframeOnEdgeRequest(t *testing.T) {
	cl := startCluster(t)
	originPort, edgePort := testenv.FreePort(t), testenv.FreePort(t)
	origin := startCaddy(t, fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	grace_period 1ns
	sdr_nats {
		url %s
		name origin
	}
	sdr_encoder {
		encoder cam {
			input pattern 320x240
			codec h264
			fps 30
			gop 1000
			backends libx264
			nats off
		}
	}
}
http://127.0.0.1:%d {
	handle /stream/ws {
		sdr_stream front {
			source encoder cam
			publish
		}
	}
}
`, cl.nodes[0].URL(), originPort), originPort)
	edge := startCaddy(t, caddyfile(edgePort, fmt.Sprintf("\t\turl %s\n\t\tname edge-1", cl.nodes[1].URL()),
		"\t\t\tsource nats video.front"), edgePort)
	// The encoder's first keyframe goes by before anyone watches.
	waitMetric(t, origin.AdminAddr, `caddy_sdr_stream_publish_frames_total{subject="video.front"}`,
		func(v float64) bool { return v >= 2 }, 20*time.Second)

	c, resp, err := websocket.DefaultDialer.Dial(edge.ws, nil)
	if err != nil {
		t.Fatalf("dialing %s: %v (%v)", edge.ws, err, resp)
	}
	defer c.Close()
	joined := time.Now()
	_ = c.SetReadDeadline(testwait.Deadline(20 * time.Second))
	for n := 0; n < 30; {
		h, _ := shmringtest.ReadVideo(t, c)
		if n == 0 {
			if !h.Keyframe() {
				t.Fatalf("first frame on the edge: frame_seq %d is not a keyframe", h.FrameSeq)
			}
			if h.FrameSeq <= 1 {
				t.Fatalf("first keyframe on the edge is frame_seq %d: the encoder's first, not one the edge asked for", h.FrameSeq)
			}
			// The GOP is 1000 frames: the encoder's own next keyframe is
			// frame_seq 1001, a requested one comes before.
			if h.FrameSeq > 1000 {
				t.Fatalf("first keyframe on the edge is frame_seq %d, the GOP's, after %s: not one the edge asked for", h.FrameSeq, time.Since(joined))
			}
		}
		n++
	}
	if v := metric(t, origin.AdminAddr, `caddy_sdr_stream_publish_idr_forwarded_total{subject="video.front"}`); v < 1 {
		t.Errorf("origin forwarded %g keyframe requests to the encoder", v)
	}
}
