package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sdr-os/sdr-caddy/internal/gate"
	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/natstest"
	"github.com/sdr-os/sdr-caddy/internal/origin"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// collector gathers 0x02 messages delivered to one subscriber.
type collector struct {
	mu   sync.Mutex
	msgs [][]byte
	got  chan struct{}
}

func newCollector() *collector { return &collector{got: make(chan struct{}, 1024)} }

func (c *collector) fn(m []byte) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	select {
	case c.got <- struct{}{}:
	default:
	}
}

func (c *collector) subjects() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.msgs {
		s, _, err := wire.ParseTelemetry(m)
		if err != nil {
			out = append(out, "INVALID:"+err.Error())
			continue
		}
		out = append(out, s)
	}
	return out
}

// syncSubject is the marker that the sync helpers publish after what a
// test sent: one publisher's messages arrive in order, so once the marker
// has arrived, so has everything published before it.
const (
	syncSubject    = "telemetry.sync"
	syncCmdSubject = "command.sync"
)

// flush round-trips nc, so that the server has its subscriptions.
func flush(t *testing.T, nc *nats.Conn) {
	t.Helper()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// sync publishes the marker from sim and waits until c has received it:
// every telemetry message sim published before has then been relayed or
// dropped. The marker is taken out of c.
func (c *collector) sync(t *testing.T, sim *nats.Conn) {
	t.Helper()
	if err := sim.Publish(syncSubject, nil); err != nil {
		t.Fatal(err)
	}
	c.awaitMarker(t)
}

// awaitMarker waits until c has received one marker that sim published and
// takes it out of c. Collectors of the same relay get the same markers:
// publish one marker for all of them, not one each.
func (c *collector) awaitMarker(t *testing.T) {
	t.Helper()
	testwait.For(t, "the telemetry marker", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, m := range c.msgs {
			if s, _, err := wire.ParseTelemetry(m); err == nil && s == syncSubject {
				c.msgs = append(c.msgs[:i], c.msgs[i+1:]...)
				return true
			}
		}
		return false
	})
}

// relayAndSim starts a nats-server and connects a client for the relay and
// one for the simulator to it.
func relayAndSim(t *testing.T) (nc, sim *nats.Conn) {
	t.Helper()
	s := natstest.Server(t, nil)
	return natstest.Connect(t, s), natstest.Connect(t, s)
}

// startRelay starts a Relay on nc with cfg and closes it when the test ends.
func startRelay(t *testing.T, nc *nats.Conn, cfg Config) *Relay {
	t.Helper()
	r, err := New(nc, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// publishBurst publishes the payloads "1" to "n" on telemetry.x from sim and
// flushes it.
func publishBurst(t *testing.T, sim *nats.Conn, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		if err := sim.Publish("telemetry.x", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := sim.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestTelemetryAllowlistAndCaps(t *testing.T) {
	t.Parallel()
	nc, sim := relayAndSim(t)
	r := startRelay(t, nc, Config{
		Subjects:   []string{"telemetry.>", "telemetry.frame.stats", "telemetry.*.x", "extra.ok"},
		MaxPayload: 100,
		MaxSubject: 40,
	})
	c := newCollector()
	cancel := r.SubscribeTelemetry(c.fn)
	// A second subscriber that stays, to know when the first would have
	// had a message after its cancel.
	stays := newCollector()
	defer r.SubscribeTelemetry(stays.fn)()
	flush(t, nc)

	pub := func(subj string, n int) {
		if err := sim.Publish(subj, bytes.Repeat([]byte("x"), n)); err != nil {
			t.Fatal(err)
		}
	}
	pub("telemetry.frame.stats", 10)
	pub("command.genesis.set_cmd_vel", 10)
	pub("other", 10)
	pub("extra.ok", 100)
	pub("telemetry.big", 101)
	pub("telemetry."+strings.Repeat("s", 31), 1) // 41 bytes: over the cap
	pub("telemetry."+strings.Repeat("s", 30), 1) // 40 bytes
	c.sync(t, sim)
	stays.awaitMarker(t) // the same marker: stays must not keep it for later

	got := strings.Join(c.subjects(), ",")
	want := "telemetry.frame.stats,extra.ok,telemetry." + strings.Repeat("s", 30)
	if got != want {
		t.Fatalf("relayed %s\nwant    %s", got, want)
	}
	c.mu.Lock()
	subj, payload, err := wire.ParseTelemetry(c.msgs[0])
	c.mu.Unlock()
	if err != nil || subj != "telemetry.frame.stats" || string(payload) != strings.Repeat("x", 10) {
		t.Fatalf("first message = %q %q %v", subj, payload, err)
	}

	cancel()
	pub("telemetry.frame.stats", 1)
	stays.sync(t, sim)
	if n := len(c.subjects()); n != 3 {
		t.Fatalf("after cancel the subscriber got %d messages, want still 3", n)
	}
}

func TestTelemetryFanOutToManySubscribers(t *testing.T) {
	t.Parallel()
	nc, sim := relayAndSim(t)
	r := startRelay(t, nc, Config{})
	cs := make([]*collector, 20)
	for i := range cs {
		cs[i] = newCollector()
		defer r.SubscribeTelemetry(cs[i].fn)()
	}
	flush(t, nc)
	for i := 0; i < 50; i++ {
		if err := sim.Publish("telemetry.training.metrics", []byte(`{"i":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	// One marker for all: every subscriber sees every marker, so one sync
	// per subscriber would leave the markers of the others in the later
	// ones, counted as messages once they had arrived.
	if err := sim.Publish(syncSubject, nil); err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		c.awaitMarker(t)
		if n := len(c.subjects()); n != 50 {
			t.Errorf("subscriber %d got %d messages, want 50", i, n)
		}
	}
}

// ackOf parses a reply into its ack payload.
func ackOf(t *testing.T, reply []byte) map[string]any {
	t.Helper()
	subj, payload, err := wire.ParseTelemetry(reply)
	if err != nil {
		t.Fatalf("reply is not a 0x02 message: %v", err)
	}
	if subj != SubjectAck {
		t.Fatalf("reply on %s, want %s", subj, SubjectAck)
	}
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatalf("ack payload %s: %v", payload, err)
	}
	for _, k := range []string{"action", "cmd_seq", "status", "detail"} {
		if _, ok := m[k]; !ok {
			t.Errorf("ack %s lacks %q", payload, k)
		}
	}
	return m
}

// commandSink subscribes an ordinary client to every command subject.
type commandSink struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

// sync publishes the marker from nc, the relay's connection, waits until
// the sink has it, and returns the commands that came before it.
func (k *commandSink) sync(t *testing.T, nc *nats.Conn) []*nats.Msg {
	t.Helper()
	if err := nc.Publish(syncCmdSubject, nil); err != nil {
		t.Fatal(err)
	}
	var before []*nats.Msg
	testwait.For(t, "the command marker", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		for i, m := range k.msgs {
			if m.Subject == syncCmdSubject {
				before = append([]*nats.Msg(nil), k.msgs[:i]...)
				k.msgs = append(k.msgs[:0:0], k.msgs[i+1:]...)
				return true
			}
		}
		return false
	})
	return before
}

func sinkCommands(t *testing.T, nc *nats.Conn) *commandSink {
	t.Helper()
	k := &commandSink{}
	if _, err := nc.Subscribe("command.>", func(m *nats.Msg) {
		k.mu.Lock()
		k.msgs = append(k.msgs, m)
		k.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCommandPublishedUnchanged(t *testing.T) {
	t.Parallel()
	nc, sim := relayAndSim(t)
	sink := sinkCommands(t, sim)
	r := startRelay(t, nc, Config{})
	sess := r.Session(nil, nil, origin.Trusted)
	body := []byte(`{"action":"load_robot", "cmd_seq":7,"ttl_ms":500,"data":{"name":"go2","x":[1,2]}}`)
	if reply := sess.Command(body); reply != nil {
		t.Fatalf("valid command answered %v", ackOf(t, reply))
	}
	r.RequestKeyframe()
	msgs := sink.sync(t, nc)
	if len(msgs) != 2 {
		t.Fatalf("published %d messages, want 2", len(msgs))
	}
	if msgs[0].Subject != "command.genesis.load_robot" || !bytes.Equal(msgs[0].Data, body) {
		t.Errorf("published %s %s, want command.genesis.load_robot with the body unchanged", msgs[0].Subject, msgs[0].Data)
	}
	if msgs[1].Subject != SubjectForceIDR || string(msgs[1].Data) != `{"cmd_seq":0}` {
		t.Errorf("keyframe request %s %s", msgs[1].Subject, msgs[1].Data)
	}
}

func TestCommandInjectionRejected(t *testing.T) {
	t.Parallel()
	nc, sim := relayAndSim(t)
	sink := sinkCommands(t, sim)
	// A catch-all subscriber: nothing at all may leave for these.
	var all sync.Mutex
	var leaked []string
	if _, err := sim.Subscribe(">", func(m *nats.Msg) {
		if strings.HasPrefix(m.Subject, "_INBOX") {
			return
		}
		all.Lock()
		leaked = append(leaked, m.Subject)
		all.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	// The server must have the subscription before the relay publishes.
	if err := sim.Flush(); err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, nc, Config{Rate: -1})
	sess := r.Session(nil, nil, origin.Trusted)
	for _, c := range []struct {
		name, body string
		action     any
		seq        any
	}{
		{"dot", `{"action":"set_cmd_vel.x","cmd_seq":1}`, "set_cmd_vel.x", 1.0},
		{"star", `{"action":"*","cmd_seq":2}`, "*", 2.0},
		{"gt", `{"action":">","cmd_seq":3}`, ">", 3.0},
		{"dot gt", `{"action":"a.>","cmd_seq":3}`, "a.>", 3.0},
		{"space", `{"action":"set cmd","cmd_seq":4}`, "set cmd", 4.0},
		{"tab", `{"action":"set\tcmd"}`, "set\tcmd", nil},
		{"newline", `{"action":"x\r\nPUB evil 1\r\n"}`, "x\r\nPUB evil 1\r\n", nil},
		{"empty", `{"action":"","cmd_seq":5}`, "", 5.0},
		{"too long", `{"action":"` + strings.Repeat("a", 65) + `"}`, strings.Repeat("a", 65), nil},
		{"unicode", `{"action":"sét"}`, "sét", nil},
		{"non-json", `set_cmd_vel`, nil, nil},
		{"truncated json", `{"action":"set_cmd_vel"`, nil, nil},
		{"array", `["set_cmd_vel"]`, nil, nil},
		{"missing action", `{"cmd_seq":6,"data":{}}`, nil, 6.0},
		{"null action", `{"action":null}`, nil, nil},
		{"number action", `{"action":12,"cmd_seq":"x"}`, nil, nil},
		{"empty body", ``, nil, nil},
	} {
		reply := sess.Command([]byte(c.body))
		if reply == nil {
			t.Errorf("%s: %q was published", c.name, c.body)
			continue
		}
		a := ackOf(t, reply)
		if a["status"] != StatusRejected || a["action"] != c.action || a["cmd_seq"] != c.seq || a["detail"] == "" {
			t.Errorf("%s: ack %v, want rejected with action %v cmd_seq %v", c.name, a, c.action, c.seq)
		}
	}
	if reply := sess.Command([]byte(`{"action":"set-mode_2","cmd_seq":9}`)); reply != nil {
		t.Fatalf("valid action with - and _ answered %v", ackOf(t, reply))
	}
	msgs := sink.sync(t, nc)
	if len(msgs) != 1 || msgs[0].Subject != "command.genesis.set-mode_2" {
		var subs []string
		for _, m := range msgs {
			subs = append(subs, m.Subject)
		}
		t.Fatalf("published %v, want only command.genesis.set-mode_2", subs)
	}
	// The catch-all gets the marker too, after the sink has had it (both
	// are one connection's subscriptions, served in order).
	testwait.For(t, "the marker on the catch-all", func() bool {
		all.Lock()
		defer all.Unlock()
		return len(leaked) > 0 && leaked[len(leaked)-1] == syncCmdSubject
	})
	all.Lock()
	defer all.Unlock()
	if len(leaked) != 2 || leaked[0] != "command.genesis.set-mode_2" {
		t.Fatalf("the catch-all subscriber saw %v, want the one command and the marker", leaked)
	}
}

// A client whose connection's Origin is not trusted has every command
// refused with an ack naming the origin and SDR_ALLOWED_ORIGINS, estop
// included, before its rate limit; nothing reaches NATS, the refusal is
// counted apart and logged once per origin. A trusted client of the same
// relay publishes.
func TestUntrustedOriginCommandsRefused(t *testing.T) {
	t.Parallel()
	nc, sim := relayAndSim(t)
	sink := sinkCommands(t, sim)
	counts := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t"}, []string{"status"})
	var logged bytes.Buffer
	r, err := New(nc, Config{Rate: 0.001, Burst: 1}, slog.New(slog.NewTextHandler(&logged, nil)), &Metrics{Commands: counts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	evil := r.Session(nil, nil, origin.Verdict{Origin: "http://evil.example"})
	for i, body := range []string{`{"action":"estop","cmd_seq":1}`, `{"action":"pause","cmd_seq":2}`, `{"action":"set_cmd_vel","cmd_seq":3}`} {
		a := ackOf(t, evil.Command([]byte(body)))
		if a["status"] != StatusRejected || a["cmd_seq"] != float64(i+1) ||
			a["detail"] != "origin http://evil.example not allowed; add it to SDR_ALLOWED_ORIGINS" {
			t.Fatalf("command %s from an untrusted origin: ack %v", body, a)
		}
	}
	evil2 := r.Session(nil, nil, origin.Verdict{Origin: "http://evil.example"})
	if evil2.Command([]byte(`{"action":"reset"}`)) == nil {
		t.Fatal("a second connection of the untrusted origin published")
	}
	ok := r.Session(nil, nil, origin.Trusted)
	if reply := ok.Command([]byte(`{"action":"pause","cmd_seq":4}`)); reply != nil {
		t.Fatalf("trusted client's command (within its burst) answered %v", ackOf(t, reply))
	}
	msgs := sink.sync(t, nc)
	if len(msgs) != 1 || msgs[0].Subject != "command.genesis.pause" || !strings.Contains(string(msgs[0].Data), `"cmd_seq":4`) {
		t.Fatalf("published %d commands, want only the trusted client's pause", len(msgs))
	}
	var m dto.Metric
	if err := counts.WithLabelValues(StatusRejectedOrigin).Write(&m); err != nil || m.GetCounter().GetValue() != 4 {
		n := m.GetCounter().GetValue()
		t.Errorf("%v commands counted rejected_origin, want 4 (%v)", n, err)
	}
	if n := strings.Count(logged.String(), "http://evil.example"); n != 1 {
		t.Errorf("the untrusted origin was logged %d times, want once:\n%s", n, logged.String())
	}
}

func TestActionAllowlist(t *testing.T) {
	t.Parallel()
	s := natstest.Server(t, nil)
	nc := natstest.Connect(t, s)
	r := startRelay(t, nc, Config{Actions: []string{"set_cmd_vel", "estop"}})
	sess := r.Session(nil, nil, origin.Trusted)
	if reply := sess.Command([]byte(`{"action":"estop"}`)); reply != nil {
		t.Fatalf("allowed action answered %v", ackOf(t, reply))
	}
	a := ackOf(t, sess.Command([]byte(`{"action":"load_policy","cmd_seq":3}`)))
	if a["status"] != StatusRejected || a["detail"] != "action not allowed" {
		t.Fatalf("action outside the allowlist: %v", a)
	}
	if _, err := New(nc, Config{Actions: []string{"a.b"}}, nil, nil); err == nil {
		t.Fatal("an allowlist entry with a dot was accepted")
	}
}

func TestRateLimitPerClient(t *testing.T) {
	t.Parallel()
	s := natstest.Server(t, nil)
	nc := natstest.Connect(t, s)
	r := startRelay(t, nc, Config{Rate: 0.001, Burst: 5})
	a, b := r.Session(nil, nil, origin.Trusted), r.Session(nil, nil, origin.Trusted)
	for i := 0; i < 5; i++ {
		if reply := a.Command([]byte(`{"action":"camera","cmd_seq":1}`)); reply != nil {
			t.Fatalf("command %d within the burst answered %v", i, ackOf(t, reply))
		}
	}
	ack := ackOf(t, a.Command([]byte(`{"action":"camera","cmd_seq":6}`)))
	if ack["status"] != StatusRejected || !strings.Contains(ack["detail"].(string), "rate limit") {
		t.Fatalf("sixth command: %v, want rate-limit rejection", ack)
	}
	if reply := a.Command([]byte(`{"action":"estop"}`)); reply != nil {
		t.Fatalf("estop over the rate limit answered %v", ackOf(t, reply))
	}
	// Another client has its own budget.
	if reply := b.Command([]byte(`{"action":"camera"}`)); reply != nil {
		t.Fatalf("second client answered %v", ackOf(t, reply))
	}
}

func TestCommandsGated(t *testing.T) {
	t.Parallel()
	nc, sim := relayAndSim(t)
	sink := sinkCommands(t, sim)
	r := startRelay(t, nc, Config{})
	// No video yet, and the HOLD threshold already past: stale.
	g := gate.New(gate.Config{Hold: time.Nanosecond, Estop: time.Hour}, nil, gate.Options{})
	codec := 0
	sess := r.Session(g, func() { codec++ }, origin.Trusted)
	for _, a := range []string{"set_cmd_vel", "set_alpha", "set_skill"} {
		ack := ackOf(t, sess.Command([]byte(`{"action":"`+a+`","cmd_seq":11}`)))
		if ack["status"] != StatusGated || ack["action"] != a || ack["cmd_seq"] != 11.0 {
			t.Errorf("%s with stale video: %v, want gated", a, ack)
		}
	}
	for _, a := range []string{"estop", "estop_clear", "pause", "reset"} {
		if reply := sess.Command([]byte(`{"action":"` + a + `"}`)); reply != nil {
			t.Errorf("%s with stale video answered %v, want published", a, ackOf(t, reply))
		}
	}
	if reply := sess.Command([]byte(`{"action":"settings","data":{"codec":"jpeg"}}`)); reply != nil {
		t.Fatalf("settings answered %v", ackOf(t, reply))
	}
	if reply := sess.Command([]byte(`{"action":"settings","data":{"stream_fps":30}}`)); reply != nil {
		t.Fatalf("settings answered %v", ackOf(t, reply))
	}
	if codec != 1 {
		t.Errorf("codec-change hook ran %d times, want 1 (only the settings naming a codec)", codec)
	}
	if n := len(sink.sync(t, nc)); n != 6 {
		t.Errorf("published %d commands, want 6 (4 never-gated, 2 settings)", n)
	}
}

func TestCommandsUnavailableWhileDisconnected(t *testing.T) {
	t.Parallel()
	s := natstest.Server(t, nil)
	nc := natstest.Connect(t, s, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	r := startRelay(t, nc, Config{})
	sess := r.Session(nil, nil, origin.Trusted)
	s.Shutdown()
	testwait.For(t, "the connection to notice the shutdown", func() bool { return nc.Status() != nats.CONNECTED })
	ack := ackOf(t, sess.Command([]byte(`{"action":"estop","cmd_seq":42}`)))
	if ack["status"] != StatusUnavailable || ack["cmd_seq"] != 42.0 {
		t.Fatalf("command with NATS down: %v, want unavailable", ack)
	}
}

func TestValidatePattern(t *testing.T) {
	t.Parallel()
	for p, ok := range map[string]bool{
		"telemetry.>": true, "telemetry.*.stats": true, ">": true, "a": true,
		"": false, "a..b": false, ".a": false, "a.": false, "a.>.b": false,
		"a b": false, "a.b*": false, "a.>x": false, "a\t": false,
	} {
		if err := ValidatePattern(p); (err == nil) != ok {
			t.Errorf("ValidatePattern(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}

func TestMinimalPatterns(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"telemetry.>":                             "telemetry.>",
		"telemetry.>,telemetry.frame.stats":       "telemetry.>",
		"telemetry.frame.stats,telemetry.>":       "telemetry.>",
		"telemetry.*.stats,telemetry.frame.stats": "telemetry.*.stats",
		"a.b,a.b":                             "a.b",
		"a.*,a.>":                             "a.>",
		"a.*,a.b.c":                           "a.*,a.b.c",
		">,x":                                 ">",
		"telemetry.*,telemetry.>,telemetry.>": "telemetry.>",
		"telemetry.frame.*,telemetry.*.stats": "telemetry.frame.*,telemetry.*.stats",
		"telemetry.frame.stats,telemetry.frame.*":   "telemetry.frame.*",
		"telemetry.frame.stats,telemetry.policy.ls": "telemetry.frame.stats,telemetry.policy.ls",
	} {
		if got := strings.Join(minimalPatterns(strings.Split(in, ",")), ","); got != want {
			t.Errorf("minimalPatterns(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestValidAction(t *testing.T) {
	t.Parallel()
	for a, ok := range map[string]bool{
		"set_cmd_vel": true, "force_idr": true, "A-Z_09": true, strings.Repeat("a", 64): true,
		"": false, strings.Repeat("a", 65): false, "a.b": false, "*": false, ">": false, "a b": false, "a\n": false, "é": false,
	} {
		if got := ValidAction(a); got != ok {
			t.Errorf("ValidAction(%q) = %v, want %v", a, got, ok)
		}
	}
}

func TestTelemetryLingerBatchesPerClient(t *testing.T) {
	t.Parallel()
	nc, sim := relayAndSim(t)
	// The burst must reach the relay within the linger after the first
	// hand-off to be one batch: a busy machine gets a longer linger.
	r := startRelay(t, nc, Config{Linger: testwait.Timeout(2 * time.Second)})
	var mu sync.Mutex
	var calls []string
	got := make(chan struct{}, 16)
	for _, name := range []string{"a", "b"} {
		defer r.SubscribeTelemetry(func(m []byte) {
			_, p, _ := wire.ParseTelemetry(m)
			mu.Lock()
			calls = append(calls, name+string(p))
			mu.Unlock()
			got <- struct{}{}
		})()
	}
	// After a quiet spell a message goes at once: a relay that lingers for
	// an hour hands it on within the hang detector, or it waited.
	hour := startRelay(t, nc, Config{Linger: time.Hour})
	atOnce := make(chan struct{}, 1)
	defer hour.SubscribeTelemetry(func([]byte) { atOnce <- struct{}{} })()
	flush(t, nc)
	wait := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			select {
			case <-got:
			case <-testwait.After(10 * time.Second):
				t.Fatalf("got %d of %d deliveries", i, n)
			}
		}
	}
	if err := sim.Publish("telemetry.x", []byte("0")); err != nil {
		t.Fatal(err)
	}
	testwait.Recv(t, atOnce, "the first message after a quiet spell, from a relay lingering an hour")
	wait(2)
	// Within the linger, messages wait and go together.
	publishBurst(t, sim, 5)
	wait(10)
	mu.Lock()
	defer mu.Unlock()
	if s := strings.Join(calls, ","); s != "a0,b0,a1,a2,a3,a4,a5,b1,b2,b3,b4,b5" {
		t.Fatalf("deliveries %s, want the burst as one batch per client, in order", s)
	}
}

// TestRelayStartsBeforeServer: the relay subscribes while NATS is not yet
// reachable; once the server comes up, telemetry and commands flow.
func TestRelayStartsBeforeServer(t *testing.T) {
	t.Parallel()
	port, err := harness.FreePort() // no server there yet
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	nc, err := nats.Connect(url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r, err := New(nc, Config{}, nil, nil)
	if err != nil {
		t.Fatalf("relay on a connection still connecting: %v", err)
	}
	defer r.Close()
	c := newCollector()
	defer r.SubscribeTelemetry(c.fn)()
	sess := r.Session(nil, nil, origin.Trusted)
	if a := ackOf(t, sess.Command([]byte(`{"action":"pause","cmd_seq":1}`))); a["status"] != StatusUnavailable {
		t.Fatalf("command before the server is up: %v", a)
	}

	s := natstest.Server(t, &server.Options{Port: port})
	sim := natstest.Connect(t, s)
	// Once connected, the client library has sent the subscriptions again
	// ahead of anything else; a round trip makes sure the server has them.
	testwait.For(t, "the relay's connection to come up", func() bool { return nc.Status() == nats.CONNECTED })
	flush(t, nc)
	if err := sim.Publish("telemetry.safety.state", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "telemetry once the server is up", func() bool { return len(c.subjects()) == 1 })
	if reply := sess.Command([]byte(`{"action":"pause","cmd_seq":2}`)); reply != nil {
		t.Fatalf("command once connected: %v", ackOf(t, reply))
	}
}

func TestTelemetryBatchSubscriber(t *testing.T) {
	t.Parallel()
	nc, sim := relayAndSim(t)
	// The burst must reach the relay within the linger after the first
	// hand-off to be one batch: a busy machine gets a longer linger.
	r := startRelay(t, nc, Config{Linger: testwait.Timeout(2 * time.Second)})
	batches := make(chan []string, 16)
	defer r.SubscribeTelemetryBatch(func(msgs [][]byte) {
		var b []string
		for _, m := range msgs {
			_, p, _ := wire.ParseTelemetry(m)
			b = append(b, string(p))
		}
		batches <- b
	})()
	flush(t, nc)
	if err := sim.Publish("telemetry.x", []byte("0")); err != nil {
		t.Fatal(err)
	}
	next := func() []string {
		t.Helper()
		select {
		case b := <-batches:
			return b
		case <-testwait.After(10 * time.Second):
			t.Fatal("no batch within 10s")
			return nil
		}
	}
	if b := next(); strings.Join(b, ",") != "0" {
		t.Fatalf("first batch %v, want [0]", b)
	}
	publishBurst(t, sim, 3)
	if b := next(); strings.Join(b, ",") != "1,2,3" {
		t.Fatalf("second batch %v, want [1 2 3] within the linger", b)
	}
}

// TestCommandStrictJSON: with the gate in ESTOP, a body that Go and the
// simulator's Python would read differently (keys equal but for case,
// duplicate keys, invalid UTF-8, a lone surrogate escape) or that Python
// cannot read (nesting deeper than 32) is refused with an ack saying why,
// counted by reason, and never published; a body read by its exact-case
// names only is judged by them; and an unambiguous body, however it is
// spelled, is published byte for byte.
func TestCommandStrictJSON(t *testing.T) {
	t.Parallel()
	nc, sim := relayAndSim(t)
	sink := sinkCommands(t, sim)
	counts := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t"}, []string{"status"})
	r, err := New(nc, Config{Rate: -1}, nil, &Metrics{Commands: counts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	// No video yet and both thresholds past: ESTOP, every motion gated.
	g := gate.New(gate.Config{Hold: time.Nanosecond, Estop: 2 * time.Nanosecond}, nil, gate.Options{})
	sess := r.Session(g, nil, origin.Trusted)
	if ok, mode := g.Allow("set_cmd_vel"); ok || mode != "ESTOP" {
		t.Fatalf("gate %v %s, want ESTOP", ok, mode)
	}
	deep := func(n int) string {
		return `{"action":"pause","cmd_seq":9,"data":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `}`
	}
	for _, c := range []struct {
		name, body, label, detail string
		seq                       any
	}{
		{"case-colliding key", `{"action":"set_cmd_vel","ACTION":"pause","cmd_seq":1}`, "rejected_duplicate_key",
			`command refused: duplicate key "ACTION" (same as "action" but for case) at byte 24`, 1.0},
		{"case-colliding key first", `{"ACTION":"pause","action":"set_cmd_vel"}`, "rejected_duplicate_key",
			`command refused: duplicate key "action" (same as "ACTION" but for case) at byte 18`, nil},
		{"escaped key", `{"action":"set_cmd_vel","\u0041CTION":"pause","cmd_seq":2}`, "rejected_duplicate_key",
			`duplicate key "ACTION"`, 2.0},
		{"duplicate key", `{"action":"pause","action":"set_cmd_vel","cmd_seq":3}`, "rejected_duplicate_key",
			`command refused: duplicate key "action" at byte 18`, 3.0},
		{"nested duplicate", `{"action":"pause","data":{"speed":1,"Speed":9}}`, "rejected_duplicate_key",
			`duplicate key "Speed"`, nil},
		{"invalid UTF-8", "{\"action\":\"pause\",\"cmd_seq\":4,\"data\":\"\xff\"}", "rejected_invalid_utf8",
			"command refused: invalid UTF-8 at byte 38", 4.0},
		{"lone surrogate", `{"action":"pause","data":"\ud800"}`, "rejected_invalid_utf8",
			`command refused: lone surrogate \ud800 at byte 26`, nil},
		{"33 deep", deep(33), "rejected_too_deep", "command refused: nesting deeper than 32 at byte", 9.0},
		{"9990 deep", deep(9990), "rejected_too_deep", "nesting deeper than 32", 9.0},
	} {
		reply := sess.Command([]byte(c.body))
		if reply == nil {
			t.Errorf("%s: published", c.name)
			continue
		}
		a := ackOf(t, reply)
		if a["status"] != StatusRejected || a["action"] != nil || a["cmd_seq"] != c.seq ||
			!strings.Contains(a["detail"].(string), c.detail) {
			t.Errorf("%s: ack %v, want rejected, no action, cmd_seq %v, detail %q", c.name, a, c.seq, c.detail)
		}
	}
	// Only the exact-case name counts: no action, so nothing to publish.
	a := ackOf(t, sess.Command([]byte(`{"ACTION":"pause","cmd_seq":5}`)))
	if a["status"] != StatusRejected || a["detail"] != "command has no action" {
		t.Errorf(`{"ACTION":"pause"}: ack %v, want rejected: command has no action`, a)
	}
	if a := ackOf(t, sess.Command([]byte(`{"action":"set_cmd_vel","cmd_seq":6}`))); a["status"] != StatusGated {
		t.Errorf("set_cmd_vel in ESTOP: %v, want gated", a)
	}
	valid := [][]byte{
		[]byte(deep(32)),
		[]byte(" {\"cmd_seq\" : 7 ,\n\"action\":\"pause\", \"data\":{\"x\":1.50e0,\"s\":\"\\u00e9\u00e9\\ud83d\\ude00\",\"n\":[]}, \"Action2\":1}\t"),
		[]byte(`{"action":"estop","data":{"a":{"a":{"A":1}}}}`),
	}
	for _, body := range valid {
		if reply := sess.Command(body); reply != nil {
			t.Errorf("%.60q answered %v, want published", body, ackOf(t, reply))
		}
	}
	msgs := sink.sync(t, nc)
	if len(msgs) != len(valid) {
		t.Fatalf("published %d commands, want the %d valid ones", len(msgs), len(valid))
	}
	for i, m := range msgs {
		if !bytes.Equal(m.Data, valid[i]) {
			t.Errorf("published %s %q, want %q byte for byte", m.Subject, m.Data, valid[i])
		}
	}
	for label, want := range map[string]float64{"rejected_duplicate_key": 5, "rejected_invalid_utf8": 2, "rejected_too_deep": 2, "rejected": 1, "gated": 1, "published": 3} {
		var m dto.Metric
		if err := counts.WithLabelValues(label).Write(&m); err != nil || m.GetCounter().GetValue() != want {
			t.Errorf("%v commands counted %s, want %v (%v)", m.GetCounter().GetValue(), label, want, err)
		}
	}
}

// TestCommandControlLease: with a control lease, take_control and
// release_control are answered by the session and never published; a
// viewer's motion and estop_clear are refused "not the controller" and never
// published, its estop is; the holder's commands are; allowlist and origin
// still come first for their own refusals.
func TestCommandControlLease(t *testing.T) {
	t.Parallel()
	nc, sim := relayAndSim(t)
	sink := sinkCommands(t, sim)
	states := make(chan *nats.Msg, 16)
	if _, err := sim.ChanSubscribe(lease.Subject, states); err != nil {
		t.Fatal(err)
	}
	flush(t, sim)
	counts := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"status"})
	r, err := New(nc, Config{Actions: []string{"set_cmd_vel", "estop", "estop_clear"}}, nil, &Metrics{Commands: counts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	l, err := lease.New(lease.Config{Stream: "default"}, nc.Publish, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	st := r.Stream(nil, nil, nil).WithLease(l)
	a, b := st.Session(origin.Trusted), st.Session(origin.Trusted)
	if a.Control() == nil || b.Control() == nil || a.Control().ID() == b.Control().ID() {
		t.Fatal("sessions of a stream with a lease have no place of their own in it")
	}

	take := ackOf(t, a.Command([]byte(`{"action":"take_control","cmd_seq":1}`)))
	if take["status"] != StatusOK || take["holder"] != a.Control().ID() || take["cmd_seq"] != 1.0 || take["detail"] != "you have control" {
		t.Fatalf("A's take_control: %v", take)
	}
	if m := testwait.Recv(t, states, "the lease state after A's take"); !strings.Contains(string(m.Data), `"held":true,"holder":"`+a.Control().ID()+`"`) {
		t.Fatalf("state after A's take: %s", m.Data)
	}
	refused := ackOf(t, b.Command([]byte(`{"action":"take_control","cmd_seq":2}`)))
	if refused["status"] != StatusRejected || refused["holder"] != a.Control().ID() || refused["detail"] != "control held by "+a.Control().ID() {
		t.Fatalf("B's take_control while A holds it: %v", refused)
	}
	for _, action := range []string{"set_cmd_vel", "estop_clear", "release_control"} {
		ack := ackOf(t, b.Command([]byte(`{"action":"`+action+`","cmd_seq":3}`)))
		if ack["status"] != StatusRejected || ack["detail"] != lease.NotController || ack["action"] != action {
			t.Errorf("viewer's %s: %v, want rejected %q", action, ack, lease.NotController)
		}
		if _, ok := ack["holder"]; ok {
			t.Errorf("viewer's %s: ack names a holder: %v", action, ack)
		}
	}
	// The allowlist still answers for actions outside it, before the lease.
	if ack := ackOf(t, b.Command([]byte(`{"action":"pause"}`))); ack["detail"] != lease.NotController {
		t.Errorf("viewer's pause: %v", ack)
	}
	estopB := []byte(`{"action":"estop","cmd_seq":4,"data":{"reason":"viewer"}}`)
	if reply := b.Command(estopB); reply != nil {
		t.Fatalf("viewer's estop answered %v, want published", ackOf(t, reply))
	}
	driveA := []byte(`{"action":"set_cmd_vel","cmd_seq":5,"data":{"linear_x":0.5}}`)
	if reply := a.Command(driveA); reply != nil {
		t.Fatalf("holder's set_cmd_vel answered %v, want published", ackOf(t, reply))
	}
	msgs := sink.sync(t, nc)
	if len(msgs) != 2 || msgs[0].Subject != "command.genesis.estop" || !bytes.Equal(msgs[0].Data, estopB) ||
		msgs[1].Subject != "command.genesis.set_cmd_vel" || !bytes.Equal(msgs[1].Data, driveA) {
		var got []string
		for _, m := range msgs {
			got = append(got, m.Subject+" "+string(m.Data))
		}
		t.Fatalf("published %q, want only B's estop and A's set_cmd_vel", got)
	}

	rel := ackOf(t, a.Command([]byte(`{"action":"release_control","cmd_seq":6}`)))
	if rel["status"] != StatusOK || rel["detail"] != "control released" {
		t.Fatalf("A's release_control: %v", rel)
	}
	if m := testwait.Recv(t, states, "the lease state after A's release"); string(m.Data) != `{"stream":"default","held":false}` {
		t.Fatalf("state after A's release: %s", m.Data)
	}
	if ack := ackOf(t, a.Command([]byte(`{"action":"set_cmd_vel","cmd_seq":7}`))); ack["detail"] != lease.NotController {
		t.Errorf("A's set_cmd_vel after its release: %v", ack)
	}
	for label, want := range map[string]float64{StatusControl: 2, StatusRejectedNotController: 6, StatusPublished: 2} {
		var m dto.Metric
		if err := counts.WithLabelValues(label).Write(&m); err != nil || m.GetCounter().GetValue() != want {
			t.Errorf("commands %s: %v, want %v", label, m.GetCounter().GetValue(), want)
		}
	}

	// Without a lease, take_control is an action like any other, as before.
	plain := r.Session(nil, nil, origin.Trusted)
	if plain.Control() != nil {
		t.Fatal("a session without a lease has a place in one")
	}
	if ack := ackOf(t, plain.Command([]byte(`{"action":"take_control"}`))); ack["detail"] != "action not allowed" {
		t.Errorf("take_control without a lease: %v, want the allowlist's answer", ack)
	}
	// An untrusted origin cannot take control.
	evil := st.Session(origin.Verdict{Origin: "http://evil.example"})
	if ack := ackOf(t, evil.Command([]byte(`{"action":"take_control"}`))); !strings.Contains(ack["detail"].(string), "not allowed") {
		t.Errorf("take_control from an untrusted origin: %v", ack)
	}
	if l.State().Held {
		t.Error("the lease is held after the untrusted take_control")
	}
}

// TestKeepJudgedAndNeverPublished sends keep through the command path:
// refused without a keep function, refused by the allowlist, the control
// lease and a keep function's error like any command, taken by the keep
// function (acked ok, with the kept stream) once every check passed, and
// never published on a command subject.
func TestKeepJudgedAndNeverPublished(t *testing.T) {
	t.Parallel()
	nc, sim := relayAndSim(t)
	sink := sinkCommands(t, sim)
	counts := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"status"})
	r, err := New(nc, Config{Actions: []string{"keep", "estop"}}, nil, &Metrics{Commands: counts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	l, err := lease.New(lease.Config{Stream: "default"}, nc.Publish, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	st := r.Stream(gate.New(gate.Config{Hold: time.Nanosecond, Estop: time.Hour}, nil, gate.Options{}), nil, nil).WithLease(l)

	plain := r.Session(nil, nil, origin.Trusted)
	if a := ackOf(t, plain.Command([]byte(`{"action":"keep","cmd_seq":1}`))); a["status"] != StatusRejected || !strings.Contains(a["detail"].(string), "sdr_recorder") {
		t.Errorf("keep without a keep function: %v", a)
	}
	var got [][]byte
	sess := st.Session(origin.Trusted).(*Session)
	sess.SetKeep(func(data []byte) (string, string, error) {
		got = append(got, data)
		if strings.Contains(string(data), "taken") {
			return "", "", errors.New("a window named taken is kept already")
		}
		return "SDR_REC_KEEP_x", "keeping it", nil
	})
	if a := ackOf(t, sess.Command([]byte(`{"action":"keep","cmd_seq":2}`))); a["status"] != StatusRejected || a["detail"] != lease.NotController {
		t.Errorf("keep without control: %v", a)
	}
	if a := ackOf(t, sess.Command([]byte(`{"action":"take_control","cmd_seq":3}`))); a["status"] != StatusOK {
		t.Fatalf("take_control: %v", a)
	}
	// The gate is stale (its hold threshold is 1 ns): keep moves nothing
	// and passes, as estop does.
	a := ackOf(t, sess.Command([]byte(`{"action":"keep","cmd_seq":4,"data":{"name":"x"}}`)))
	if a["status"] != StatusOK || a["kept"] != "SDR_REC_KEEP_x" || a["detail"] != "keeping it" || a["cmd_seq"] != 4.0 || a["action"] != "keep" {
		t.Errorf("keep with control: %v", a)
	}
	if a := ackOf(t, sess.Command([]byte(`{"action":"keep","cmd_seq":5,"data":{"name":"taken"}}`))); a["status"] != StatusRejected || !strings.Contains(a["detail"].(string), "kept already") {
		t.Errorf("keep refused by the keep function: %v", a)
	}
	if fmt.Sprintf("%s", got) != `[{"name":"x"} {"name":"taken"}]` {
		t.Errorf("the keep function got %s", got)
	}
	var m dto.Metric
	if err := counts.WithLabelValues(StatusKept).Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		v := m.GetCounter().GetValue()
		t.Errorf("commands counted kept: %v, want 1", v)
	}
	// Outside the allowlist, keep is refused like any action.
	r2 := startRelay(t, nc, Config{Actions: []string{"estop"}})
	s2 := r2.Session(nil, nil, origin.Trusted)
	s2.SetKeep(func([]byte) (string, string, error) {
		t.Error("keep outside the allowlist reached the keep function")
		return "", "", nil
	})
	if a := ackOf(t, s2.Command([]byte(`{"action":"keep"}`))); a["status"] != StatusRejected || a["detail"] != "action not allowed" {
		t.Errorf("keep outside the allowlist: %v", a)
	}
	for _, m := range sink.sync(t, nc) {
		if strings.HasSuffix(m.Subject, ".keep") {
			t.Errorf("keep published on %s", m.Subject)
		}
	}
}
