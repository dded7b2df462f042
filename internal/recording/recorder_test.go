package recording

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/natstest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// testSource is a frame.Source whose frames the test hands on, on the
// test's goroutine, as a ring reader hands them on its own.
type testSource struct {
	mu  sync.Mutex
	fns map[int]func(frame.Frame)
	n   int
}

func (s *testSource) Subscribe(fn func(frame.Frame)) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fns == nil {
		s.fns = map[int]func(frame.Frame){}
	}
	id := s.n
	s.n++
	s.fns[id] = fn
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.fns, id)
	}
}

func (s *testSource) LastArrival() time.Time { return time.Time{} }

func (s *testSource) push(f frame.Frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, fn := range s.fns {
		fn(f)
	}
}

// keyframeCounter counts keyframe requests; block, when set, holds the
// requesting goroutine until it is closed.
type keyframeCounter struct {
	mu      sync.Mutex
	n       int
	entered chan struct{}
	block   chan struct{}
}

func (k *keyframeCounter) RequestKeyframe() {
	k.mu.Lock()
	k.n++
	first := k.n == 1
	k.mu.Unlock()
	if first && k.entered != nil {
		k.entered <- struct{}{}
	}
	if k.block != nil {
		<-k.block
	}
}

func (k *keyframeCounter) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.n
}

// attachTestSource records a new testSource as stream name of r, kr asked
// for keyframes; the stream is detached when the test ends, or earlier by
// detach.
func attachTestSource(t *testing.T, r *Recorder, name string, kr frame.KeyframeRequester) (src *testSource, detach func()) {
	t.Helper()
	src = &testSource{}
	detach, err := r.AttachStream(name, src, kr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(detach)
	return src, detach
}

func startRecorder(t *testing.T, nc *nats.Conn, cfg Config) *Recorder {
	t.Helper()
	r, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(func() { _ = r.Close() })
	testwait.For(t, "the recorder recording", func() bool { return r.Stats().State == StateRecording })
	return r
}

func ack(status, detail string) []byte {
	msg, err := wire.Telemetry("telemetry.command.ack", fmt.Appendf(nil, `{"action":"x","cmd_seq":null,"status":%q,"detail":%q}`, status, detail))
	if err != nil {
		panic(err)
	}
	return msg
}

// TestRecorderRecordsEverything records a stream of frames (one split in
// parts), telemetry, a published, a rejected and a gated command and a
// gate transition, and reads them back: every frame's bytes as the source
// produced them, the kinds in the order they happened.
func TestRecorderRecordsEverything(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 64<<10)
	kr := &keyframeCounter{}
	// Each frame is awaited: a short batch keeps the test short.
	r := startRecorder(t, nc, Config{Stream: StreamConfig{Memory: true, MaxAge: time.Hour}, IDRInterval: -1, Batch: 20 * time.Millisecond})
	src, _ := attachTestSource(t, r, "front", kr)
	// A second handler of the same stream shares the recording: its
	// detach leaves the first one's in place, and frames are recorded once.
	detach2, err := r.AttachStream("front", &testSource{}, kr)
	if err != nil {
		t.Fatal(err)
	}
	detach2()
	pub := natstest.Connect(t, natsServerOf(t, nc))

	var frames []frame.Frame
	waitRecords := func(k Kind, n uint64) {
		t.Helper()
		testwait.For(t, fmt.Sprintf("%d %s records", n, k), func() bool { return r.Stats().Records[k] >= n })
	}
	for i := range 20 {
		n := 500 + i
		if i == 7 {
			n = 200_000
		}
		f := testFrame(i, 10, n)
		f.Arrived = time.Now()
		frames = append(frames, f)
		src.push(f)
		waitRecords(KindVideo, uint64(i+1))
		switch i {
		case 3:
			if err := pub.Publish("telemetry.odom", []byte(`{"x":1}`)); err != nil {
				t.Fatal(err)
			}
			waitRecords(KindTelemetry, 1)
		case 5:
			r.RecordCommand("front", "127.0.0.1:1", []byte(`{"action":"set_cmd_vel","cmd_seq":1}`), nil)
			waitRecords(KindCommand, 1)
		case 6:
			r.RecordCommand("front", "127.0.0.1:1", []byte(`{"action":"fly"}`), ack("rejected", "action not allowed"))
			waitRecords(KindCommand, 2)
		case 8:
			if err := pub.Publish(GateSubject, []byte(`{"gated":true,"mode":"HOLD","stale_ms":1200}`)); err != nil {
				t.Fatal(err)
			}
			waitRecords(KindGate, 1)
		case 9:
			r.RecordCommand("front", "127.0.0.1:1", []byte(`{"action":"set_cmd_vel"}`), ack("gated", "video stale: safety gate HOLD"))
			waitRecords(KindCommand, 3)
		}
	}
	select {
	case <-r.JetStream().PublishAsyncComplete():
	case <-testwait.After(testwait.Default):
		t.Fatal("publishes not acknowledged")
	}

	from := frames[12].Arrived
	recs, st := readAll(t, testCtx(t), js, ReadOptions{})
	var kinds []string
	var video []int
	for _, rec := range recs {
		kinds = append(kinds, rec.Kind.String())
		if rec.Kind == KindVideo {
			i := int(rec.Frame.Header.FrameSeq) - 1
			video = append(video, i)
			if rec.Frame.Header != frames[i].Header || !bytes.Equal(rec.Frame.Payload, frames[i].Payload) || !rec.Time.Equal(frames[i].Arrived) {
				t.Errorf("frame %d differs from what the source produced", i)
			}
			continue
		}
		switch rec.Kind {
		case KindTelemetry:
			if rec.Subject != "telemetry.odom" || string(rec.Data) != `{"x":1}` {
				t.Errorf("telemetry %q %s", rec.Subject, rec.Data)
			}
		case KindGate:
			if rec.Subject != GateSubject || !strings.Contains(string(rec.Data), `"mode":"HOLD"`) {
				t.Errorf("gate %q %s", rec.Subject, rec.Data)
			}
		case KindCommand:
			var c CommandBody
			if err := json.Unmarshal(rec.Data, &c); err != nil {
				t.Fatal(err)
			}
			kinds[len(kinds)-1] += " " + c.Action + " " + c.Outcome
		}
	}
	want := "video video video video telemetry video video command set_cmd_vel published video command fly rejected " +
		"video video gate video command set_cmd_vel gated video"
	if got := strings.Join(kinds, " "); !strings.HasPrefix(got, want) {
		t.Errorf("records:\n%s\nwant them to begin\n%s", got, want)
	}
	if len(video) != 20 || st.Frames != 20 {
		t.Errorf("frames read %v", video)
	}
	// A window from frame 12: the keyframe 10 first.
	recs, _ = readAll(t, testCtx(t), js, ReadOptions{From: from, Kinds: []Kind{KindVideo}})
	if len(recs) == 0 || recs[0].Frame.Header.FrameSeq != 11 || !recs[0].Frame.Header.Keyframe() || recs[0].Time.After(from) {
		t.Errorf("window from frame 12 starts with %+v, want the keyframe 10 at or before From", recs[0].Frame.Header)
	}
	if s := r.Stats(); s.Errors != 0 || s.Dropped != [4]uint64{} || s.Frames["front"] != 20 {
		t.Errorf("stats %+v", s)
	}
}

// natsServerOf finds the embedded server behind nc: jetStream started it.
func natsServerOf(t *testing.T, nc *nats.Conn) *server.Server {
	t.Helper()
	v, ok := servers.Load(nc)
	if !ok {
		t.Fatal("no server for this connection")
	}
	return v.(*server.Server)
}

// TestRecorderFullQueueDropsWithoutBlocking stalls the recorder's writer
// (in a keyframe request it makes: the periodic IDR) and hands it more
// frames than its queue holds: the source's goroutine goes on, the
// surplus is dropped and counted, and what was queued is recorded once
// the writer runs again.
func TestRecorderFullQueueDropsWithoutBlocking(t *testing.T) {
	t.Parallel()
	nc, _ := jetStream(t, 0)
	kr := &keyframeCounter{entered: make(chan struct{}, 1), block: make(chan struct{})}
	var unblock sync.Once
	release := func() { unblock.Do(func() { close(kr.block) }) }
	r := startRecorder(t, nc, Config{Stream: StreamConfig{Memory: true}, Queue: 4, IDRInterval: time.Millisecond})
	src, _ := attachTestSource(t, r, "front", kr)
	defer release() // before detach, which waits for the writer
	testwait.Recv(t, kr.entered, "the periodic keyframe request")
	pushed := make(chan struct{}, 1)
	go func() {
		defer func() { pushed <- struct{}{} }()
		for i := range 10 {
			src.push(testFrame(i+1, 100, 100)) // no keyframe: the recorder keeps asking
		}
	}()
	testwait.Recv(t, pushed, "the source handing on 10 frames while the recorder is stalled")
	if s := r.Stats(); s.Dropped[KindVideo] != 6 || s.Records[KindVideo] != 0 {
		t.Errorf("stats %+v: want 6 frames dropped, none recorded yet", s)
	}
	release()
	testwait.For(t, "the 4 queued frames recorded", func() bool { return r.Stats().Records[KindVideo] == 4 })
	if kr.count() < 1 || r.Stats().KeyframeRequests < 1 {
		t.Errorf("no periodic keyframe request")
	}
}

// TestRecorderStopsWhenStorageIsFull fills a server whose JetStream may
// hold 256 KiB: the recording stops with state stopped, and later frames
// are dropped, not published.
func TestRecorderStopsWhenStorageIsFull(t *testing.T) {
	t.Parallel()
	s := natstest.Server(t, &server.Options{JetStream: true, StoreDir: t.TempDir(), JetStreamMaxMemory: 256 << 10})
	nc := natstest.Connect(t, s)
	var logs bytes.Buffer
	var logMu sync.Mutex
	lg := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), nil))
	r := startRecorder(t, nc, Config{Stream: StreamConfig{Memory: true}, Logger: lg, IDRInterval: -1})
	src, _ := attachTestSource(t, r, "front", nil)
	for i := 0; r.Stats().State == StateRecording; i++ {
		if i > 1000 {
			t.Fatal("1000 frames of 20 KiB fit in 256 KiB")
		}
		src.push(testFrame(i, 1, 20<<10))
		n := uint64(i + 1)
		testwait.For(t, "the frame published or dropped", func() bool {
			st := r.Stats()
			return st.Records[KindVideo]+st.Dropped[KindVideo] >= n
		})
		select {
		case <-r.JetStream().PublishAsyncComplete():
		case <-testwait.After(testwait.Default):
			t.Fatal("publishes not acknowledged")
		}
	}
	st := r.Stats()
	if st.State != StateStopped || st.Errors == 0 {
		t.Errorf("stats %+v: want stopped with errors", st)
	}
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	if strings.Count(out, "out of storage") != 1 {
		t.Errorf("log:\n%s\nwant one line saying JetStream is out of storage", out)
	}
	before := st.Records[KindVideo]
	src.push(testFrame(0, 1, 100))
	if st := r.Stats(); st.Records[KindVideo] != before {
		t.Errorf("a frame recorded after the stop")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// restartableJetStream starts a nats-server with JetStream on a port and a
// store of its own, and connects a client that reconnects every 20 ms for
// as long as it takes. down shuts the server down and waits until the
// client noticed; up starts it again on the same port and store and waits
// until the client is back.
func restartableJetStream(t *testing.T) (nc *nats.Conn, down, up func()) {
	t.Helper()
	dir := t.TempDir()
	port, err := harness.FreePort() // not from the kernel: the restart must find it free
	if err != nil {
		t.Fatal(err)
	}
	start := func() *server.Server {
		return natstest.Server(t, &server.Options{JetStream: true, StoreDir: dir, Port: port})
	}
	s := start()
	nc = natstest.Connect(t, s, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	down = func() {
		t.Helper()
		s.Shutdown()
		s.WaitForShutdown()
		testwait.For(t, "the connection noticing", func() bool { return !nc.IsConnected() })
	}
	up = func() {
		t.Helper()
		s = start()
		testwait.For(t, "the connection back", nc.IsConnected)
	}
	return nc, down, up
}

// TestRecorderResumesAfterJetStreamRestart records frames, restarts the
// nats-server (same port, same store), and records more: the frames after
// the restart are in the recording with those before it.
func TestRecorderResumesAfterJetStreamRestart(t *testing.T) {
	t.Parallel()
	nc, down, up := restartableJetStream(t)
	r := startRecorder(t, nc, Config{IDRInterval: -1})
	src, _ := attachTestSource(t, r, "front", nil)
	push := func(i int) {
		src.push(testFrame(i, 5, 1000))
		testwait.For(t, fmt.Sprintf("frame %d recorded", i), func() bool { return r.Stats().Records[KindVideo] >= uint64(i+1) })
	}
	for i := range 5 {
		push(i)
	}
	select {
	case <-r.JetStream().PublishAsyncComplete():
	case <-testwait.After(testwait.Default):
		t.Fatal("publishes not acknowledged")
	}
	down()
	up()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	testwait.For(t, "frames 5..9 recorded after the restart", func() bool {
		// Frames are pushed until JetStream (recovering its streams) takes
		// them: those it refused meanwhile are counted as errors.
		i := int(r.Stats().Records[KindVideo])
		if i < 10 {
			push(i)
		}
		select {
		case <-r.JetStream().PublishAsyncComplete():
		case <-testwait.After(testwait.Default):
			return false
		}
		recs = recs[:0]
		_, err := Read(testCtx(t), js, ReadOptions{}, func(rec Record) error {
			recs = append(recs, rec)
			return nil
		})
		return err == nil && len(recs) > 0 && recs[len(recs)-1].Frame.Header.FrameSeq >= 10
	})
	if recs[0].Frame.Header.FrameSeq != 1 {
		t.Errorf("the recording starts at frame %d, want 1 (from before the restart)", recs[0].Frame.Header.FrameSeq)
	}
}

// TestRecorderPublishesFramesInBursts hands the recorder frames one by
// one: none reaches JetStream before Batch has passed since the first came
// (the frames gather in the queue), then all of them come, each its own
// message, in order.
func TestRecorderPublishesFramesInBursts(t *testing.T) {
	t.Parallel()
	nc, _ := jetStream(t, 0)
	const batch = 2 * time.Second
	r := startRecorder(t, nc, Config{Stream: StreamConfig{Memory: true}, IDRInterval: -1, Batch: batch})
	sub, err := nc.SubscribeSync(Subject(DefaultPrefix, KindVideo, "front"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	src, _ := attachTestSource(t, r, "front", nil)
	first := time.Now()
	for i := range 5 {
		src.push(testFrame(i, 5, 1000))
	}
	for i := range 5 {
		m, err := sub.NextMsg(testwait.Timeout(testwait.Default))
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if i == 0 {
			if d := time.Since(first); d < batch {
				t.Errorf("the first frame was published %s after it came: want the batch (%s) gathered first", d, batch)
			}
		}
		if got := m.Header.Get(HeaderFrameSeq); got != fmt.Sprint(i+1) {
			t.Errorf("message %d: frame_seq %s, want %d", i, got, i+1)
		}
	}
	testwait.For(t, "5 frames counted", func() bool { return r.Stats().Records[KindVideo] == 5 })
}

// TestRecorderBurstsKeepEachFrame records bursts of several frames one
// after another, one of them too large for a message: the messages of a
// burst are built in memory the next burst builds in again, and every
// frame reads back as the source produced it.
func TestRecorderBurstsKeepEachFrame(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 64<<10)
	r := startRecorder(t, nc, Config{Stream: StreamConfig{Memory: true}, IDRInterval: -1, Batch: 300 * time.Millisecond})
	src, _ := attachTestSource(t, r, "front", nil)
	var frames []frame.Frame
	for burst := range 4 {
		for j := range 5 {
			i := len(frames)
			n := 3000 + 500*burst - 100*j // later bursts' frames overlap earlier ones' bytes
			if burst == 2 && j == 1 {
				n = 150_000 // split in parts
			}
			f := testFrame(i, 100, n)
			f.Arrived = time.Now()
			frames = append(frames, f)
			src.push(f)
		}
		testwait.For(t, fmt.Sprintf("burst %d recorded", burst), func() bool {
			return r.Stats().Records[KindVideo] == uint64(len(frames))
		})
	}
	select {
	case <-r.JetStream().PublishAsyncComplete():
	case <-testwait.After(testwait.Default):
		t.Fatal("publishes not acknowledged")
	}
	recs, _ := readAll(t, testCtx(t), js, ReadOptions{})
	if len(recs) != len(frames) {
		t.Fatalf("%d records, want %d", len(recs), len(frames))
	}
	for k, rec := range recs {
		i := int(rec.Frame.Header.FrameSeq) - 1
		if i != k || rec.Frame.Header != frames[i].Header || !bytes.Equal(rec.Frame.Payload, frames[i].Payload) || !rec.Time.Equal(frames[i].Arrived) {
			t.Errorf("record %d (frame_seq %d) differs from frame %d the source produced", k, rec.Frame.Header.FrameSeq, k)
		}
	}
}

// TestRecorderQueuesWhileSettingUp hands the recorder frames and a command
// before it has set up its stream: they wait in its queues and are
// recorded once it records, none dropped.
func TestRecorderQueuesWhileSettingUp(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 0)
	r, err := New(nc, Config{Stream: StreamConfig{Memory: true}, IDRInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	src, _ := attachTestSource(t, r, "front", nil)
	for i := range 5 {
		src.push(testFrame(i, 5, 1000))
	}
	r.RecordCommand("front", "client", []byte(`{"action":"estop"}`), nil)
	if st := r.Stats(); st.State != StateStarting || st.Dropped != [4]uint64{} {
		t.Fatalf("stats %+v before Start: want starting, nothing dropped", st)
	}
	r.Start()
	testwait.For(t, "the 5 frames and the command recorded", func() bool {
		st := r.Stats()
		return st.Records[KindVideo] == 5 && st.Records[KindCommand] == 1
	})
	if st := r.Stats(); st.Dropped != [4]uint64{} || st.Errors != 0 {
		t.Errorf("stats %+v: want nothing dropped or failed", st)
	}
	var frames int
	testwait.For(t, "the records stored", func() bool {
		frames = 0
		_, err := Read(testCtx(t), js, ReadOptions{Kinds: []Kind{KindVideo}}, func(rec Record) error {
			frames++
			return nil
		})
		return err == nil && frames == 5
	})
}

// TestRecorderCountsAFailedBurstWhole sends a burst of 5 frames after the
// recording's stream was deleted: only the burst's last message asks for
// an acknowledgement, and its failure counts all 5 as errors, once.
func TestRecorderCountsAFailedBurstWhole(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 0)
	r := startRecorder(t, nc, Config{Stream: StreamConfig{Memory: true}, IDRInterval: -1, Batch: 300 * time.Millisecond})
	src, _ := attachTestSource(t, r, "front", nil)
	src.push(testFrame(0, 5, 1000))
	testwait.For(t, "the first frame recorded", func() bool { return r.Stats().Records[KindVideo] == 1 })
	select {
	case <-r.JetStream().PublishAsyncComplete():
	case <-testwait.After(testwait.Default):
		t.Fatal("the first frame not acknowledged")
	}
	if err := js.DeleteStream(testCtx(t), DefaultStream); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		src.push(testFrame(i, 5, 1000))
	}
	testwait.For(t, "the burst published", func() bool { return r.Stats().Records[KindVideo] == 6 })
	if n := r.JetStream().PublishAsyncPending(); n > 1 {
		t.Errorf("%d acknowledgements awaited for one burst, want 1", n)
	}
	select {
	case <-r.JetStream().PublishAsyncComplete(): // JetStream's "no responders", after the client's retries
	case <-testwait.After(testwait.Default):
		t.Fatal("the burst's acknowledgement neither came nor failed")
	}
	testwait.For(t, "the failed burst counted", func() bool { return r.Stats().Errors >= 5 })
	if st := r.Stats(); st.Errors != 5 {
		t.Errorf("%d errors, want 5: every message of the failed burst, once", st.Errors)
	}
}

// TestRecorderDetachPublishesGatheredFrames detaches a stream while its
// frames wait for the batch to fill: they are published, not lost.
func TestRecorderDetachPublishesGatheredFrames(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 0)
	r := startRecorder(t, nc, Config{Stream: StreamConfig{Memory: true}, IDRInterval: -1, Batch: MaxStoreDelay - time.Second})
	src, detach := attachTestSource(t, r, "front", nil)
	for i := range 3 {
		src.push(testFrame(i, 3, 1000))
	}
	detach()
	if got := r.Stats().Records[KindVideo]; got != 3 {
		t.Errorf("%d frames published by the detach, want 3", got)
	}
	testwait.For(t, "3 frames stored", func() bool {
		s, err := js.Stream(testCtx(t), DefaultStream)
		if err != nil {
			return false
		}
		info, err := s.Info(testCtx(t))
		return err == nil && info.State.Msgs == 3
	})
}

// TestNewRefusesBatchBeyondStoreDelay: a batch the reader's MaxStoreDelay
// does not cover is refused with what to change.
func TestNewRefusesBatchBeyondStoreDelay(t *testing.T) {
	t.Parallel()
	nc, _ := jetStream(t, 0)
	_, err := New(nc, Config{Batch: MaxStoreDelay})
	if err == nil || !strings.Contains(err.Error(), "must be below") {
		t.Fatalf("New with batch %s: %v, want a refusal", MaxStoreDelay, err)
	}
}

// TestRecorderPauseResume pauses the recorder between two frames and two
// commands: what comes while it is paused is not recorded and not counted
// as dropped. After Resume, the recorder asks for a keyframe and the
// stream's recording goes on at it (the delta before it would not decode
// after the gap).
func TestRecorderPauseResume(t *testing.T) {
	t.Parallel()
	nc, js := jetStream(t, 0)
	r := startRecorder(t, nc, Config{Stream: StreamConfig{Memory: true}, IDRInterval: -1})
	kr := &keyframeCounter{entered: make(chan struct{}, 1)}
	src, _ := attachTestSource(t, r, "front", kr)
	cmd := func(seq int) {
		r.RecordCommand("front", "127.0.0.1:1", fmt.Appendf(nil, `{"action":"set_cmd_vel","cmd_seq":%d}`, seq), nil)
	}
	src.push(testFrame(0, 10, 500))
	cmd(1)
	testwait.For(t, "frame 1 and command 1 recorded", func() bool {
		s := r.Stats()
		return s.Records[KindVideo] == 1 && s.Records[KindCommand] == 1
	})
	if !r.Pause() || r.Pause() {
		t.Fatal("Pause: want true, then false once paused")
	}
	if s := r.Stats().State; s != StatePaused {
		t.Fatalf("state %s while paused", s)
	}
	// The source and the command path hand records on synchronously:
	// once push and RecordCommand return, the recorder has skipped them.
	for i := 1; i < 5; i++ {
		src.push(testFrame(i, 10, 500))
	}
	cmd(2)
	if !r.Resume() || r.Resume() {
		t.Fatal("Resume: want true, then false once recording")
	}
	if s := r.Stats().State; s != StateRecording {
		t.Fatalf("state %s after Resume", s)
	}
	testwait.Recv(t, kr.entered, "the keyframe request after Resume")
	src.push(testFrame(5, 10, 500)) // a delta: skipped
	src.push(testFrame(10, 10, 500))
	src.push(testFrame(11, 10, 500))
	cmd(3)
	testwait.For(t, "frames 11 and 12 and command 3 recorded", func() bool {
		s := r.Stats()
		return s.Records[KindVideo] >= 3 && s.Records[KindCommand] >= 2
	})
	select {
	case <-r.JetStream().PublishAsyncComplete():
	case <-testwait.After(testwait.Default):
		t.Fatal("publishes not acknowledged")
	}
	// Video and commands go through queues of their own: compare each
	// kind's records in their order.
	recs, _ := readAll(t, testCtx(t), js, ReadOptions{})
	var frames, cmds []string
	for _, rec := range recs {
		switch rec.Kind {
		case KindVideo:
			frames = append(frames, fmt.Sprint(rec.Frame.Header.FrameSeq))
		case KindCommand:
			var c CommandBody
			if err := json.Unmarshal(rec.Data, &c); err != nil {
				t.Fatal(err)
			}
			var body struct {
				Seq int `json:"cmd_seq"`
			}
			_ = json.Unmarshal(c.Payload, &body)
			cmds = append(cmds, fmt.Sprint(body.Seq))
		}
	}
	if g, want := strings.Join(frames, " "), "1 11 12"; g != want {
		t.Errorf("frames recorded: %s, want %s", g, want)
	}
	if g, want := strings.Join(cmds, " "), "1 3"; g != want {
		t.Errorf("commands recorded: %s, want %s", g, want)
	}
	if s := r.Stats(); s.Dropped != [4]uint64{} || s.Errors != 0 || s.Frames["front"] != 3 || s.KeyframeRequests != 1 {
		t.Errorf("stats %+v: want nothing dropped while paused", s)
	}
}
