package hub

import (
	"runtime"
	"testing"

	"github.com/sdr-os/sdr-caddy/internal/frame"
)

// The log keeps a frame's payload as the source handed it on, shared with
// the source's own GOP (source.Fanout) and every other subscriber: a
// published keyframe of a megabyte costs the hub its framing, not a second
// megabyte. The frames are made before counting; sixteen of them keep the
// count clear of whatever the runtime allocates meanwhile. (Not parallel:
// the count is the process's.)
func TestPublishSharesPayload(t *testing.T) {
	const n, size = 16, 1 << 20
	h := New(Config{Capacity: 2 * n, JoinMaxReplayBytes: 2 * n * size})
	defer h.Close()
	frames := make([]frame.Frame, n)
	for i := range frames {
		frames[i] = mkFrame(uint64(i+1), i == 0, size)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, f := range frames {
		h.Publish(f)
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got >= size {
		t.Errorf("publishing %d frames of %d bytes allocated %d bytes: the log copies payloads", n, size, got)
	}
	// What the log holds for a joining client is those very bytes.
	c := h.Join()
	got := h.Next(&c, nil, 1<<30)
	if len(got) != n {
		t.Fatalf("a joining client got %d frames, want the GOP of %d", len(got), n)
	}
	for i, e := range got {
		if p := e.Body; len(p) != size || &p[0] != &frames[i].Payload[0] {
			t.Fatalf("frame %d: the log's payload is not the published one", i+1)
		}
	}
}
