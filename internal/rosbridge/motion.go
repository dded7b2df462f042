package rosbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/frame"
)

// zeroTwist is the geometry_msgs/Twist that stops the robot.
var zeroTwist = json.RawMessage(`{"linear":{"x":0.0,"y":0.0,"z":0.0},"angular":{"x":0.0,"y":0.0,"z":0.0}}`)

const (
	// motionWatchEvery is how often the gate is asked while someone drives.
	motionWatchEvery = 100 * time.Millisecond
	// motionLive is how long after the last motion publish that passed the
	// robot counts as driven.
	motionLive = 10 * time.Second
)

// gateMotion asks the gate about a motion publish on topic. It returns nil
// when the publish may pass, else the status for the client; the first
// refusal of a gated episode publishes the stop message upstream. Until the
// gate is armed by its first video frame, motion passes unasked.
func (m *Mux) gateMotion(topic, id string) []byte {
	gate := m.gate()
	if gate == nil {
		if m.opts.AllowMotionWithoutGate {
			return nil
		}
		m.cnt.deny("motion")
		return statusMessage(levelError, id, fmt.Sprintf(
			"publish on %s refused: motion topics need a video safety gate and none is configured", topic))
	}
	if !gate.Armed() {
		// No video yet (no simulator, or one still starting): the old
		// stack never gated ROS publishes, and there is nothing to judge
		// them by. They pass, and count as driving the topic.
		m.motionPassed(topic)
		return nil
	}
	ok, mode := gate.Allow("set_cmd_vel")
	if ok {
		m.motionPassed(topic)
		return nil
	}
	m.cnt.dropG.Inc()
	m.holdMotion(topic, mode)
	return statusMessage(levelWarning, id, fmt.Sprintf(
		"publish on %s dropped: video safety gate is %s (video stale)", topic, mode))
}

// motionPassed ends any gated episode of topic and marks it driven.
func (m *Mux) motionPassed(topic string) {
	m.gatedMu.Lock()
	m.gated[topic] = false
	m.lastPass[topic] = time.Now()
	m.gatedMu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// holdMotion puts topic in a gated episode; the call that starts the
// episode publishes the stop message.
func (m *Mux) holdMotion(topic, mode string) {
	m.gatedMu.Lock()
	first := !m.gated[topic]
	m.gated[topic] = true
	m.gatedMu.Unlock()
	if !first {
		return
	}
	b, _ := json.Marshal(message{Op: "publish", Topic: topic, Msg: m.opts.StopMessage})
	if err := m.sendUp(b); err != nil {
		m.log.Error("stop message not published on gated motion topic", "topic", topic, "error", err)
		return
	}
	m.log.Warn("motion gated: video is stale; published a stop message", "topic", topic, "mode", mode)
}

// watchMotion asks the gate while a motion topic is being driven, so that
// the robot gets its stop message when the video goes stale even if no
// browser publishes again. It sleeps while nobody drives.
func (m *Mux) watchMotion(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("motion watcher panicked", "panic", r)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		}
		tick := time.NewTicker(motionWatchEvery)
		for live := true; live; {
			select {
			case <-ctx.Done():
				tick.Stop()
				return
			case <-tick.C:
			}
			live = m.checkMotion(time.Now())
		}
		tick.Stop()
	}
}

// checkMotion holds the driven topics when the gate (once armed) refuses
// motion, and reports whether any topic is still driven.
func (m *Mux) checkMotion(now time.Time) (live bool) {
	m.gatedMu.Lock()
	var driven []string
	for topic, at := range m.lastPass {
		if now.Sub(at) < motionLive {
			driven = append(driven, topic)
		} else {
			delete(m.lastPass, topic)
		}
	}
	m.gatedMu.Unlock()
	gate := m.gate()
	if len(driven) == 0 || gate == nil || !gate.Armed() {
		return len(driven) > 0
	}
	if ok, mode := gate.Allow("set_cmd_vel"); !ok {
		for _, topic := range driven {
			m.holdMotion(topic, mode)
		}
	}
	return true
}

// SetGate installs the gate that motion publishes answer to from now on,
// on behalf of owner, replacing owner's earlier one. When a Mux outlives
// the configuration that made it (a config reload that keeps it), each
// configuration installs its own gate and drops it when it goes: the newest
// installed gate still in place is the one in force.
func (m *Mux) SetGate(owner any, g frame.MotionGate) {
	m.gatedMu.Lock()
	defer m.gatedMu.Unlock()
	m.dropGateLocked(owner)
	if g != nil {
		m.gates = append(m.gates, ownedGate{owner: owner, gate: g})
	}
}

// DropGate removes owner's gate; the gate installed before it (if any)
// applies again.
func (m *Mux) DropGate(owner any) {
	m.gatedMu.Lock()
	defer m.gatedMu.Unlock()
	m.dropGateLocked(owner)
}

func (m *Mux) dropGateLocked(owner any) {
	m.gates = slices.DeleteFunc(m.gates, func(g ownedGate) bool { return g.owner == owner })
}

func (m *Mux) gate() frame.MotionGate {
	m.gatedMu.Lock()
	defer m.gatedMu.Unlock()
	if len(m.gates) == 0 {
		return nil
	}
	return m.gates[len(m.gates)-1].gate
}
