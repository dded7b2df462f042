package lease

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// bus records what a lease publishes.
type bus struct {
	mu   sync.Mutex
	msgs []stateMessage
}

func (b *bus) publish(subject string, payload []byte) error {
	if subject != Subject {
		panic("published on " + subject)
	}
	var m stateMessage
	if err := json.Unmarshal(payload, &m); err != nil {
		panic(err)
	}
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	return nil
}

func (b *bus) all() []stateMessage {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]stateMessage(nil), b.msgs...)
}

// value reads a counter or gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Gauge != nil {
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}

func newTestLease(t *testing.T, cfg Config) (*Lease, *bus, *Metrics) {
	t.Helper()
	b := &bus{}
	m := &Metrics{
		Held:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "held"}),
		Takes:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "takes"}, []string{"result"}),
		Releases: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "releases"}, []string{"reason"}),
		Refused:  prometheus.NewCounter(prometheus.CounterOpts{Name: "refused"}),
	}
	if cfg.Stream == "" {
		cfg.Stream = "default"
	}
	l, err := New(cfg, b.publish, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l, b, m
}

func TestTakeReleaseClose(t *testing.T) {
	t.Parallel()
	l, b, m := newTestLease(t, Config{})
	a, v := l.Conn(), l.Conn()
	if a.ID() == v.ID() || len(a.ID()) != 12 {
		t.Fatalf("ids %q and %q: want two different 12-digit ids", a.ID(), v.ID())
	}
	if ok, holder := a.Take(); !ok || holder != a.ID() {
		t.Fatalf("A takes a free lease: %v %q", ok, holder)
	}
	if ok, holder := v.Take(); ok || holder != a.ID() {
		t.Fatalf("B takes A's lease: %v %q, want refused naming A", ok, holder)
	}
	if ok, _ := a.Take(); !ok {
		t.Fatal("A takes its own lease again: refused")
	}
	if v.Release() {
		t.Fatal("B released a lease it does not hold")
	}
	if !a.Holds() || v.Holds() {
		t.Fatalf("holds: A %v, B %v", a.Holds(), v.Holds())
	}
	if !a.Release() || a.Holds() {
		t.Fatal("A's release failed")
	}
	if ok, _ := v.Take(); !ok {
		t.Fatal("B takes the released lease: refused")
	}
	a.Close() // not the holder: nothing happens
	v.Close()
	v.Close()
	if l.State().Held {
		t.Fatal("closing the holder left the lease held")
	}

	msgs := b.all()
	want := []struct {
		held   bool
		holder string
	}{{true, a.ID()}, {false, ""}, {true, v.ID()}, {false, ""}}
	if len(msgs) != len(want) {
		t.Fatalf("published %+v, want %d messages", msgs, len(want))
	}
	for i, w := range want {
		got := msgs[i]
		if got.Stream != "default" || got.Held != w.held || got.Holder != w.holder || got.You != "" ||
			(w.held && got.SinceMS == 0) || (!w.held && got.SinceMS != 0) {
			t.Errorf("message %d: %+v, want held %v holder %q", i, got, w.held, w.holder)
		}
	}
	if v := value(m.Takes.WithLabelValues("taken")); v != 2 {
		t.Errorf("taken %v, want 2", v)
	}
	if v := value(m.Takes.WithLabelValues("refused")); v != 1 {
		t.Errorf("refused takes %v, want 1", v)
	}
	for reason, n := range map[string]float64{"released": 1, "closed": 1, "idle": 0} {
		if v := value(m.Releases.WithLabelValues(reason)); v != n {
			t.Errorf("releases %s: %v, want %v", reason, v, n)
		}
	}
	if v := value(m.Held); v != 0 {
		t.Errorf("held gauge %v after the last release", v)
	}
}

func TestAllow(t *testing.T) {
	t.Parallel()
	l, _, m := newTestLease(t, Config{})
	a, v := l.Conn(), l.Conn()
	a.Take()
	for _, tc := range []struct {
		action       string
		holder, view bool
	}{
		{"set_cmd_vel", true, false},
		{"set_alpha", true, false},
		{"set_skill", true, false},
		{"estop_clear", true, false},
		{"reset", true, false},
		{"pause", true, false},
		{"load_robot", true, false},
		{"settings", true, false},
		{"camera", true, false},
		{"", true, false},
		{"estop", true, true},
		{"force_idr", true, true},
		{"list_policies", true, true},
	} {
		if got := a.Allow(tc.action); got != tc.holder {
			t.Errorf("holder's %q: allowed %v, want %v", tc.action, got, tc.holder)
		}
		if got := v.Allow(tc.action); got != tc.view {
			t.Errorf("viewer's %q: allowed %v, want %v", tc.action, got, tc.view)
		}
	}
	if v := value(m.Refused); v != 10 {
		t.Errorf("refused %v, want 10", v)
	}
	var none *Conn
	if !none.Allow("set_cmd_vel") || none.Holds() || none.Welcome() != nil || none.ID() != "" {
		t.Error("a nil Conn (no lease) must allow everything and hold nothing")
	}
	none.Close()

	// Viewer actions as configured.
	l3, _, _ := newTestLease(t, Config{ViewerActions: []string{"camera"}})
	if !l3.Conn().Allow("camera") || l3.Conn().Allow("force_idr") {
		t.Error("viewer actions [camera]: camera refused or force_idr passed")
	}
}

func TestIdleRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l, b, m := newTestLease(t, Config{Idle: 30 * time.Second})
		a, v := l.Conn(), l.Conn()
		a.Take()
		// Commands keep the holder's lease: 20 s, a command, 20 s more.
		time.Sleep(20 * time.Second)
		if !a.Allow("set_cmd_vel") {
			t.Fatal("holder refused")
		}
		time.Sleep(20 * time.Second)
		synctest.Wait()
		if !a.Holds() {
			t.Fatal("released 20 s after the holder's last command (idle 30 s)")
		}
		if ok, holder := v.Take(); ok || holder != a.ID() {
			t.Fatalf("B took a lease whose holder was active 20 s ago: %v %q", ok, holder)
		}
		// A viewer's commands do not keep it.
		time.Sleep(9 * time.Second)
		v.Allow("set_cmd_vel")
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if a.Holds() {
			t.Fatal("still held 31 s after the holder's last command")
		}
		msgs := b.all()
		if last := msgs[len(msgs)-1]; last.Held {
			t.Fatalf("last message %+v, want held false", last)
		}
		if n := value(m.Releases.WithLabelValues("idle")); n != 1 {
			t.Errorf("idle releases %v, want 1", n)
		}
		if ok, _ := v.Take(); !ok {
			t.Fatal("B cannot take the lease A left idle")
		}
		// idle off: never released.
		l2, _, _ := newTestLease(t, Config{Idle: -1})
		c := l2.Conn()
		c.Take()
		time.Sleep(24 * time.Hour)
		synctest.Wait()
		if !c.Holds() {
			t.Fatal("idle off: released anyway")
		}
		if ok, _ := l2.Conn().Take(); ok {
			t.Fatal("idle off: another connection took a held lease")
		}
	})
}

func TestWelcome(t *testing.T) {
	t.Parallel()
	l, _, _ := newTestLease(t, Config{Stream: "cam"})
	a, v := l.Conn(), l.Conn()
	read := func(c *Conn) stateMessage {
		subject, payload, err := wire.ParseTelemetry(c.Welcome())
		if err != nil || subject != Subject {
			t.Fatalf("welcome: %q %v", subject, err)
		}
		var m stateMessage
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := read(v); m.Held || m.You != v.ID() || m.Stream != "cam" {
		t.Errorf("welcome of a free lease: %+v", m)
	}
	a.Take()
	if m := read(v); !m.Held || m.Holder != a.ID() || m.You != v.ID() || m.SinceMS == 0 {
		t.Errorf("welcome of A's lease to B: %+v", m)
	}
}

func TestClosedLease(t *testing.T) {
	t.Parallel()
	l, b, _ := newTestLease(t, Config{})
	a := l.Conn()
	a.Take()
	l.Close()
	a.Close()
	if ok, _ := l.Conn().Take(); ok {
		t.Error("took a closed lease")
	}
	if n := len(b.all()); n != 1 {
		t.Errorf("%d messages, want only the take's: a closed lease publishes nothing", n)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		actions []string
		err     string
	}{
		{[]string{"camera", "force_idr"}, ""},
		{[]string{"a.b"}, "not one token"},
		{[]string{"estop"}, "need no listing"},
		{[]string{"take_control"}, "need no listing"},
	} {
		err := Config{ViewerActions: tc.actions}.Validate()
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: %v, want %q", tc.actions, err, tc.err)
		}
	}
	if _, err := New(Config{}, nil, nil, nil); err == nil {
		t.Error("New without a publisher succeeded")
	}
}
