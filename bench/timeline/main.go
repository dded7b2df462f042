// Command timeline measures what the player's timeline (a GET of
// <stream url>?recording, internal/timeline) costs on a 10-minute
// recording polled by several players: read afresh on every GET (Read, as
// sdr_recorder did before its cache), and through the cache sdr_recorder
// keeps (timeline.Cache), in one run on the same recording.
//
// The recording is written straight into an in-process nats-server with
// JetStream (memory storage), in sdr_recorder's format, as a 10-minute
// teleoperation session would leave it: one stream's video at 60
// frames/s (a keyframe every 60th frame; -key and -delta bytes: the
// timeline never reads the bodies but the last frame's, so they are small
// by default to spare memory), -telemetry records/s of telemetry, 10
// commands/s (set_cmd_vel; 1 in 50 rejected) and a gate transition every
// minute. Its records carry times spread over the 10 minutes.
//
// Then -polls rounds: each appends one second of records (60 frames, the
// telemetry, 10 commands), and -players goroutines GET the timeline at
// once through the cache; each GET is timed. The uncached Read is timed
// -fresh times on the same recording. The cached and the fresh timelines
// are compared after the last round (same_result).
//
//	go run ./bench/timeline [-minutes 10] [-players 4] [-polls 20] [-fresh 5]
//
// The last line:
//
//	BENCH timeline records=.. fresh_ms_p50=.. cached_ms_p50=.. cached_ms_p95=.. cold_ms=.. speedup=.. same_result=..
//
// fresh_ms_p50 is the median of the uncached reads; cached_ms_p50 and
// _p95 those of the players' GETs through the cache (each after a second of
// new records, the players of one round waiting for one update); cold_ms
// the cache's first read (the whole recording, as fresh); speedup
// fresh_ms_p50 / cached_ms_p50, both measured in this run.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/recording"
	"github.com/sdr-os/sdr-caddy/internal/timeline"
)

const stream = "front"

func main() {
	minutes := flag.Int("minutes", 10, "length of the recording, minutes")
	players := flag.Int("players", 4, "players polling the timeline together")
	polls := flag.Int("polls", 20, "rounds of polls, each after one second of new records")
	fresh := flag.Int("fresh", 5, "uncached reads timed")
	telemetry := flag.Int("telemetry", 50, "telemetry records per second")
	keySize := flag.Int("key", 20000, "keyframe payload bytes")
	deltaSize := flag.Int("delta", 2000, "delta frame payload bytes")
	flag.Parse()
	log.SetFlags(0)

	dir, err := os.MkdirTemp("", "bench-timeline")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true,
		JetStreamMaxMemory: 4 << 30})
	if err != nil {
		log.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		log.Fatal("nats-server not ready")
	}
	defer ns.Shutdown()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if _, err := recording.EnsureStream(ctx, js, recording.StreamConfig{MaxAge: time.Duration(*minutes+5) * time.Minute, Memory: true}); err != nil {
		log.Fatal(err)
	}

	w := &writer{js: js, nc: nc, key: make([]byte, *keySize), delta: make([]byte, *deltaSize), telemetry: *telemetry,
		start: time.Now().Add(-time.Duration(*minutes) * time.Minute)}
	t0 := time.Now()
	for range *minutes * 60 {
		w.second()
	}
	w.flush()
	log.Printf("recorded %d records (%d s) in %v", w.records, w.sec, time.Since(t0).Round(time.Millisecond))

	opts := timeline.Options{Stream: stream}
	var freshMs []float64
	for range *fresh {
		t := time.Now()
		if _, err := timeline.Read(ctx, js, opts); err != nil {
			log.Fatal(err)
		}
		freshMs = append(freshMs, ms(time.Since(t)))
	}
	var cache timeline.Cache
	t := time.Now()
	if _, err := cache.Read(ctx, js, opts); err != nil {
		log.Fatal(err)
	}
	cold := ms(time.Since(t))

	var mu sync.Mutex
	var cachedMs []float64
	for range *polls {
		w.second()
		w.flush()
		var wg sync.WaitGroup
		for range *players {
			wg.Go(func() {
				t := time.Now()
				if _, err := cache.Read(ctx, js, opts); err != nil {
					log.Fatal(err)
				}
				d := ms(time.Since(t))
				mu.Lock()
				cachedMs = append(cachedMs, d)
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	got, err := cache.Read(ctx, js, opts)
	if err != nil {
		log.Fatal(err)
	}
	want, err := timeline.Read(ctx, js, opts)
	if err != nil {
		log.Fatal(err)
	}
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(want)
	same := string(a) == string(b)
	if !same {
		log.Printf("cached %d markers, fresh %d", len(got.Markers), len(want.Markers))
	}
	fp50, cp50, cp95 := pct(freshMs, 50), pct(cachedMs, 50), pct(cachedMs, 95)
	log.Printf("markers=%d fresh_ms=%v", len(want.Markers), freshMs)
	fmt.Printf("BENCH timeline records=%d minutes=%d players=%d polls=%d fresh_ms_p50=%.2f cached_ms_p50=%.3f cached_ms_p95=%.3f cold_ms=%.2f speedup=%.0f same_result=%t\n",
		w.records, *minutes, *players, *polls, fp50, cp50, cp95, cold, fp50/cp50, same)
}

// writer appends one second of a teleoperation session at a time.
type writer struct {
	js               jetstream.JetStream
	nc               *nats.Conn
	key, delta       []byte
	telemetry        int
	start            time.Time
	sec, frames      int
	records, pending int
}

func (w *writer) pub(m *nats.Msg) {
	if _, err := w.js.PublishMsgAsync(m); err != nil {
		log.Fatal(err)
	}
	w.records++
	w.pending++
	if w.pending >= 2000 {
		w.flush()
	}
}

func (w *writer) flush() {
	select {
	case <-w.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		log.Fatal("publishes not acknowledged")
	}
	w.pending = 0
}

func (w *writer) second() {
	base := w.start.Add(time.Duration(w.sec) * time.Second)
	for i := range 60 {
		at := base.Add(time.Duration(i) * time.Second / 60)
		p := w.delta
		h := frame.Header{FrameSeq: uint64(w.frames + 1), FrameID: uint64(at.UnixNano()), Codec: frame.CodecH264}
		if w.frames%60 == 0 {
			p, h.Flags = w.key, frame.FlagKeyframe
		}
		h.Size, h.CRC32 = uint32(len(p)), frame.Checksum(p)
		w.frames++
		msgs, err := recording.VideoMsgs("", stream, frame.Frame{Header: h, Payload: p}, at, w.nc.MaxPayload())
		if err != nil {
			log.Fatal(err)
		}
		for _, m := range msgs {
			w.pub(m)
		}
	}
	for i := range w.telemetry {
		at := base.Add(time.Duration(i) * time.Second / time.Duration(w.telemetry))
		w.pub(recording.TelemetryMsg("", "telemetry.odom", []byte(`{"x":1.25,"y":-0.5,"yaw":0.1,"vx":0.3}`), at))
	}
	for i := range 10 {
		at := base.Add(time.Duration(i) * time.Second / 10)
		c := recording.CommandBody{Action: "set_cmd_vel", Outcome: recording.OutcomePublished, Client: "127.0.0.1:50000",
			Payload: json.RawMessage(fmt.Sprintf(`{"action":"set_cmd_vel","cmd_seq":%d,"data":{"linear_x":0.5}}`, w.sec*10+i))}
		if (w.sec*10+i)%50 == 0 {
			c.Outcome, c.Reason = recording.OutcomeRejected, "rate limit of 10 commands/s exceeded"
		}
		m, err := recording.CommandMsg("", stream, c, at)
		if err != nil {
			log.Fatal(err)
		}
		w.pub(m)
	}
	if w.sec%60 == 30 {
		mode := "HOLD"
		if (w.sec/60)%2 == 1 {
			mode = "ARMED"
		}
		w.pub(recording.GateMsg("", recording.GateSubject, fmt.Appendf(nil, `{"gated":%t,"mode":%q}`, mode != "ARMED", mode), base))
	}
	w.sec++
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pct is the p-th percentile of v (nearest rank).
func pct(v []float64, p int) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}
