package natsvideo

import (
	"bytes"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/natstest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// pushSource is a frame.Source the test feeds by hand.
type pushSource struct {
	mu      sync.Mutex
	arrival time.Time
	fns     map[int]func(frame.Frame)
	n       int
	seq     uint64
}

func newPushSource() *pushSource { return &pushSource{fns: map[int]func(frame.Frame){}} }

func (p *pushSource) Subscribe(fn func(frame.Frame)) func() {
	p.mu.Lock()
	id := p.n
	p.n++
	p.fns[id] = fn
	p.mu.Unlock()
	return func() { p.mu.Lock(); delete(p.fns, id); p.mu.Unlock() }
}

func (p *pushSource) LastArrival() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.arrival
}

// read stamps LastArrival as a reader that holds the frame back does.
func (p *pushSource) read() {
	p.mu.Lock()
	p.arrival = time.Now()
	p.mu.Unlock()
}

// push sends a frame with the next frame_seq (skip > 0 leaves a gap) and a
// payload of n bytes that depends on the sequence.
func (p *pushSource) push(key bool, n int, skip uint64) frame.Frame {
	return p.pushFrame(key, n, skip, false)
}

// pushFrame is push with the source's discontinuity flag.
func (p *pushSource) pushFrame(key bool, n int, skip uint64, disc bool) frame.Frame {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq += 1 + skip
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = byte(int(p.seq) + i*7)
	}
	h := shmring.Header{FrameID: uint64(time.Now().UnixNano()), FrameSeq: p.seq, Size: uint32(n),
		Codec: shmring.CodecH264, CRC32: shmring.Checksum(payload)}
	if key {
		h.Flags = shmring.FlagKeyframe
	}
	f := frame.Frame{Header: h, Payload: payload, Arrived: time.Now(), Discontinuity: disc}
	p.arrival = f.Arrived
	for _, fn := range p.fns {
		fn(f)
	}
	return f
}

// sink collects the frames a Source delivers.
type sink struct {
	mu     sync.Mutex
	frames []frame.Frame
	got    chan struct{}
}

func newSink() *sink { return &sink{got: make(chan struct{}, 4096)} }

func (s *sink) fn(f frame.Frame) {
	s.mu.Lock()
	s.frames = append(s.frames, f)
	s.mu.Unlock()
	select {
	case s.got <- struct{}{}:
	default:
	}
}

func (s *sink) wait(t *testing.T, n int) []frame.Frame {
	t.Helper()
	deadline := testwait.After(testwait.Default)
	for {
		s.mu.Lock()
		if len(s.frames) >= n {
			out := append([]frame.Frame(nil), s.frames...)
			s.mu.Unlock()
			return out
		}
		s.mu.Unlock()
		select {
		case <-s.got:
		case <-deadline:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("got %d frames, want %d", len(s.frames), n)
		}
	}
}

// counter counts keyframe requests.
type counter struct{ n atomic.Int64 }

func (c *counter) RequestKeyframe() { c.n.Add(1) }

func sameFrame(t *testing.T, got, want frame.Frame) {
	t.Helper()
	if !bytes.Equal(got.Header.Bytes(), want.Header.Bytes()) || !bytes.Equal(got.Payload, want.Payload) {
		t.Fatalf("frame_seq %d differs from frame_seq %d sent (%d vs %d payload bytes)",
			got.Header.FrameSeq, want.Header.FrameSeq, len(got.Payload), len(want.Payload))
	}
}

// originAndEdge starts a nats-server with opts and connects an origin and an
// edge client to it.
func originAndEdge(t *testing.T, opts *server.Options) (origin, edge *nats.Conn) {
	t.Helper()
	s := natstest.Server(t, opts)
	return natstest.Connect(t, s), natstest.Connect(t, s)
}

// startPublisher publishes src on nc with cfg and closes the Publisher when
// the test ends.
func startPublisher(t *testing.T, nc *nats.Conn, src frame.Source, cfg PublisherConfig) *Publisher {
	t.Helper()
	pub, err := NewPublisher(nc, src, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })
	return pub
}

// openEdge opens a Source on nc with cfg and closes it when the test ends.
func openEdge(t *testing.T, nc *nats.Conn, cfg SourceConfig) *Source {
	t.Helper()
	es, err := OpenSource(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { es.Close() })
	return es
}

// startLink publishes a new pushSource on origin with pcfg and opens a Source
// for it on edge with scfg.
func startLink(t *testing.T, origin, edge *nats.Conn, pcfg PublisherConfig, scfg SourceConfig) (*pushSource, *Publisher, *Source) {
	t.Helper()
	src := newPushSource()
	pub := startPublisher(t, origin, src, pcfg)
	return src, pub, openEdge(t, edge, scfg)
}

// subscribeSink subscribes a new sink to es.
func subscribeSink(es *Source) *sink {
	k := newSink()
	es.Subscribe(k.fn)
	return k
}

// poll waits until done holds, failing the test with msg() when it does
// not within testwait.Timeout(testwait.Default).
func poll(t *testing.T, done func() bool, msg func() string) {
	t.Helper()
	if !testwait.Until(testwait.Default, done) {
		t.Fatal(msg())
	}
}

func TestFramesArriveByteIdentical(t *testing.T) {
	t.Parallel()
	origin, edge := originAndEdge(t, nil)
	src, pub, es := startLink(t, origin, edge, PublisherConfig{Subject: "video.front"}, SourceConfig{Subject: "video.front"})
	k := subscribeSink(es)
	if err := edge.Flush(); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	var sent []frame.Frame
	for i := range 20 {
		sent = append(sent, src.push(i%10 == 0, 1000+i*100, 0))
	}
	got := k.wait(t, 20)
	for i := range sent {
		sameFrame(t, got[i], sent[i])
		if got[i].Arrived.Before(before) || got[i].Discontinuity {
			t.Fatalf("frame %d: arrived %v (before %v), discontinuity %t", i, got[i].Arrived, before, got[i].Discontinuity)
		}
	}
	if la := es.LastArrival(); la.Before(got[19].Arrived) {
		t.Fatalf("LastArrival %v before the last frame's arrival %v", la, got[19].Arrived)
	}
	st := es.Stats()
	if st.Frames != 20 || st.Gaps != 0 || st.Malformed != 0 || st.LastSeq != 20 {
		t.Fatalf("edge stats %+v", st)
	}
	// The publisher counts a frame after its last publish returns: the edge
	// can have it first.
	testwait.For(t, "the publisher to count 20 frames", func() bool { return pub.Stats().Frames >= 20 })
	if ps := pub.Stats(); ps.Frames != 20 || ps.SplitFrames != 0 {
		t.Fatalf("publisher stats %+v", ps)
	}
}

func TestFramesLargerThanMaxPayloadAreSplit(t *testing.T) {
	t.Parallel()
	origin, edge := originAndEdge(t, &server.Options{MaxPayload: 4096})
	src, pub, es := startLink(t, origin, edge, PublisherConfig{Subject: "video.big"}, SourceConfig{Subject: "video.big"})
	k := subscribeSink(es)
	_ = edge.Flush()
	sizes := []int{100_000, 4096 - 32, 4096 - 31, 5000, 12_345}
	var sent []frame.Frame
	for i, n := range sizes {
		sent = append(sent, src.push(i == 0, n, 0))
	}
	got := k.wait(t, len(sizes))
	for i := range sent {
		sameFrame(t, got[i], sent[i])
	}
	// The publisher counts a frame after its last part's publish returns:
	// the edge can have it first.
	testwait.For(t, "the publisher to count every frame", func() bool { return pub.Stats().Frames >= uint64(len(sizes)) })
	ps := pub.Stats()
	if ps.SplitFrames != 4 || ps.Errors != 0 {
		t.Fatalf("publisher stats %+v: want 4 split frames", ps)
	}
	if st := es.Stats(); st.PartsDropped != 0 || st.Malformed != 0 || st.Messages != ps.Parts+1 {
		t.Fatalf("edge stats %+v, publisher %+v", st, ps)
	}
}

func TestGapHeldUntilKeyframe(t *testing.T) {
	t.Parallel()
	origin, edge := originAndEdge(t, nil)
	req := &counter{}
	src, pub, es := startLink(t, origin, edge,
		PublisherConfig{Subject: "video.gap", Requester: req, IDRCoalesce: time.Millisecond},
		SourceConfig{Subject: "video.gap", IDRCoalesce: time.Millisecond})
	k := subscribeSink(es)
	_ = edge.Flush()

	src.push(false, 100, 0) // before the first keyframe: held back
	src.push(true, 100, 0)
	src.push(false, 100, 0)
	src.push(false, 100, 3) // 3 frames missed
	src.push(false, 100, 0)
	key := src.push(true, 100, 0)
	after := src.push(false, 100, 0)
	got := k.wait(t, 4)
	if len(got) != 4 {
		t.Fatalf("got %d frames, want 4", len(got))
	}
	if got[0].Header.FrameSeq != 2 || got[1].Header.FrameSeq != 3 || got[0].Discontinuity {
		t.Fatalf("first frames: seq %d %d", got[0].Header.FrameSeq, got[1].Header.FrameSeq)
	}
	sameFrame(t, got[2], key)
	sameFrame(t, got[3], after)
	if !got[2].Discontinuity || got[3].Discontinuity {
		t.Fatalf("discontinuity flags %t %t: want the keyframe after the gap marked", got[2].Discontinuity, got[3].Discontinuity)
	}
	st := es.Stats()
	if st.Gaps != 3 || st.KeyframeWaits != 3 || st.Restarts != 0 {
		t.Fatalf("edge stats %+v: want 3 gaps, 3 frames held", st)
	}
	// The held frames asked the origin for a keyframe through NATS.
	poll(t, func() bool { return req.n.Load() != 0 }, func() string {
		return fmt.Sprintf("no keyframe request reached the origin; edge sent %d, origin received %d", es.Stats().IDRRequests, pub.Stats().IDRReceived)
	})
}

// TestOriginGapPassedOn: a gap the origin's own reader had (the source
// marks the frame) is announced with Sdr-Prev; the edge lost nothing in
// transit, so it passes the deltas on as the origin's clients get them
// instead of holding them for a keyframe. A loss between origin and edge
// (here: a frame the publisher drops while its queue is stopped) is not
// announced and is gated.
func TestOriginGapPassedOn(t *testing.T) {
	t.Parallel()
	origin, edge := originAndEdge(t, &server.Options{MaxPayload: 4096})
	src, _, es := startLink(t, origin, edge, PublisherConfig{Subject: "video.up"}, SourceConfig{Subject: "video.up"})
	k := subscribeSink(es)
	_ = edge.Flush()
	src.push(true, 100, 0)
	src.push(false, 100, 0)
	up := src.pushFrame(false, 100, 2, true)     // the origin missed 2 frames
	big := src.pushFrame(false, 10_000, 0, true) // a restart-like mark on a split frame
	got := k.wait(t, 4)
	sameFrame(t, got[2], up)
	sameFrame(t, got[3], big)
	if !got[2].Discontinuity || !got[3].Discontinuity {
		t.Fatalf("origin discontinuities not passed on: %t %t", got[2].Discontinuity, got[3].Discontinuity)
	}
	if st := es.Stats(); st.Upstream != 2 || st.KeyframeWaits != 0 || st.Gaps != 2 {
		t.Fatalf("edge stats %+v: want 2 announced discontinuities, nothing held", st)
	}
	// A loss in transit: the edge misses frame_seq+1 without an announcement.
	m := &nats.Msg{Subject: "video.up", Data: nil}
	h := shmring.Header{FrameSeq: big.Header.FrameSeq + 2, Size: 1, Codec: shmring.CodecH264}
	m.Data = append(h.Bytes(), 7)
	if err := origin.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	_ = origin.Flush()
	poll(t, func() bool { return es.Stats().KeyframeWaits == 1 }, func() string {
		return fmt.Sprintf("edge stats %+v: the unannounced gap was not gated", es.Stats())
	})
}

func TestRestartAndUngated(t *testing.T) {
	t.Parallel()
	origin, edge := originAndEdge(t, nil)
	src, _, es := startLink(t, origin, edge, PublisherConfig{Subject: "video.r"}, SourceConfig{Subject: "video.r", NoKeyframeGating: true})
	k := subscribeSink(es)
	_ = edge.Flush()
	src.push(true, 10, 0)
	src.push(false, 10, 0)
	src.mu.Lock()
	src.seq = 0 // the writer restarted
	src.mu.Unlock()
	src.push(false, 10, 0)
	src.push(false, 10, 5)
	got := k.wait(t, 4)
	if !got[2].Discontinuity || !got[3].Discontinuity || got[1].Discontinuity {
		t.Fatalf("discontinuities %t %t %t", got[1].Discontinuity, got[2].Discontinuity, got[3].Discontinuity)
	}
	if st := es.Stats(); st.Restarts != 1 || st.Gaps != 5 || st.KeyframeWaits != 0 {
		t.Fatalf("edge stats %+v", st)
	}
}

func TestLateSubscriberGetsCurrentGOP(t *testing.T) {
	t.Parallel()
	origin, edge := originAndEdge(t, nil)
	src, _, es := startLink(t, origin, edge, PublisherConfig{Subject: "video.gop"}, SourceConfig{Subject: "video.gop"})
	first := subscribeSink(es)
	_ = edge.Flush()
	src.push(true, 10, 0)
	src.push(false, 10, 0)
	key := src.push(true, 10, 0)
	d := src.push(false, 10, 0)
	first.wait(t, 4)
	late := newSink()
	cancel := es.Subscribe(late.fn)
	got := late.wait(t, 2)
	sameFrame(t, got[0], key)
	sameFrame(t, got[1], d)
	cancel()
	src.push(false, 10, 0)
	first.wait(t, 5)
	if n := len(late.wait(t, 2)); n != 2 {
		t.Fatalf("cancelled subscriber got %d frames", n)
	}
}

func TestMalformedMessagesAreCounted(t *testing.T) {
	t.Parallel()
	origin, edge := originAndEdge(t, nil)
	es := openEdge(t, edge, SourceConfig{Subject: "video.bad"})
	k := subscribeSink(es)
	_ = edge.Flush()

	good := keyframeMsg
	pub := func(data []byte, part string) { publishPart(t, origin, "video.bad", data, part) }
	pub([]byte("short"), "")  // no header
	pub(good(1, 10)[:40], "") // size mismatch
	bad := good(2, 10)
	bad[40] ^= 0xff
	pub(bad, "")               // CRC mismatch
	pub(good(3, 10), "x")      // part offset not a number
	pub(good(4, 10)[:36], "5") // part that does not start at 0
	huge := shmring.Header{FrameSeq: 5, Size: 1 << 30}
	pub(append(huge.Bytes(), 1, 2), "0") // claims 1 GiB
	empty := shmring.Header{FrameSeq: 6, Flags: shmring.FlagKeyframe}
	pub(empty.Bytes(), "") // a frame with no payload carries no picture
	pub(good(7, 10), "")
	got := k.wait(t, 1)
	if got[0].Header.FrameSeq != 7 {
		t.Fatalf("delivered frame_seq %d, want 7", got[0].Header.FrameSeq)
	}
	st := es.Stats()
	if st.Malformed != 5 || st.CRCFailures != 1 || st.PartsDropped != 1 || st.Frames != 1 {
		t.Fatalf("edge stats %+v", st)
	}
}

func TestIDRRequestsCoalescedAcrossEdges(t *testing.T) {
	t.Parallel()
	s := natstest.Server(t, nil)
	origin := natstest.Connect(t, s)
	req := &counter{}
	pub := startPublisher(t, origin, newPushSource(), PublisherConfig{Subject: "video.idr", Requester: req, IDRCoalesce: time.Hour})
	_ = origin.Flush()
	var edges []*Source
	for range 5 {
		edges = append(edges, openEdge(t, natstest.Connect(t, s), SourceConfig{Subject: "video.idr", IDRCoalesce: time.Hour}))
	}
	for range 10 {
		for _, e := range edges {
			e.RequestKeyframe()
		}
	}
	// Each edge's connection has sent what it will (Flush: the server has
	// them, queued for the origin); then one more request, from the
	// origin's connection, is the last the origin receives.
	for _, e := range edges {
		if err := e.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := origin.Publish(IDRSubject("video.idr"), []byte(IDRBody)); err != nil {
		t.Fatal(err)
	}
	poll(t, func() bool { return pub.Stats().IDRReceived >= 6 }, func() string {
		return fmt.Sprintf("origin received %d keyframe requests, want 5 (one per edge) and the last one", pub.Stats().IDRReceived)
	})
	if got := pub.Stats().IDRReceived; got != 6 {
		t.Fatalf("origin received %d requests from 5 edges asking 10 times each and one more, want 6", got)
	}
	if req.n.Load() != 1 {
		t.Fatalf("producer asked %d times, want 1", req.n.Load())
	}
}

func TestDefaultRequesterPublishesForceIDR(t *testing.T) {
	t.Parallel()
	origin, sim := originAndEdge(t, nil)
	ch := make(chan *nats.Msg, 4)
	if _, err := sim.ChanSubscribe(ForceIDRSubject, ch); err != nil {
		t.Fatal(err)
	}
	_ = sim.Flush()
	pub := startPublisher(t, origin, newPushSource(), PublisherConfig{Subject: "video.sim"})
	pub.RequestKeyframe()
	select {
	case m := <-ch:
		if string(m.Data) != IDRBody {
			t.Fatalf("force_idr body %q", m.Data)
		}
	case <-testwait.After(testwait.Default):
		t.Fatal("no command.genesis.force_idr")
	}
}

func TestPublisherDropsWhileDisconnected(t *testing.T) {
	t.Parallel()
	s := natstest.Server(t, nil)
	origin := natstest.Connect(t, s, nats.MaxReconnects(-1), nats.ReconnectWait(time.Hour))
	src := newPushSource()
	pub := startPublisher(t, origin, src, PublisherConfig{Subject: "video.down"})
	s.Shutdown()
	poll(t, func() bool { return !origin.IsConnected() }, func() string {
		return "still connected long after the server shut down"
	})
	for range 5 {
		src.push(true, 10, 0)
	}
	poll(t, func() bool { return pub.Stats().DroppedDisconnected == 5 }, func() string {
		return fmt.Sprintf("publisher stats %+v: want 5 frames dropped while disconnected", pub.Stats())
	})
}

// TestThroughClusterAndLeaf runs a 3-node cluster (routes) with a leaf
// server hanging off the third node: frames published on the first node
// reach a source on the leaf, and its keyframe requests reach the origin.
func TestThroughClusterAndLeaf(t *testing.T) {
	t.Parallel()
	var nodes []*server.Server
	var first *server.Server
	leafPort := testenv.FreePort(t)
	for i := range 3 {
		o := &server.Options{ServerName: fmt.Sprintf("n%d", i)}
		o.Cluster.Name, o.Cluster.Host, o.Cluster.Port = "sdr", "127.0.0.1", -1
		if i == 2 {
			o.LeafNode.Host, o.LeafNode.Port = "127.0.0.1", leafPort
		}
		if first != nil {
			u, _ := url.Parse(fmt.Sprintf("nats://127.0.0.1:%d", first.ClusterAddr().Port))
			o.Routes = []*url.URL{u}
		}
		n := natstest.Server(t, o)
		if first == nil {
			first = n
		}
		nodes = append(nodes, n)
	}
	lu, _ := url.Parse(fmt.Sprintf("nats-leaf://127.0.0.1:%d", leafPort))
	leaf := natstest.Server(t, &server.Options{ServerName: "leaf", LeafNode: server.LeafNodeOpts{Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{lu}}}}})
	poll(t, func() bool { return nodes[0].NumRoutes() >= 2 && nodes[2].NumLeafNodes() >= 1 }, func() string {
		return fmt.Sprintf("cluster not formed: routes %d, leafs %d", nodes[0].NumRoutes(), nodes[2].NumLeafNodes())
	})
	origin, edge := natstest.Connect(t, nodes[0]), natstest.Connect(t, leaf)
	req := &counter{}
	src, _, es := startLink(t, origin, edge, PublisherConfig{Subject: "video.far", Requester: req}, SourceConfig{Subject: "video.far"})
	k := subscribeSink(es)
	// Interest propagates asynchronously, both ways: the leaf's in the
	// video subject to the origin's node, the publisher's in keyframe
	// requests to the leaf.
	poll(t, func() bool {
		return nodes[0].GlobalAccount().SubscriptionInterest("video.far") &&
			leaf.GlobalAccount().SubscriptionInterest(IDRSubject("video.far"))
	}, func() string { return "the subscriptions did not cross the cluster and the leaf" })
	var sent []frame.Frame
	sent = append(sent, src.push(true, 2000, 0))
	for range 5 {
		sent = append(sent, src.push(false, 3000, 0))
	}
	got := k.wait(t, len(sent))
	for i := range sent {
		sameFrame(t, got[i], sent[i])
	}
	es.RequestKeyframe()
	poll(t, func() bool { return req.n.Load() != 0 }, func() string {
		return "the leaf's keyframe request did not reach the origin"
	})
}

func TestValidateSubject(t *testing.T) {
	t.Parallel()
	for s, ok := range map[string]bool{
		"video.front": true, "video": true, "a.b.c": true,
		"": false, "video.*": false, "video.>": false, "video..x": false, ".video": false,
		"video front": false, "video.front.force_idr": false,
	} {
		if err := ValidateSubject(s); (err == nil) != ok {
			t.Errorf("ValidateSubject(%q) = %v, want ok=%t", s, err, ok)
		}
	}
}

// TestSlowEdgeDropsAndResumesAtKeyframe: an edge whose delivery stalls
// lets at most PendingMessages wait; the client library drops the rest,
// and the edge counts the gap and resumes at the next keyframe.
func TestSlowEdgeDropsAndResumesAtKeyframe(t *testing.T) {
	t.Parallel()
	s := natstest.Server(t, nil)
	origin := natstest.Connect(t, s)
	edge := natstest.Connect(t, s, nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	src, pub, es := startLink(t, origin, edge, PublisherConfig{Subject: "video.slow", Queue: 4096}, SourceConfig{Subject: "video.slow"})
	release := make(chan struct{})
	var once sync.Once
	k := newSink()
	es.Subscribe(func(f frame.Frame) {
		once.Do(func() { <-release }) // the first frame stalls the edge
		k.fn(f)
	})
	_ = edge.Flush()
	src.push(true, 100, 0)
	for range 3 * PendingMessages {
		src.push(false, 100, 0)
	}
	_ = origin.Flush()
	poll(t, func() bool { return pub.Stats().Frames >= uint64(3*PendingMessages+1) }, func() string {
		return fmt.Sprintf("publisher stats %+v", pub.Stats())
	})
	_ = origin.Flush()
	// Every message reached the edge's connection (InMsgs counts those the
	// client library then drops as well) before the stall ends.
	poll(t, func() bool { return edge.Stats().InMsgs >= uint64(3*PendingMessages+1) }, func() string {
		return fmt.Sprintf("the edge's connection received %d of %d messages", edge.Stats().InMsgs, 3*PendingMessages+1)
	})
	close(release)
	// Once the edge has handed on what waited, a keyframe and a delta get
	// through.
	poll(t, func() bool { n, _, _ := es.sub.Pending(); return n == 0 }, func() string {
		n, _, err := es.sub.Pending()
		return fmt.Sprintf("%d messages still wait at the edge (%v)", n, err)
	})
	src.push(true, 100, 0)
	after := src.push(false, 100, 0)
	poll(t, func() bool {
		got := k.wait(t, 1)
		return got[len(got)-1].Header.FrameSeq == after.Header.FrameSeq
	}, func() string { return fmt.Sprintf("the frames after the stall did not arrive; stats %+v", es.Stats()) })
	got := k.wait(t, 1)
	st := es.Stats()
	if st.Gaps == 0 {
		t.Fatalf("edge stats %+v: no frames missed after a stall of %d messages", st, 3*PendingMessages)
	}
	// The backlog that waited arrives without a hole; the first frame after
	// the hole is a keyframe marked as a discontinuity.
	i := 1
	for i < len(got) && got[i].Header.FrameSeq == got[i-1].Header.FrameSeq+1 {
		i++
	}
	if i > PendingMessages+2 {
		t.Fatalf("%d frames delivered in order after the stall, more than the %d that may wait", i, PendingMessages)
	}
	if i == len(got) || !got[i].Header.Keyframe() || !got[i].Discontinuity {
		t.Fatalf("the first frame after the hole (index %d of %d) is not a keyframe marked as a discontinuity", i, len(got))
	}
}

// TestPublisherAsksForKeyframeWhileSourceHoldsFrames: a source that reads
// frames but holds them back (a gated ring after a missed frame) makes the
// publisher ask the producer for a keyframe; a source that stopped reading
// (the writer is gone) or hands every frame on does not.
func TestPublisherAsksForKeyframeWhileSourceHoldsFrames(t *testing.T) {
	t.Parallel()
	s := natstest.Server(t, nil)
	src := newPushSource()
	src.read() // read long ago: not held for this publisher
	req := &counter{}
	pub := startPublisher(t, natstest.Connect(t, s), src, PublisherConfig{Subject: "video.held", Requester: req, IDRCoalesce: time.Millisecond})
	for range 10 {
		src.push(false, 10, 0)
		time.Sleep(30 * time.Millisecond) // the subject: a live source, 33 frames/s
	}
	// The subject: a source that stopped, for three checks. An absence
	// has no event to wait on; a correct publisher passes whatever it takes.
	time.Sleep(3 * HeldCheck)
	if n := req.n.Load(); n != 0 {
		t.Fatalf("%d keyframe requests while the source handed every frame on, then stopped", n)
	}
	poll(t, func() bool {
		src.read() // reading, holding back
		return req.n.Load() != 0
	}, func() string {
		return fmt.Sprintf("no keyframe request while the source held frames; stats %+v", pub.Stats())
	})
	if pub.Stats().Held == 0 {
		t.Fatalf("stats %+v: held not counted", pub.Stats())
	}
}

// An edge that subscribes in the middle of a split frame gets its last
// parts first: no loss, since the edge never had that frame. A part
// missing after that is one.
func TestJoiningMidFrameIsNoLoss(t *testing.T) {
	t.Parallel()
	origin, edge := originAndEdge(t, nil)
	es := openEdge(t, edge, SourceConfig{Subject: "video.join"})
	k := subscribeSink(es)
	_ = edge.Flush()
	frame := keyframeMsg
	pub := func(data []byte, part string) { publishPart(t, origin, "video.join", data, part) }
	f1 := frame(1, 20)
	pub(append(f1[:shmring.HeaderSize:shmring.HeaderSize], f1[shmring.HeaderSize+10:]...), "10") // the second half of frame 1
	pub(frame(2, 10), "")
	k.wait(t, 1)
	if st := es.Stats(); st.PartsDropped != 0 || st.Frames != 1 {
		t.Fatalf("after joining mid-frame: %+v", st)
	}
	f3 := frame(3, 20)
	pub(append(f3[:shmring.HeaderSize:shmring.HeaderSize], f3[shmring.HeaderSize+10:]...), "10") // frame 3's first half lost
	pub(frame(4, 10), "")
	k.wait(t, 2)
	if st := es.Stats(); st.PartsDropped != 1 || st.Frames != 2 {
		t.Fatalf("after a lost part: %+v", st)
	}
}

// keyframeMsg is the video message of keyframe seq: its header and n
// payload bytes, all seq.
func keyframeMsg(seq uint64, n int) []byte {
	p := bytes.Repeat([]byte{byte(seq)}, n)
	h := shmring.Header{FrameSeq: seq, Size: uint32(n), Flags: shmring.FlagKeyframe, Codec: shmring.CodecH264, CRC32: shmring.Checksum(p)}
	return append(h.Bytes(), p...)
}

// publishPart publishes data on subject as the origin does, with the part
// header when part is not empty.
func publishPart(t *testing.T, nc *nats.Conn, subject string, data []byte, part string) {
	t.Helper()
	m := &nats.Msg{Subject: subject, Data: data}
	if part != "" {
		m.Header = nats.Header{HeaderPart: []string{part}}
	}
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
}
