package rosbridge

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/sdr-os/sdr-caddy/internal/lease"
)

// The services a client calls to take and give back the control lease
// (docs/control.md). sdr_ros answers them itself while a lease is in force;
// without one they are ordinary service names.
const (
	ServiceTakeControl    = "/sdr/take_control"
	ServiceReleaseControl = "/sdr/release_control"
)

// ownedLease is a lease and whoever installed it (SetLease).
type ownedLease struct {
	owner any
	lease *lease.Lease
}

// SetLease installs the control lease that motion publishes answer to from
// now on, on behalf of owner, replacing owner's earlier one; as with
// SetGate, the newest installed lease still in place is the one in force.
// A nil lease (the lease is off) is installed too: it lets motion pass as
// before.
func (m *Mux) SetLease(owner any, l *lease.Lease) {
	m.gatedMu.Lock()
	defer m.gatedMu.Unlock()
	m.dropLeaseLocked(owner)
	m.leases = append(m.leases, ownedLease{owner: owner, lease: l})
}

// DropLease removes owner's lease; the one installed before it (if any)
// applies again.
func (m *Mux) DropLease(owner any) {
	m.gatedMu.Lock()
	defer m.gatedMu.Unlock()
	m.dropLeaseLocked(owner)
}

func (m *Mux) dropLeaseLocked(owner any) {
	m.leases = slices.DeleteFunc(m.leases, func(l ownedLease) bool { return l.owner == owner })
}

func (m *Mux) lease() *lease.Lease {
	m.gatedMu.Lock()
	defer m.gatedMu.Unlock()
	if len(m.leases) == 0 {
		return nil
	}
	return m.leases[len(m.leases)-1].lease
}

// control returns c's place in the lease in force, nil when there is none.
// When the lease in force changed (a reload with other settings), c gets a
// place in the new one, and control it held in the old one is released.
func (c *client) control() *lease.Conn {
	l := c.m.lease()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctl.Lease() == l {
		return c.ctl
	}
	c.ctl.Close()
	c.ctl = nil
	if l != nil {
		c.ctl = l.Conn()
	}
	return c.ctl
}

// leaveControl releases control c held; it runs when c leaves.
func (c *client) leaveControl() {
	c.mu.Lock()
	ctl := c.ctl
	c.ctl = nil
	c.mu.Unlock()
	ctl.Close()
}

// motionAllowed reports whether c may publish on the motion topic: always
// without a lease, else only while c holds it. A refusal is answered.
func (c *client) motionAllowed(topic, id string) bool {
	if c.control().Allow("set_cmd_vel") {
		return true
	}
	c.refuse("not_controller", id, fmt.Sprintf("publish on %s refused: %s; call %s first", topic, lease.NotController, ServiceTakeControl))
	return false
}

// controlService answers a call of ServiceTakeControl or
// ServiceReleaseControl while a lease is in force, as a std_srvs/Trigger
// service would: result true and values {success, message}, with the
// holder's id and the caller's own ("you"). It reports whether it answered.
func (c *client) controlService(msg *message) bool {
	if msg.Service != ServiceTakeControl && msg.Service != ServiceReleaseControl {
		return false
	}
	ctl := c.control()
	if ctl == nil {
		return false
	}
	values := struct {
		Success bool   `json:"success"`
		Message string `json:"message"`
		Holder  string `json:"holder,omitempty"`
		You     string `json:"you"`
	}{You: ctl.ID()}
	if msg.Service == ServiceTakeControl {
		ok, holder := ctl.Take()
		values.Success, values.Holder = ok, holder
		switch {
		case ok:
			values.Message = "you have control"
		case holder == "":
			values.Message = "control lease closed"
		default:
			values.Message = "control held by " + holder
		}
	} else {
		values.Success = ctl.Release()
		values.Message = "control released"
		if !values.Success {
			values.Message = lease.NotController
		}
	}
	v, _ := json.Marshal(values)
	b, _ := json.Marshal(struct {
		Op      string          `json:"op"`
		ID      string          `json:"id,omitempty"`
		Service string          `json:"service"`
		Values  json.RawMessage `json:"values"`
		Result  bool            `json:"result"`
	}{"service_response", msg.ID, msg.Service, v, true})
	c.enqueueControl(b, levelNone)
	return true
}
