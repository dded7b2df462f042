package recording

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// TestRecorderRestartLosesUnderASecond records a 60 fps stream with the
// default batch while the nats-server restarts (same port, same store)
// and stays down for a second of the stream: the frames missing from the
// recording, in the stream's own time (a frame is 1/60 s), come to less
// than a second.
func TestRecorderRestartLosesUnderASecond(t *testing.T) {
	t.Parallel()
	const fps = 60
	nc, down, up := restartableJetStream(t)
	r := startRecorder(t, nc, Config{IDRInterval: -1})
	src, detach := attachTestSource(t, r, "front", nil)

	// The stream: a frame every 1/60 s (the subject: a live producer's
	// pace), a keyframe a second.
	var pushed atomic.Int64
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Second / fps)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			f := testFrame(i, fps, 2000)
			f.Arrived = time.Now()
			src.push(f)
			pushed.Store(int64(i + 1))
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-stopped
	}()
	frames := func() uint64 { return r.Stats().Records[KindVideo] }
	testwait.For(t, "2 s of frames recorded", func() bool { return frames() >= 2*fps })
	down()
	// The server stays down for a second of the stream: what the client
	// publishes meanwhile waits in its reconnect buffer.
	from := pushed.Load()
	testwait.For(t, "1 s of frames pushed while the server is down", func() bool { return pushed.Load() >= from+fps })
	up()
	back := pushed.Load()
	testwait.For(t, "2 s of frames pushed after the reconnect", func() bool { return pushed.Load() >= back+2*fps })
	close(stop)
	<-stopped
	n := pushed.Load()
	detach() // publishes what was still gathering
	select {
	case <-r.JetStream().PublishAsyncComplete():
	case <-testwait.After(testwait.Default):
		t.Fatal("publishes not acknowledged")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	if _, err := Read(testCtx(t), js, ReadOptions{}, func(rec Record) error {
		seen[rec.Frame.Header.FrameSeq] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var missing []string
	lost := 0
	for seq := uint64(1); seq <= uint64(n); seq++ {
		if !seen[seq] {
			lost++
			if len(missing) < 20 {
				missing = append(missing, fmt.Sprint(seq))
			}
		}
	}
	t.Logf("%d frames pushed (%d after the reconnect), %d recorded, %d lost %v; %d publish errors", n, n-back, len(seen), lost, missing, r.Stats().Errors)
	if lost >= fps {
		t.Errorf("%d frames lost across the restart: %.2f s of video, want under 1 s", lost, float64(lost)/fps)
	}
}
