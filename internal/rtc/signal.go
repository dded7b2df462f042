package rtc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/sdr-os/sdr-caddy/internal/wire"
)

// Signal types of 0x03 messages (docs/protocol.md, "Signalling").
const (
	SignalOffer  = "offer"
	SignalAnswer = "answer"
	SignalICE    = "ice"
	SignalClose  = "close"

	// MaxSessionID is the longest session id taken.
	MaxSessionID = 128
	// answerTimeout bounds the work on one offer.
	answerTimeout = 10 * time.Second
)

// SignalMessage is the JSON of a 0x03 message. Reason is ours: it says
// why a session was refused or ended.
type SignalMessage struct {
	Type          string  `json:"type"`
	SessionID     string  `json:"session_id,omitempty"`
	SDP           string  `json:"sdp,omitempty"`
	Candidate     *string `json:"candidate,omitempty"`
	SDPMid        *string `json:"sdpMid,omitempty"`
	SDPMLineIndex *uint16 `json:"sdpMLineIndex,omitempty"`
	Reason        string  `json:"reason,omitempty"`
}

// EncodeSignal returns a complete 0x03 message.
func EncodeSignal(m SignalMessage) []byte {
	b, _ := json.Marshal(m) // strings and pointers only: cannot fail
	return append([]byte{wire.TypeSignaling}, b...)
}

// Signal is the WebRTC side of one WebSocket client: it answers the
// client's 0x03 offer, trickles candidates both ways, and holds at most
// one session, which ends with the WebSocket.
type Signal struct {
	engine *Engine
	base   SessionConfig
	send   func(msg []byte) bool

	mu      sync.Mutex
	sess    *Session
	id      string
	pending [][]byte // candidates gathered before the answer went out
	ready   bool     // the answer went out
	closed  bool
}

// NewSignal returns the signaling of one WebSocket client. base is the
// configuration of every session it opens; send queues a complete message
// for that client alone and must not block.
func (e *Engine) NewSignal(base SessionConfig, send func(msg []byte) bool) *Signal {
	return &Signal{engine: e, base: base, send: send}
}

// Handle takes the body of a 0x03 message (the bytes after the type byte)
// from the client's reading goroutine. Replies go through send; Handle
// always returns nil, so that it fits a reply-returning dispatcher.
func (g *Signal) Handle(body []byte) []byte {
	var m SignalMessage
	if err := json.Unmarshal(body, &m); err != nil {
		g.count("malformed")
		g.send(EncodeSignal(SignalMessage{Type: SignalClose, Reason: "malformed signaling message: " + err.Error()}))
		return nil
	}
	switch m.Type {
	case SignalOffer:
		g.offer(m)
	case SignalICE:
		g.ice(m)
	case SignalClose:
		g.mu.Lock()
		s, ok := g.sess, g.sess != nil && g.id == m.SessionID
		g.mu.Unlock()
		if !ok {
			g.count("wrong_session")
			return nil
		}
		g.count("close")
		_ = s.Close()
	default:
		g.count("malformed")
		g.send(EncodeSignal(SignalMessage{Type: SignalClose, SessionID: m.SessionID,
			Reason: fmt.Sprintf("unexpected signaling type %q", m.Type)}))
	}
	return nil
}

func (g *Signal) count(result string) {
	if g.base.Metrics.Messages != nil {
		g.base.Metrics.Messages.WithLabelValues("signaling", result).Inc()
	}
}

func (g *Signal) refuse(id, reason string) {
	g.send(EncodeSignal(SignalMessage{Type: SignalClose, SessionID: id, Reason: reason}))
}

func (g *Signal) offer(m SignalMessage) {
	if m.SessionID == "" || len(m.SessionID) > MaxSessionID {
		g.count("malformed")
		g.refuse(m.SessionID, fmt.Sprintf("offer needs a session_id of 1 to %d bytes", MaxSessionID))
		return
	}
	g.mu.Lock()
	switch {
	case g.closed:
		g.mu.Unlock()
		return
	case g.sess != nil:
		open := g.id
		g.mu.Unlock()
		g.count("refused")
		g.refuse(m.SessionID, fmt.Sprintf("session %q is open on this connection; close it first", open))
		return
	}
	id := m.SessionID
	cfg := g.base
	cfg.OnCandidate = func(c *webrtc.ICECandidateInit) {
		msg := SignalMessage{Type: SignalICE, SessionID: id}
		if c == nil {
			empty := ""
			msg.Candidate = &empty
		} else {
			msg.Candidate, msg.SDPMid, msg.SDPMLineIndex = &c.Candidate, c.SDPMid, c.SDPMLineIndex
		}
		b := EncodeSignal(msg)
		g.mu.Lock()
		if !g.ready {
			g.pending = append(g.pending, b)
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.send(b)
	}
	var sess *Session
	cfg.OnClose = func() {
		g.mu.Lock()
		mine := g.sess == sess
		if mine {
			g.sess, g.id, g.ready, g.pending = nil, "", false, nil
		}
		closed := g.closed
		g.mu.Unlock()
		if mine && !closed {
			g.send(EncodeSignal(SignalMessage{Type: SignalClose, SessionID: id, Reason: "session ended"}))
		}
		if g.base.OnClose != nil {
			g.base.OnClose()
		}
	}
	sess, err := g.engine.NewSession(cfg)
	if err != nil {
		g.mu.Unlock()
		g.count("error")
		g.refuse(id, err.Error())
		return
	}
	g.sess, g.id = sess, id
	g.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), answerTimeout)
	defer cancel()
	answer, err := sess.Answer(ctx, m.SDP)
	if err != nil {
		if errors.Is(err, ErrBadOffer) {
			g.count("bad_offer")
		} else {
			g.count("error")
		}
		g.mu.Lock()
		g.sess, g.id, g.pending = nil, "", nil
		g.mu.Unlock()
		_ = sess.Close()
		g.refuse(id, err.Error())
		return
	}
	g.count("answered")
	g.send(EncodeSignal(SignalMessage{Type: SignalAnswer, SessionID: id, SDP: answer}))
	g.mu.Lock()
	pending := g.pending
	g.pending, g.ready = nil, true
	g.mu.Unlock()
	for _, b := range pending {
		g.send(b)
	}
}

func (g *Signal) ice(m SignalMessage) {
	g.mu.Lock()
	s, id := g.sess, g.id
	g.mu.Unlock()
	if s == nil || m.SessionID != id {
		g.count("wrong_session")
		g.refuse(m.SessionID, fmt.Sprintf("no session %q on this connection", m.SessionID))
		return
	}
	if m.Candidate == nil || *m.Candidate == "" {
		return // end of candidates
	}
	c := webrtc.ICECandidateInit{Candidate: *m.Candidate, SDPMid: m.SDPMid, SDPMLineIndex: m.SDPMLineIndex}
	if err := s.AddCandidate(c); err != nil {
		g.count("bad_candidate")
		return
	}
	g.count("ice")
}

// Close ends the session, if any; later messages are ignored. Called when
// the WebSocket closes.
func (g *Signal) Close() {
	g.mu.Lock()
	g.closed = true
	s := g.sess
	g.mu.Unlock()
	if s != nil {
		_ = s.Close()
	}
}
