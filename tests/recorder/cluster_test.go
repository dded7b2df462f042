// Package recorder holds the live tests of the flight recorder against a
// real JetStream cluster: three .tools/bin/nats-server processes joined by
// routes, the recording stream with 3 replicas.
package recorder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// startJetStreamCluster runs three nats-server processes with JetStream,
// routed to each other, and returns their client URLs.
func startJetStreamCluster(t *testing.T) []string {
	t.Helper()
	type node struct {
		name          string
		port, cluster int
	}
	var nodes []node
	var routes, urls []string
	for i := range 3 {
		n := node{name: fmt.Sprintf("n%d", i), port: testenv.FreePort(t), cluster: testenv.FreePort(t)}
		nodes = append(nodes, n)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", n.cluster))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", n.port))
	}
	dir := t.TempDir()
	for _, n := range nodes {
		conf := fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
jetstream { store_dir: %q }
cluster {
  name: rec
  listen: "127.0.0.1:%d"
  routes: [%s]
}
`, n.name, n.port, filepath.Join(dir, n.name), n.cluster, strings.Join(routes, ", "))
		path := filepath.Join(dir, n.name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		testenv.StartNATSProcess(t, "nats-server "+n.name, fmt.Sprintf("127.0.0.1:%d", n.port), 15*time.Second, "-c", path)
	}
	return urls
}

// source is a frame.Source the test hands frames on.
type source struct {
	mu sync.Mutex
	fn func(frame.Frame)
}

func (s *source) Subscribe(fn func(frame.Frame)) func() {
	s.mu.Lock()
	s.fn = fn
	s.mu.Unlock()
	return func() { s.mu.Lock(); s.fn = nil; s.mu.Unlock() }
}

func (s *source) LastArrival() time.Time { return time.Time{} }

func (s *source) push(f frame.Frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fn != nil {
		s.fn(f)
	}
}

func testFrame(i int) frame.Frame {
	p := []byte(strings.Repeat(fmt.Sprintf("frame %d;", i), 50))
	h := frame.Header{FrameSeq: uint64(i + 1), Size: uint32(len(p)), Codec: frame.CodecH264}
	if i%10 == 0 {
		h.Flags = frame.FlagKeyframe
	}
	return frame.Frame{Header: h, Payload: p, Arrived: time.Now()}
}

// TestRecorderOnClusterWithLeaderStepDown records on a 3-node JetStream
// cluster with replicas 3, has the stream's leader step down in the middle,
// and reads the recording back: every frame from before the step-down, and
// the recording going on after it with a new leader.
func TestRecorderOnClusterWithLeaderStepDown(t *testing.T) {
	urls := startJetStreamCluster(t)
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r, err := recording.New(nc, recording.Config{Stream: recording.StreamConfig{Replicas: 3, MaxAge: time.Hour}, IDRInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	defer r.Close()
	testwait.For(t, "the recorder recording on the cluster (a replicated stream)", func() bool {
		return r.Stats().State == recording.StateRecording
	})
	src := &source{}
	detach, err := r.AttachStream("front", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer detach()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(testwait.Default))
	defer cancel()
	next := 0
	push := func() {
		src.push(testFrame(next))
		next++
		n := uint64(next)
		testwait.For(t, "the frame handed to JetStream", func() bool { return r.Stats().Records[recording.KindVideo] >= n })
	}
	acked := func() {
		select {
		case <-r.JetStream().PublishAsyncComplete():
		case <-testwait.After(testwait.Default):
			t.Fatal("publishes not acknowledged")
		}
	}
	for range 20 {
		push()
	}
	acked()
	s, err := js.Stream(ctx, recording.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream config replicas %d, cluster %+v: want 3 replicas", info.Config.Replicas, info.Cluster)
	}
	leader := info.Cluster.Leader
	resp, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+recording.DefaultStream, nil, testwait.Timeout(10*time.Second))
	if err != nil || !strings.Contains(string(resp.Data), `"success":true`) {
		t.Fatalf("leader step-down: %v %s", err, resp.Data)
	}
	// Record on through the election, until a new leader has taken frames.
	testwait.For(t, "a new leader taking frames", func() bool {
		push()
		acked()
		i, err := s.Info(ctx)
		return err == nil && i.Cluster != nil && i.Cluster.Leader != "" && i.Cluster.Leader != leader &&
			i.State.LastSeq > info.State.LastSeq
	})
	for range 10 {
		push()
	}
	acked()
	var seqs []uint64
	if _, err := recording.Read(ctx, js, recording.ReadOptions{}, func(rec recording.Record) error {
		seqs = append(seqs, rec.Frame.Header.FrameSeq)
		if want := testFrame(int(rec.Frame.Header.FrameSeq) - 1).Payload; string(rec.Frame.Payload) != string(want) {
			t.Errorf("frame %d: payload differs", rec.Frame.Header.FrameSeq)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if i >= len(seqs) || seqs[i] != uint64(i+1) {
			t.Fatalf("frames before the step-down: %v, want 1..20", seqs[:min(20, len(seqs))])
		}
	}
	if last := seqs[len(seqs)-1]; last != uint64(next) {
		t.Errorf("last frame recorded %d, want %d (the recording goes on after the step-down)", last, next)
	}
	t.Logf("leader %s stepped down; %d frames pushed, %d recorded, %d publish errors", leader, next, len(seqs), r.Stats().Errors)
}
