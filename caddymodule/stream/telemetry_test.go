package stream

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/hub"
	"github.com/sdr-os/sdr-caddy/internal/natstest"
	"github.com/sdr-os/sdr-caddy/internal/relay"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
	"github.com/sdr-os/sdr-caddy/shmring"
)

// A burst of telemetry that the relay hands on as one batch is queued to
// each client as one item: a client whose writer has not run yet (its
// queue holds 32 items) loses none of 40 messages, and then gets them all,
// in order, as separate 0x02 messages. Queued one item per message, 8 would
// be dropped.
// A burst of telemetry reaches a client whole and in order: the relay
// hands it on in batches, the hub seals what came between two rounds into
// one buffer per round, and nothing is dropped.
func TestStreamTelemetryBurstReachesClient(t *testing.T) {
	ns := natstest.Server(t, nil)
	nc := natstest.Connect(t, ns)
	relayed := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t"}, []string{"result"})
	r, err := relay.New(nc, relay.Config{Linger: 300 * time.Millisecond}, nil, &relay.Metrics{Telemetry: relayed})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	s := &Stream{name: "t", hub: hub.New(hub.Config{})}
	defer s.hub.Close()
	srv, cli := net.Pipe()
	defer cli.Close()
	c := s.hub.NewClient(srv, nil, hub.ClientConfig{KeyframeTimeout: time.Minute})
	defer s.subscribeTelemetry(r.Stream(nil, nil, nil))()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { _ = cli.Close(); cancel(); <-done }()
	_ = cli.SetReadDeadline(testwait.Deadline(20 * time.Second))

	readMsg := func(what string) []byte {
		t.Helper()
		var hdr [2]byte
		if _, err := io.ReadFull(cli, hdr[:]); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if hdr[0] != 0x82 || hdr[1] >= 126 {
			t.Fatalf("%s: frame header % x, want a short final binary frame", what, hdr)
		}
		msg := make([]byte, hdr[1])
		if _, err := io.ReadFull(cli, msg); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return msg
	}
	// A frame read back: the client is in the hub's send round.
	s.hub.Publish(frame.Frame{Header: shmring.Header{FrameSeq: 1, Flags: shmring.FlagKeyframe, Codec: shmring.CodecH264}, Payload: []byte{1}})
	if msg := readMsg("first frame"); msg[0] != wire.TypeVideo {
		t.Fatalf("first message of type %#x", msg[0])
	}

	const n = 40
	for i := range n {
		if err := nc.Publish("telemetry.burst", fmt.Appendf(nil, `{"i":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		subj, payload, err := wire.ParseTelemetry(readMsg(fmt.Sprintf("message %d", i)))
		if err != nil || subj != "telemetry.burst" || string(payload) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("message %d: %q %q %v", i, subj, payload, err)
		}
	}
	if d := s.hub.Stats().TelemetryDropped; d != 0 {
		t.Fatalf("%d telemetry batches dropped, want none", d)
	}
}
