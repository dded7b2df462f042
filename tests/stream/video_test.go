package stream

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// These tests feed the built binary from the Python writer (feeder), which
// writes the ring the way SDR_OS's simulator does, and read /stream/ws as
// the browser does.

// streamBody is a site body with one sdr_stream at /stream/* reading path.
func streamBody(path, extra string) string {
	return fmt.Sprintf(`	handle /stream/* {
		sdr_stream {
			source shm %s
			%s
		}
	}`, path, extra)
}

// idrRequests starts nats-server and returns its URL and the keyframe
// requests published on it.
func idrRequests(t *testing.T) (string, <-chan *nats.Msg) {
	t.Helper()
	url := testenv.StartNATS(t)
	return url, testenv.Collect(t, testenv.ConnectNATS(t, url), "command.genesis.force_idr")
}

func anyMsg(*nats.Msg) bool { return true }

// drain empties ch of what came so far.
func drain[T any](ch <-chan T) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// readUntil reads frames from ch until frame_seq seq of writer run run.
func readUntil(t *testing.T, ch <-chan video, run, seq uint64) {
	t.Helper()
	for {
		v := nextVideo(t, ch, fmt.Sprintf("frame %d of run %d", seq, run))
		if v.Run() == run && v.FrameSeq == seq {
			return
		}
	}
}

// A client that joins after the writer stopped (longer ago than the
// safety gate's hold) is sent nothing of the old video: it waits, showing
// that it waits for video, and starts at the first fresh keyframe; the
// deltas the writer resumes with do not reach it before that.
func TestStaleJoinWaitsForFreshVideo(t *testing.T) {
	f := startFeeder(t, 1<<20)
	s := startServer(t, "", streamBody(f.path, ""))
	f.do(t, map[string]any{"cmd": "write", "n": 30, "rate": 30, "key": "first"})
	s.waitHealth(t, "/stream/health", "the video to go stale (1 s)", func(h map[string]any) bool {
		age, ok := h["last_frame_age_ms"].(float64)
		return ok && age > 1000 && h["shm_seq"] == float64(30)
	})
	c := watch(dial(t, s.ws+"/stream/ws"))
	s.waitHealth(t, "/stream/health", "the client", func(h map[string]any) bool { return h["clients"] == float64(1) })
	f.do(t, map[string]any{"cmd": "write", "n": 10, "rate": 30, "key": "none"}) // the writer resumes
	r := f.do(t, map[string]any{"cmd": "write", "n": 3, "rate": 30, "key": "first"})
	v := nextVideo(t, c, "the first frame")
	if v.FrameSeq != num(t, r, "first") || !v.Keyframe() {
		t.Fatalf("a client joining stale video got frame %d (keyframe %t) first, want the fresh keyframe %d",
			v.FrameSeq, v.Keyframe(), num(t, r, "first"))
	}
}

// The simulator restarts and the reader misses the new run's first keyframe
// ("sequence went back from 30 to 2"): a keyframe is requested at once, no
// client gets the new run's deltas before its keyframe, and a client that
// joins meanwhile gets nothing of the old run.
func TestRestartNeverSplicesRuns(t *testing.T) {
	natsURL, idr := idrRequests(t)
	f := startFeeder(t, 1<<20)
	s := startServer(t, testenv.NATSOptions(natsURL), streamBody(f.path, "idr_coalesce 1"))
	a := watch(dial(t, s.ws+"/stream/ws"))
	testenv.ExpectMsg(t, idr, "keyframe request of the joining client", 10*time.Second, anyMsg)
	f.do(t, map[string]any{"cmd": "write", "n": 30, "rate": 60, "key": "first"})
	readUntil(t, a, 1, 30)
	drain(idr)

	f.do(t, map[string]any{"cmd": "restart"})
	f.do(t, map[string]any{"cmd": "write", "n": 10, "rate": 60, "key": "first", "hide_first": true})
	testenv.ExpectMsg(t, idr, "keyframe request for the restart", 10*time.Second, anyMsg)
	s.waitHealth(t, "/stream/health", "the reader to read the new run", func(h map[string]any) bool { return h["shm_seq"] == float64(10) })
	b := watch(dial(t, s.ws+"/stream/ws"))
	s.waitHealth(t, "/stream/health", "the second client", func(h map[string]any) bool { return h["clients"] == float64(2) })

	k := f.do(t, map[string]any{"cmd": "write", "n": 3, "rate": 60, "key": "first"})
	for name, c := range map[string]<-chan video{"the client streaming through the restart": a, "the client joining after it": b} {
		v := nextVideo(t, c, name)
		if v.Run() != 2 || v.FrameSeq != num(t, k, "first") || !v.Keyframe() {
			t.Errorf("%s got run %d frame %d (keyframe %t), want the new run's keyframe %d",
				name, v.Run(), v.FrameSeq, v.Keyframe(), num(t, k, "first"))
		}
	}
}

// An intra-refresh encoder sends one keyframe per run. A client joining
// seconds into it is not replayed the whole GOP in one burst (past about a
// second, or 2 MiB): a keyframe is requested and the client starts there.
func TestIntraRefreshJoinIsCapped(t *testing.T) {
	for _, c := range []struct {
		name  string
		n     int
		bytes int
	}{
		{"1.5 s of deltas", 151, 1000},
		{"3 MB of deltas", 31, 100_000},
	} {
		t.Run(c.name, func(t *testing.T) {
			natsURL, idr := idrRequests(t)
			f := startFeeder(t, 1<<20)
			// Not stale, however slow the machine: the replay caps alone.
			s := startServer(t, testenv.NATSOptions(natsURL), streamBody(f.path, "join_max_age 1m\n\t\t\tidr_coalesce 1"))
			f.do(t, map[string]any{"cmd": "write", "n": c.n, "rate": 100, "key": "first", "bytes": c.bytes})
			s.waitHealth(t, "/stream/health", "the reader to read the GOP", func(h map[string]any) bool { return h["shm_seq"] == float64(c.n) })
			drain(idr)
			v := watch(dial(t, s.ws+"/stream/ws"))
			testenv.ExpectMsg(t, idr, "keyframe request for the joining client", 10*time.Second, anyMsg)
			k := f.do(t, map[string]any{"cmd": "write", "n": 3, "rate": 100, "key": "first"})
			if first := nextVideo(t, v, "the first frame"); first.FrameSeq != num(t, k, "first") || !first.Keyframe() {
				t.Fatalf("joining client got frame %d (keyframe %t) first, want the requested keyframe %d, not the replayed GOP",
					first.FrameSeq, first.Keyframe(), num(t, k, "first"))
			}
		})
	}
}

// The writer pauses over a second, then writes a keyframe and, 33 ms later
// (30 fps), the next frame, which replaces it in the single slot. With a
// client connected that keyframe is read every time.
func TestFrameAfterPauseNeverLost(t *testing.T) {
	if testing.Short() {
		t.Skip("pauses 12 x 1.2 s")
	}
	f := startFeeder(t, 1<<20)
	s := startServer(t, "", streamBody(f.path, ""))
	c := watch(dial(t, s.ws+"/stream/ws"))
	s.waitHealth(t, "/stream/health", "the client", func(h map[string]any) bool { return h["clients"] == float64(1) })
	f.do(t, map[string]any{"cmd": "write", "n": 10, "rate": 30, "key": "first"})
	r := f.do(t, map[string]any{"cmd": "pauses", "times": 12, "pause": 1.2, "gap": 0.033})
	got := map[uint64]bool{}
	for last := num(t, r, "last"); ; {
		v := nextVideo(t, c, "frames")
		got[v.FrameSeq] = true
		if v.FrameSeq == last {
			break
		}
	}
	var lost []uint64
	keys := r["keys"].([]any)
	for _, k := range keys {
		if seq := uint64(k.(float64)); !got[seq] {
			lost = append(lost, seq)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("lost the keyframes that ended %d of %d pauses: frame_seq %v", len(lost), len(keys), lost)
	}
}

// A frame the reader missed (a gap) makes it ask for a keyframe at once;
// the frames after the gap are still forwarded (keyframe gating is off by
// default, as in the old service).
func TestGapRequestsKeyframe(t *testing.T) {
	natsURL, idr := idrRequests(t)
	f := startFeeder(t, 1<<20)
	s := startServer(t, testenv.NATSOptions(natsURL), streamBody(f.path, "idr_coalesce 1"))
	c := watch(dial(t, s.ws+"/stream/ws"))
	testenv.ExpectMsg(t, idr, "keyframe request of the joining client", 10*time.Second, anyMsg)
	f.do(t, map[string]any{"cmd": "write", "n": 5, "rate": 30, "key": "first"})
	readUntil(t, c, 1, 5)
	drain(idr)
	r := f.do(t, map[string]any{"cmd": "write", "n": 3, "rate": 30, "key": "none", "hide_first": true})
	testenv.ExpectMsg(t, idr, "keyframe request for the gap", 10*time.Second, anyMsg)
	if v := nextVideo(t, c, "the frame after the gap"); v.FrameSeq != num(t, r, "first")+1 {
		t.Fatalf("after the gap the client got frame %d, want %d forwarded", v.FrameSeq, num(t, r, "first")+1)
	}
}

// A commit whose frame_seq repeats the previous frame's is forwarded, as the
// old service did, unless its bytes are the same.
func TestRepeatedFrameSeqForwarded(t *testing.T) {
	f := startFeeder(t, 1<<20)
	s := startServer(t, "", streamBody(f.path, ""))
	c := watch(dial(t, s.ws+"/stream/ws"))
	s.waitHealth(t, "/stream/health", "the client", func(h map[string]any) bool { return h["clients"] == float64(1) })
	f.do(t, map[string]any{"cmd": "write", "n": 3, "rate": 30, "key": "first"})
	var first video
	for first.FrameSeq != 3 {
		first = nextVideo(t, c, "frame 3")
	}
	// One slot: each commit must be read before the next replaces it.
	commit := func(cmd map[string]any) map[string]any {
		r := f.do(t, cmd)
		seq := float64(num(t, r, "sequence"))
		s.waitHealth(t, "/stream/health", "the reader to read the commit", func(h map[string]any) bool { return h["shm_seq"] == seq })
		return r
	}
	commit(map[string]any{"cmd": "dup", "same": false}) // frame 3 again, other bytes
	commit(map[string]any{"cmd": "dup", "same": true})  // and once more, the same bytes
	f.do(t, map[string]any{"cmd": "write", "n": 1, "key": "none"})
	again := nextVideo(t, c, "the repeated frame_seq")
	if again.FrameSeq != 3 || bytes.Equal(again.Payload, first.Payload) {
		t.Fatalf("got frame %d next, want frame_seq 3 again with its other bytes", again.FrameSeq)
	}
	if v := nextVideo(t, c, "frame 4"); v.FrameSeq != 4 {
		t.Fatalf("got frame %d after the repeat, want 4: the commit of the same bytes is not forwarded", v.FrameSeq)
	}
}

// Caddyfile.example imports the stream into two sites, a handler each. The
// health JSON counts as the old service's single fan-out did: the clients
// of both sites, and the frames read while any client was connected;
// caddy_sdr_stream_frames_in_total counts each ring frame once.
func TestHealthCountsAcrossSites(t *testing.T) {
	f := startFeeder(t, 1<<20)
	edgePort, transportPort := testenv.FreePort(t), testenv.FreePort(t)
	cf := fmt.Sprintf(`{
	admin {$SDR_TEST_ADMIN}
	grace_period 1ns
}
(video_stream) {
	sdr_stream {
		source shm %s
	}
}
http://127.0.0.1:%d {
	handle /stream/ws {
		import video_stream
	}
}
http://127.0.0.1:%d {
	@transport path /stream/ws /health
	handle @transport {
		import video_stream
	}
}
`, f.path, edgePort, transportPort)
	cd := testenv.StartCaddy(t, cf, nil, nil)
	site := func(port int) *server {
		return &server{caddy: cd, port: port, base: fmt.Sprintf("http://127.0.0.1:%d", port), ws: fmt.Sprintf("ws://127.0.0.1:%d", port)}
	}
	edge, transport := site(edgePort), site(transportPort)
	write := func(n int, key string) {
		t.Helper()
		for i := range n {
			k := "none"
			if i == 0 {
				k = key
			}
			r := f.do(t, map[string]any{"cmd": "write", "n": 1, "key": k, "bytes": 1000})
			seq := float64(num(t, r, "sequence"))
			transport.waitHealth(t, "/health", "the reader to read the frame", func(h map[string]any) bool { return h["shm_seq"] == seq })
		}
	}
	write(5, "first") // no client anywhere
	if h := transport.health(t, "/health"); h["clients"] != float64(0) || h["frames_broadcast"] != float64(0) {
		t.Fatalf("health with no client %v, want 0 clients, 0 frames broadcast", h)
	}
	c := watch(dial(t, edge.ws+"/stream/ws"))
	transport.waitHealth(t, "/health", "the edge's client counted at the transport site", func(h map[string]any) bool { return h["clients"] == float64(1) })
	write(4, "none")
	readUntil(t, c, 1, 9)
	for _, h := range []map[string]any{transport.health(t, "/health"), edge.health(t, "/stream/ws")} {
		if h["clients"] != float64(1) || h["frames_broadcast"] != float64(4) || h["avg_frame_size_bytes"] != float64(1000) || h["shm_seq"] != float64(9) {
			t.Errorf("health %v, want 1 client and the 4 frames read while it was connected (1000 bytes each)", h)
		}
	}
	m, err := testenv.Metrics(cd.AdminAddr)
	if err != nil {
		t.Fatal(err)
	}
	if got := m[`caddy_sdr_stream_frames_in_total{stream="default"}`]; got != "9" {
		t.Errorf("caddy_sdr_stream_frames_in_total = %q, want 9 (each ring frame once, whatever the sites)", got)
	}
	if got := m[`caddy_sdr_stream_clients{stream="default"}`]; got != "1" {
		t.Errorf("caddy_sdr_stream_clients = %q, want 1", got)
	}
}
