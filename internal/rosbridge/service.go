package rosbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// servicePool carries service calls on upstream connections of their own,
// so that a service that hangs never holds up topic traffic. Each call gets
// an upstream id of the pool's making; the response is routed back to the
// caller under the caller's own id, or the caller gets service_response
// result:false when the timeout passes first.
type servicePool struct {
	m     *Mux
	links []*link

	mu       sync.Mutex
	pending  map[string]*pendingCall
	inflight []int
	next     uint64
}

type pendingCall struct {
	c        *client
	id       string // the caller's id
	service  string
	link     int
	fragSize int // the caller's fragment_size: its response is cut into fragments
	timer    *time.Timer
}

func newServicePool(m *Mux, dialer *websocket.Dialer) *servicePool {
	p := &servicePool{m: m, pending: map[string]*pendingCall{}}
	n := m.opts.ServiceConnections
	p.inflight = make([]int, n)
	for i := 0; i < n; i++ {
		i := i
		p.links = append(p.links, &link{
			name: "services-" + strconv.Itoa(i), url: m.opts.Upstream, dialer: dialer, log: m.log,
			minBackoff: m.opts.MinBackoff, maxBackoff: m.opts.MaxBackoff, readLimit: m.opts.MaxUpstreamMessageSize,
			guard: &sync.Mutex{}, up: func() error { return nil },
			down:      func() { p.failLink(i, "rosbridge upstream connection lost") },
			onMessage: func(typ int, data []byte) { p.fromUpstream(typ, data) },
		})
	}
	return p
}

func (p *servicePool) start(ctx context.Context, wg *sync.WaitGroup) {
	for _, l := range p.links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(ctx)
		}()
	}
}

// call sends one call_service upstream for client c.
func (p *servicePool) call(c *client, msg *message) {
	timeout := p.m.opts.ServiceTimeout
	if msg.Timeout > 0 && msg.Timeout < timeout.Seconds() {
		timeout = time.Duration(msg.Timeout * float64(time.Second))
	}
	p.mu.Lock()
	mine := 0
	for _, call := range p.pending {
		if call.c == c {
			mine++
		}
	}
	if mine >= maxClientCalls {
		p.mu.Unlock()
		c.m.cnt.deny("service")
		c.enqueueControl(serviceFailure(msg.ID, msg.Service, fmt.Sprintf("too many service calls in flight (at most %d per client)", maxClientCalls)), levelNone)
		return
	}
	best := -1
	for i, l := range p.links {
		if l.connected() && (best < 0 || p.inflight[i] < p.inflight[best]) {
			best = i
		}
	}
	if best < 0 {
		p.mu.Unlock()
		c.enqueueControl(serviceFailure(msg.ID, msg.Service, "rosbridge upstream not connected"), levelNone)
		return
	}
	p.next++
	upID := "sdr_ros:call:" + strconv.FormatUint(p.next, 10)
	call := &pendingCall{c: c, id: msg.ID, service: msg.Service, link: best}
	if msg.FragmentSize > 0 {
		call.fragSize = max(minFragment, msg.FragmentSize)
	}
	p.pending[upID] = call
	p.inflight[best]++
	call.timer = time.AfterFunc(timeout, func() { p.expire(upID, timeout) })
	p.mu.Unlock()

	up := struct {
		Op      string          `json:"op"`
		ID      string          `json:"id"`
		Service string          `json:"service"`
		Args    json.RawMessage `json:"args,omitempty"`
		Timeout float64         `json:"timeout,omitempty"`
	}{"call_service", upID, msg.Service, msg.Args, msg.Timeout}
	b, _ := json.Marshal(up)
	if err := p.links[best].send(b); err != nil {
		if p.take(upID) != nil {
			c.enqueueControl(serviceFailure(msg.ID, msg.Service, err.Error()), levelNone)
		}
		return
	}
	p.m.cnt.upOut.Inc()
}

// take removes a pending call; nil when it was already answered.
func (p *servicePool) take(upID string) *pendingCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	call := p.pending[upID]
	if call == nil {
		return nil
	}
	delete(p.pending, upID)
	p.inflight[call.link]--
	call.timer.Stop()
	return call
}

func (p *servicePool) expire(upID string, after time.Duration) {
	call := p.take(upID)
	if call == nil {
		return
	}
	p.m.cnt.m.ServiceTimeouts.Inc()
	p.m.log.Warn("rosbridge service call timed out", "service", call.service, "timeout", after)
	call.c.enqueueControl(serviceFailure(call.id, call.service,
		fmt.Sprintf("service %s did not answer within %v", call.service, after)), levelNone)
}

// failLink answers every call in flight on link i with result false.
func (p *servicePool) failLink(i int, why string) {
	p.mu.Lock()
	var failed []*pendingCall
	for id, call := range p.pending {
		if call.link == i {
			delete(p.pending, id)
			call.timer.Stop()
			failed = append(failed, call)
		}
	}
	p.inflight[i] = 0
	p.mu.Unlock()
	for _, call := range failed {
		call.c.enqueueControl(serviceFailure(call.id, call.service, why), levelNone)
	}
}

// cancelClient forgets the calls of a client that left.
func (p *servicePool) cancelClient(c *client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, call := range p.pending {
		if call.c == c {
			delete(p.pending, id)
			p.inflight[call.link]--
			call.timer.Stop()
		}
	}
}

// fromUpstream routes a service connection's message to its caller.
func (p *servicePool) fromUpstream(typ int, data []byte) {
	p.m.cnt.upIn.Inc()
	if typ != websocket.TextMessage {
		return
	}
	var head struct {
		Op    string `json:"op"`
		ID    string `json:"id"`
		Level string `json:"level"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		p.m.log.Warn("invalid message from rosbridge upstream", "error", err)
		return
	}
	switch head.Op {
	case "service_response":
		call := p.take(head.ID)
		if call == nil {
			return // answered already (timeout) or the caller left
		}
		b, err := withID(data, call.id)
		if err != nil {
			b = serviceFailure(call.id, call.service, "invalid service_response from upstream")
		}
		if call.fragSize > 0 && len(b) > call.fragSize {
			call.c.enqueueReply(fragments(call.id, b, call.fragSize), levelNone)
			return
		}
		call.c.enqueueControl(b, levelNone)
	case "status":
		p.mu.Lock()
		call := p.pending[head.ID]
		p.mu.Unlock()
		if call == nil {
			return
		}
		level, ok := parseLevel(head.Level)
		if !ok {
			level = levelError
		}
		if b, err := withID(data, call.id); err == nil {
			call.c.enqueueControl(b, level)
		}
	}
}
