package rtc

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdr-os/sdr-caddy/frame"
	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/rtc/rtctest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
)

// TestDataChannelControlLease: with a control lease, take_control and
// release_control on the commands channel take and give back control and
// are never published; a viewer's gamepad messages and commands are
// dropped (not_controller), its estop is published; the holder's messages
// are published.
func TestDataChannelControlLease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(30*time.Second))
	defer cancel()
	e, err := NewEngine(Config{IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	states := make(chan string, 16)
	l, err := lease.New(lease.Config{Stream: "default"}, func(_ string, p []byte) error {
		states <- string(p)
		return nil
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pubs := make(chan published, 100)
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "m"}, []string{"channel", "result"})
	open := func() (*lease.Conn, *rtctest.Viewer) {
		t.Helper()
		c := l.Conn()
		s, err := e.NewSession(SessionConfig{
			Source: &loopSource{subs: map[int]func(frame.Frame){}},
			Publish: func(subject string, data []byte) error {
				pubs <- published{subject, data}
				return nil
			},
			Control: c,
			Limits:  Limits{ControlRate: 1000, CommandRate: 1000},
			Metrics: Metrics{Messages: msgs},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		v, err := rtctest.NewViewer(true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = v.Close() })
		offer, err := v.Offer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		answer, err := s.Answer(ctx, offer)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Accept(answer); err != nil {
			t.Fatal(err)
		}
		waitOpen(t, ctx, v)
		return c, v
	}
	a, va := open()
	b, vb := open()
	command := func(v *rtctest.Viewer, m string) {
		t.Helper()
		if err := v.Commands.SendText(m); err != nil {
			t.Fatal(err)
		}
	}
	// Each channel is ordered: a marker published after what went before
	// says that all of it has been judged.
	marker := func(v *rtctest.Viewer, what string) {
		t.Helper()
		command(v, `{"action":"estop","marker":"`+what+`"}`)
	}
	expect := func(what string, want ...string) {
		t.Helper()
		for _, w := range want {
			p := testwait.Recv(t, pubs, what)
			if got := p.subject + " " + string(p.data); got != w {
				t.Fatalf("%s: published %q, want %q", what, got, w)
			}
		}
	}

	command(va, `{"action":"take_control"}`)
	var st struct {
		Held    bool   `json:"held"`
		Holder  string `json:"holder"`
		SinceMS int64  `json:"since_ms"`
	}
	if s := testwait.Recv(t, states, "A's take"); json.Unmarshal([]byte(s), &st) != nil || !st.Held || st.Holder != a.ID() || st.SinceMS == 0 {
		t.Fatalf("state after A's take: %s", s)
	}
	// B, a viewer: gamepad and pause dropped, take refused, estop passes.
	if err := vb.Control.Send(gamepad([]float32{1, 0}, 0)); err != nil {
		t.Fatal(err)
	}
	command(vb, `{"action":"pause"}`)
	command(vb, `{"action":"take_control"}`)
	command(vb, `{"action":"release_control"}`)
	marker(vb, "b")
	expect("B's estop", SubjectCommands+` {"action":"estop","marker":"b"}`)
	testwait.For(t, "B's gamepad message dropped", func() bool {
		return counterValue(msgs.WithLabelValues(ChannelControl, "not_controller")) == 1
	})
	if n := counterValue(msgs.WithLabelValues(ChannelCommands, "not_controller")); n != 3 {
		t.Errorf("B's commands dropped as not the controller's: %v, want 3 (pause, take, release)", n)
	}
	// A, the holder: its gamepad and commands pass.
	pad := gamepad([]float32{0.5}, 1)
	if err := va.Control.Send(pad); err != nil {
		t.Fatal(err)
	}
	expect("A's gamepad", SubjectGamepad+" "+string(pad))
	command(va, `{"action":"pause"}`)
	expect("A's pause", SubjectCommands+` {"action":"pause"}`)
	command(va, `{"action":"release_control"}`)
	if s := testwait.Recv(t, states, "A's release"); s != `{"stream":"default","held":false}` {
		t.Fatalf("state after A's release: %s", s)
	}
	command(vb, `{"action":"take_control"}`)
	testwait.Recv(t, states, "B's take")
	if !b.Holds() {
		t.Fatal("B's take_control on its commands channel did not take control")
	}
	if err := vb.Control.Send(pad); err != nil {
		t.Fatal(err)
	}
	expect("B's gamepad once it holds control", SubjectGamepad+" "+string(pad))
	for result, want := range map[string]float64{"control_taken": 2, "control_released": 1} {
		if n := counterValue(msgs.WithLabelValues(ChannelCommands, result)); n != want {
			t.Errorf("commands %s: %v, want %v", result, n, want)
		}
	}
	select {
	case p := <-pubs:
		t.Fatalf("also published %s %q", p.subject, p.data)
	default:
	}
}
