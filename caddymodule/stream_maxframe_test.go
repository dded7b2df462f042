package caddymodule

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
)

// max_frame_size caps the frames sdr_stream forwards: a frame over it
// reaches no client and is counted in caddy_sdr_stream_ring_oversize_total;
// the frames around it do reach them.
func TestStreamMaxFrameSize(t *testing.T) {
	w := startStream(t, "max_frame_size 4KiB")
	c := streamDial(t, "ws://localhost:9080/stream/ws", nil)
	w.Write(t, true, 1000)
	if h, _ := shmringtest.ReadVideo(t, c); h.FrameSeq != 1 {
		t.Fatalf("first frame %d, want 1", h.FrameSeq)
	}
	w.Write(t, false, 5000) // over 4 KiB
	counted := fmt.Sprintf(`caddy_sdr_stream_ring_oversize_total{path=%q} 1`, w.Path)
	testwait.For(t, "the frame over max_frame_size to be counted", func() bool {
		return strings.Contains(adminMetrics(t), counted)
	})
	w.Write(t, false, 4096)
	if h, _ := shmringtest.ReadVideo(t, c); h.FrameSeq != 3 || h.Size != 4096 {
		t.Fatalf("frame after the dropped one: %d of %d bytes, want 3 of 4096", h.FrameSeq, h.Size)
	}
}
