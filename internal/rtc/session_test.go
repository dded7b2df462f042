package rtc

import (
	"context"
	"encoding/binary"
	"log/slog"
	"maps"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/origin"
	"github.com/sdr-os/sdr-caddy/internal/rtc/rtctest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// loopSource plays real H.264 access units in a loop at 30 frames/s, and
// replays its current GOP to a new subscriber, as the ring source does.
type loopSource struct {
	mu   sync.Mutex
	subs map[int]func(frame.Frame)
	next int
	gop  []frame.Frame
	last time.Time
}

func (s *loopSource) Subscribe(fn func(frame.Frame)) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.gop {
		fn(f)
	}
	id := s.next
	s.next++
	s.subs[id] = fn
	return func() { s.mu.Lock(); delete(s.subs, id); s.mu.Unlock() }
}

func (s *loopSource) LastArrival() time.Time { s.mu.Lock(); defer s.mu.Unlock(); return s.last }

func (s *loopSource) run(ctx context.Context, units [][]byte, keys []bool) {
	tick := time.NewTicker(time.Second / 30)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		k := i % len(units)
		h := frame.Header{FrameSeq: uint64(i + 1), Codec: frame.CodecH264, Size: uint32(len(units[k]))}
		if keys[k] {
			h.Flags = frame.FlagKeyframe
		}
		f := frame.Frame{Header: h, Payload: units[k], Arrived: time.Now()}
		s.mu.Lock()
		if keys[k] {
			s.gop = s.gop[:0]
		}
		s.gop = append(s.gop, f)
		s.last = f.Arrived
		for _, fn := range s.subs {
			fn(f)
		}
		s.mu.Unlock()
	}
}

// timedRequester records when each keyframe request came.
type timedRequester struct {
	mu    sync.Mutex
	times []time.Time
}

func (r *timedRequester) RequestKeyframe() {
	r.mu.Lock()
	r.times = append(r.times, time.Now())
	r.mu.Unlock()
}

// since returns the requests made at or after t, and all of them.
func (r *timedRequester) since(t time.Time) (after, all []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, at := range r.times {
		if !at.Before(t) {
			after = append(after, at)
		}
	}
	return after, append([]time.Time(nil), r.times...)
}

type countingRequester struct{ n chanCount }
type chanCount chan struct{}

func (r countingRequester) RequestKeyframe() {
	select {
	case r.n <- struct{}{}:
	default:
	}
}

type fixedGate map[string]bool

func (g fixedGate) Allow(action string) (bool, string) {
	if g[action] {
		return false, "HOLD"
	}
	return true, "ARMED"
}

func (g fixedGate) Armed() bool { return true }

type published struct {
	subject string
	data    []byte
}

func gamepad(axes []float32, buttons uint32) []byte {
	b := []byte{byte(len(axes))}
	for _, a := range axes {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(a))
	}
	return binary.LittleEndian.AppendUint32(b, buttons)
}

func TestSessionVideoAndDataChannels(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(60*time.Second))
	defer cancel()
	units, keys, err := rtctest.EncodeH264(ctx, 60, 30, "320x240")
	if err != nil {
		t.Fatal(err)
	}
	src := &loopSource{subs: map[int]func(frame.Frame){}}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go src.run(runCtx, units, keys)

	e, err := NewEngine(Config{IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	pubs := make(chan published, 100)
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "m"}, []string{"channel", "result"})
	kf := &timedRequester{}
	closed := make(chan struct{})
	s, err := e.NewSession(SessionConfig{
		Source:    src,
		Keyframes: kf,
		Gate:      fixedGate{"set_alpha": true},
		Publish: func(subject string, data []byte) error {
			pubs <- published{subject, data}
			return nil
		},
		OnClose: func() { close(closed) },
		Metrics: Metrics{Messages: msgs},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	v := connect(t, ctx, s)
	defer v.Close()

	// Video: the first access unit carries SPS, PPS and an IDR; ffmpeg
	// decodes what arrived.
	var stream []byte
	for n := 0; n < 45; n++ {
		select {
		case au := <-v.Units:
			types := rtctest.NALTypes(au.Data)
			if n == 0 && !(contains(types, 7) && contains(types, 8) && contains(types, 5)) {
				t.Fatalf("first access unit has NAL types %v, want SPS, PPS and IDR", types)
			}
			stream = append(stream, au.Data...)
		case <-ctx.Done():
			t.Fatalf("received %d access units before the timeout", n)
		}
	}
	decoded, err := rtctest.Decode(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if decoded < 40 {
		t.Fatalf("ffmpeg decoded %d frames of 45 received", decoded)
	}
	if _, all := kf.since(time.Time{}); len(all) == 0 {
		t.Error("no keyframe request at the start of the video")
	}

	// RTCP PLI and FIR become keyframe requests, at most one per 500 ms
	// from a session. Once an interval has passed since the last request,
	// the burst makes one at once; every two requests are at least an
	// interval apart (half of it here, for the time between the session's
	// clock and the requester's).
	testwait.For(t, "the coalescing interval since the last keyframe request to pass", func() bool {
		_, all := kf.since(time.Time{})
		return len(all) == 0 || time.Since(all[len(all)-1]) > DefaultKeyframeCoalesce
	})
	sent := time.Now()
	ssrc := uint32(v.PC.GetReceivers()[0].Track().SSRC())
	for i := range 5 {
		var p rtcp.Packet = &rtcp.PictureLossIndication{MediaSSRC: ssrc}
		if i%2 == 1 {
			p = &rtcp.FullIntraRequest{MediaSSRC: ssrc, FIR: []rtcp.FIREntry{{SSRC: ssrc, SequenceNumber: uint8(i)}}}
		}
		if err := v.PC.WriteRTCP([]rtcp.Packet{p}); err != nil {
			t.Fatal(err)
		}
	}
	testwait.For(t, "a keyframe request after the PLI and FIR burst", func() bool {
		after, _ := kf.since(sent)
		return len(after) > 0
	})
	// An absence, not a wait: the rest of the burst has no effect that can
	// be waited on; a session that let it through would request again
	// within this window. (A correct one passes whatever the window.)
	time.Sleep(200 * time.Millisecond)
	_, all := kf.since(time.Time{})
	for i := 1; i < len(all); i++ {
		if gap := all[i].Sub(all[i-1]); gap < DefaultKeyframeCoalesce/2 {
			t.Errorf("keyframe requests %d and %d only %s apart, want at most one per %s", i-1, i, gap, DefaultKeyframeCoalesce)
		}
	}

	// DataChannels: valid messages arrive, malformed and gated ones do not.
	waitOpen(t, ctx, v)
	good := gamepad([]float32{0.5, -1}, 3)
	for _, m := range [][]byte{good[:4], append([]byte{40}, make([]byte, 200)...), gamepad([]float32{float32(math.NaN())}, 0), good} {
		if err := v.Control.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []string{`not json`, `{"action":"set_alpha","data":{}}`, `{"action":"pause","cmd_seq":1}`} {
		if err := v.Commands.SendText(m); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]string{}
	for len(got) < 2 {
		select {
		case p := <-pubs:
			got[p.subject] = string(p.data)
		case <-ctx.Done():
			t.Fatalf("published %v before the timeout", got)
		}
	}
	if got[SubjectGamepad] != string(good) || got[SubjectCommands] != `{"action":"pause","cmd_seq":1}` {
		t.Fatalf("published %q", got)
	}
	counted := testwait.Until(testwait.Default, func() bool {
		return counterValue(msgs.WithLabelValues("control", "malformed")) >= 3 &&
			counterValue(msgs.WithLabelValues("commands", "malformed")) >= 1 &&
			counterValue(msgs.WithLabelValues("commands", "gated")) >= 1
	})
	if !counted {
		t.Fatalf("counts: control malformed %v, commands malformed %v, gated %v",
			counterValue(msgs.WithLabelValues("control", "malformed")),
			counterValue(msgs.WithLabelValues("commands", "malformed")),
			counterValue(msgs.WithLabelValues("commands", "gated")))
	}

	// Rate limit: a burst of 100 gamepad messages; far fewer pass.
	for range 100 {
		_ = v.Commands.SendText(`{"action":"reset"}`)
	}
	if !testwait.Until(testwait.Default, func() bool {
		return counterValue(msgs.WithLabelValues("commands", "rate_limited")) >= 50
	}) {
		t.Fatalf("rate limited %v of 100", counterValue(msgs.WithLabelValues("commands", "rate_limited")))
	}

	// The viewer leaves: the session ends by itself.
	v.Close()
	select {
	case <-closed:
	case <-testwait.After(45 * time.Second):
		t.Fatalf("session still open %s after the viewer closed", testwait.Timeout(45*time.Second))
	}
}

// connect negotiates a WebRTC viewer with s: the viewer's offer, the
// session's answer. Close the viewer when done.
func connect(t *testing.T, ctx context.Context, s *Session) *rtctest.Viewer {
	t.Helper()
	v, err := rtctest.NewViewer(true)
	if err != nil {
		t.Fatal(err)
	}
	offer, err := v.Offer(ctx)
	if err == nil {
		var answer string
		if answer, err = s.Answer(ctx, offer); err == nil {
			err = v.Accept(answer)
		}
	}
	if err != nil {
		v.Close()
		t.Fatal(err)
	}
	return v
}

func waitOpen(t *testing.T, ctx context.Context, v *rtctest.Viewer) {
	t.Helper()
	testwait.For(t, "the datachannels to open", func() bool {
		return ctx.Err() != nil || v.Control.ReadyState().String() == "open" && v.Commands.ReadyState().String() == "open"
	})
	if ctx.Err() != nil {
		t.Fatal("datachannels not open")
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestAnswerRefusesBadSDP(t *testing.T) {
	e, err := NewEngine(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s, err := e.NewSession(SessionConfig{Source: &loopSource{subs: map[int]func(frame.Frame){}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Answer(context.Background(), "v=0\r\nthis is not sdp"); err == nil || !errorsIs(err, ErrBadOffer) {
		t.Fatalf("answer to bad sdp: %v, want ErrBadOffer", err)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// A player that takes the answer but never connects does not hold the
// session: it ends after the connect timeout.
func TestSessionConnectTimeout(t *testing.T) {
	e, err := NewEngine(Config{IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	closed := make(chan struct{})
	s, err := e.NewSession(SessionConfig{
		Source:         &loopSource{subs: map[int]func(frame.Frame){}},
		ConnectTimeout: 500 * time.Millisecond,
		OnClose:        func() { close(closed) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := rtctest.NewViewer(true)
	if err != nil {
		t.Fatal(err)
	}
	offer, err := v.Offer(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	v.Close() // gone before it could connect
	if _, err := s.Answer(t.Context(), offer); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-testwait.After(20 * time.Second):
		t.Fatalf("session of a player that never connected still open after %s", testwait.Timeout(20*time.Second))
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed")
	}
}

// The DataChannels of a connection that is not trusted to command carry
// nothing to NATS: gamepad and command messages are refused and counted
// "origin", before the rate limit and the gate, whichever rule refused the
// connection; the log names that rule (its Origin, or its Host with
// SDR_ALLOWED_HOSTS), once.
func TestUntrustedOriginDataChannelsRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		verdict origin.Verdict
		log     []string // in the log line
		notLog  string
	}{
		{
			name:    "origin",
			verdict: origin.Verdict{Origin: "http://evil.example"},
			log:     []string{"origin is not trusted", "origin=http://evil.example", origin.EnvVar},
			notLog:  origin.HostEnvVar,
		},
		{
			name:    "host",
			verdict: origin.Verdict{Origin: "http://evil.example", Host: "evil.example", HostRefused: true},
			log:     []string{"Host is not trusted", "host=evil.example", origin.HostEnvVar},
			notLog:  origin.EnvVar + " if it is yours",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(30*time.Second))
			defer cancel()
			var logs lockedBuffer
			e, err := NewEngine(Config{IncludeLoopback: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			pubs := make(chan string, 100)
			msgs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "m"}, []string{"channel", "result"})
			verdict := tc.verdict
			s, err := e.NewSession(SessionConfig{
				Source: &loopSource{subs: map[int]func(frame.Frame){}},
				Publish: func(subject string, _ []byte) error {
					pubs <- subject
					return nil
				},
				Verdict: &verdict,
				Metrics: Metrics{Messages: msgs},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			v := connect(t, ctx, s)
			defer v.Close()
			waitOpen(t, ctx, v)
			if err := v.Control.Send(gamepad([]float32{0.5, -1}, 3)); err != nil {
				t.Fatal(err)
			}
			for _, m := range []string{`{"action":"estop","cmd_seq":1}`, `{"action":"pause","cmd_seq":2}`} {
				if err := v.Commands.SendText(m); err != nil {
					t.Fatal(err)
				}
			}
			testwait.For(t, "three refusals", func() bool {
				return counterValue(msgs.WithLabelValues("control", "origin")) == 1 &&
					counterValue(msgs.WithLabelValues("commands", "origin")) == 2
			})
			select {
			case p := <-pubs:
				t.Fatalf("a message of an untrusted connection was published on %s", p)
			default:
			}
			out := logs.String()
			if n := strings.Count(out, "refused a command"); n != 1 {
				t.Errorf("%d refusals logged for three of one connection, want 1:\n%s", n, out)
			}
			for _, want := range tc.log {
				if !strings.Contains(out, want) {
					t.Errorf("log lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, tc.notLog) {
				t.Errorf("log names the other rule (%q):\n%s", tc.notLog, out)
			}
		})
	}
}

// A trusted verdict (a judged connection that may command) refuses
// nothing: its messages are published.
func TestTrustedVerdictDataChannelsPublish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(30*time.Second))
	defer cancel()
	e, err := NewEngine(Config{IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	pubs := make(chan string, 100)
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "m"}, []string{"channel", "result"})
	s, err := e.NewSession(SessionConfig{
		Source: &loopSource{subs: map[int]func(frame.Frame){}},
		Publish: func(subject string, _ []byte) error {
			pubs <- subject
			return nil
		},
		Verdict: &origin.Verdict{Origin: "http://127.0.0.1:8080", Trusted: true},
		Metrics: Metrics{Messages: msgs},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v := connect(t, ctx, s)
	defer v.Close()
	waitOpen(t, ctx, v)
	if err := v.Commands.SendText(`{"action":"estop","cmd_seq":1}`); err != nil {
		t.Fatal(err)
	}
	if p := testwait.Recv(t, pubs, "the estop published"); p != SubjectCommands {
		t.Fatalf("published on %s, want %s", p, SubjectCommands)
	}
	if n := counterValue(msgs.WithLabelValues("commands", "origin")); n != 0 {
		t.Fatalf("%v messages of a trusted connection counted origin", n)
	}
}

// lockedBuffer is a log sink that pion's goroutines may write while the
// test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDataChannelCommandsStrictJSON: a `commands` message that consumers
// could read differently (keys equal but for case, duplicate keys, invalid
// UTF-8) or that the simulator's Python cannot read (nesting deeper than
// 32) is dropped and counted by reason, though the action the session
// reads would pass the gate; an unambiguous one, however it is spelled, is
// published byte for byte. A keep is refused: only /stream/ws takes it.
// DataChannel messages get no answer.
func TestDataChannelCommandsStrictJSON(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(30*time.Second))
	defer cancel()
	e, err := NewEngine(Config{IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	pubs := make(chan published, 100)
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "m"}, []string{"channel", "result"})
	s, err := e.NewSession(SessionConfig{
		Source: &loopSource{subs: map[int]func(frame.Frame){}},
		Gate:   fixedGate{"set_cmd_vel": true},
		Publish: func(subject string, data []byte) error {
			pubs <- published{subject, data}
			return nil
		},
		Limits:  Limits{CommandRate: 1000},
		Metrics: Metrics{Messages: msgs},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v := connect(t, ctx, s)
	defer v.Close()
	waitOpen(t, ctx, v)
	for _, m := range []string{
		// judged "pause" here; a reader that matches keys without case
		// and keeps the last reads set_cmd_vel
		`{"action":"pause","ACTION":"set_cmd_vel"}`,
		// judged "pause" here (the last); a reader keeping the first
		// reads set_cmd_vel
		`{"action":"set_cmd_vel","action":"pause"}`,
		"{\"action\":\"pause\",\"data\":\"\xff\"}",
		`{"action":"pause","data":` + strings.Repeat("[", 32) + strings.Repeat("]", 32) + `}`,
		// the flight recorder's keep is taken on /stream/ws only
		`{"action":"keep","data":{"name":"x"}}`,
	} {
		if err := v.Commands.Send([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	valid := " {\"cmd_seq\" : 7 ,\"action\":\"pause\", \"data\":{\"s\":\"\\u00e9\u00e9\",\"x\":1.50e0}}\n"
	if err := v.Commands.SendText(valid); err != nil {
		t.Fatal(err)
	}
	// One channel, in order: what went before the valid message has been
	// judged when it arrives.
	p := testwait.Recv(t, pubs, "the valid command")
	if p.subject != SubjectCommands || p.data == nil || string(p.data) != valid {
		t.Fatalf("published %s %q, want %q byte for byte", p.subject, p.data, valid)
	}
	select {
	case p := <-pubs:
		t.Fatalf("also published %s %q", p.subject, p.data)
	default:
	}
	want := map[string]float64{"duplicate_key": 2, "invalid_utf8": 1, "too_deep": 1, "refused": 1, "published": 1}
	counted := func() map[string]float64 {
		got := map[string]float64{}
		for result := range want {
			got[result] = counterValue(msgs.WithLabelValues(ChannelCommands, result))
		}
		return got
	}
	// the count follows the publish
	if !testwait.Until(testwait.Default, func() bool { return maps.Equal(counted(), want) }) {
		t.Errorf("counted %v, want %v", counted(), want)
	}
}
