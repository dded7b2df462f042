package rtc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdr-os/sdr-caddy/frame"
	sdrframe "github.com/sdr-os/sdr-caddy/internal/frame"
	"github.com/sdr-os/sdr-caddy/internal/keyreq"
	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/origin"
)

// ErrBadOffer wraps every error caused by the remote description.
var ErrBadOffer = errors.New("bad sdp offer")

// Session defaults.
const (
	// DefaultKeyframeCoalesce is the shortest interval between two
	// keyframe requests a session makes on RTCP PLI/FIR.
	DefaultKeyframeCoalesce = keyreq.DefaultInterval
	// DefaultConnectTimeout ends a session whose connection is not up this
	// long after the answer (a player that never connects holds nothing).
	DefaultConnectTimeout = 30 * time.Second
	// DefaultGatherTimeout bounds the wait for ICE gathering when the
	// answer must carry every candidate (WHEP).
	DefaultGatherTimeout = 5 * time.Second
	// frameQueue is how many frames a session may fall behind before it
	// drops to the next keyframe.
	frameQueue = 64
	// rtpPayloadMTU is the payload size of one RTP packet (pion's default).
	rtpPayloadMTU = 1200
)

// Metrics are the collectors a session updates, bound to its stream's
// labels. Nil fields are replaced by unregistered collectors.
type Metrics struct {
	Sessions          prometheus.Gauge
	SessionsStarted   prometheus.Counter
	FramesSent        prometheus.Counter
	FramesDropped     prometheus.Counter // lag: the session's queue was full
	FramesUnsupported prometheus.Counter // not H.264
	KeyframeRequests  prometheus.Counter // PLI/FIR that became a request
	// Messages counts DataChannel messages by channel ("control",
	// "commands", "other") and result ("published", "malformed",
	// "origin", "rate_limited", "gated", "unavailable", "error", the
	// strict JSON check's "duplicate_key", "invalid_utf8", "too_deep", and
	// the control lease's "not_controller", "control_taken",
	// "control_released").
	Messages *prometheus.CounterVec
}

func (m *Metrics) fill() {
	g := func(p *prometheus.Gauge) {
		if *p == nil {
			*p = prometheus.NewGauge(prometheus.GaugeOpts{Name: "unregistered"})
		}
	}
	c := func(p *prometheus.Counter) {
		if *p == nil {
			*p = prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"})
		}
	}
	g(&m.Sessions)
	c(&m.SessionsStarted)
	c(&m.FramesSent)
	c(&m.FramesDropped)
	c(&m.FramesUnsupported)
	c(&m.KeyframeRequests)
	if m.Messages == nil {
		m.Messages = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "unregistered"}, []string{"channel", "result"})
	}
}

// SessionConfig connects one session to its stream.
type SessionConfig struct {
	// Source is the stream's frame source; the session subscribes once its
	// connection is up and sends from the first keyframe.
	Source frame.Source
	// Keyframes receives the session's keyframe requests (at start, after
	// a drop, and on RTCP PLI/FIR); nil: none are made.
	Keyframes frame.KeyframeRequester
	// Gate filters DataChannel messages that move the robot; nil lets
	// every message through.
	Gate sdrframe.MotionGate
	// Publish sends a DataChannel message to NATS; nil drops them (counted
	// "unavailable").
	Publish func(subject string, data []byte) error
	// Verdict is the judgement on the connection that opened the session
	// (internal/origin: its Origin and its Host). When it does not trust
	// the connection, every DataChannel message is refused (counted
	// "origin", whichever rule refused) and the first refusal of each
	// origin or host is logged naming that rule. Nil: trusted (a caller
	// that judges nothing).
	Verdict *origin.Verdict
	// Control is the session's place in the stream's control lease
	// (docs/control.md); nil: the stream has none. A session of a
	// /stream/ws WebSocket shares the WebSocket's (whose owner closes it);
	// a WHEP session has its own. Its DataChannel messages other than
	// estop pass only while it holds control; take_control and
	// release_control on the commands channel take and give it back.
	Control *lease.Conn
	// OnCandidate, when set, receives each local ICE candidate as it is
	// gathered (trickle ICE) and nil at the end, and Answer returns at
	// once. When nil, Answer waits for gathering and returns every
	// candidate in the SDP (WHEP).
	OnCandidate func(c *webrtc.ICECandidateInit)
	// OnCommand, when set, receives each message of the commands channel
	// once it was judged (and published when it passed): its body, the
	// result counted in Metrics.Messages, and why it was not published
	// ("" when it was; the detail of the control lease's answer for
	// take_control and release_control). It runs on the channel's message
	// goroutine after the publish: it must not block, and must not keep
	// body. The flight recorder records the commands with it.
	OnCommand func(body []byte, result, detail string)
	// OnClose is called once when the session ends, for whatever reason.
	OnClose func()
	// Limits of the DataChannels; zero fields take the defaults.
	Limits Limits
	// ConnectTimeout ends the session when its connection is not up this
	// long after the answer. Default: DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Metrics receives the session's counters.
	Metrics Metrics
	// Logger receives the session's logs; nil: the engine's.
	Logger *slog.Logger
}

// Session is one peer connection: the stream's video one way, the
// browser's DataChannels the other.
type Session struct {
	cfg   SessionConfig
	pc    *webrtc.PeerConnection
	track *webrtc.TrackLocalStaticRTP
	log   *slog.Logger
	m     Metrics
	// refusals is the engine's log of refused origins.
	refusals *origin.RefusalLog

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	startOnce sync.Once
	connected atomic.Bool
	timerMu   sync.Mutex
	connTimer *time.Timer
	closeOnce sync.Once
	answered  atomic.Bool
	lagged    atomic.Bool

	kfMu   sync.Mutex
	kfLast time.Time
}

// NewSession builds a peer connection; Answer takes the offer.
func (e *Engine) NewSession(cfg SessionConfig) (*Session, error) {
	if cfg.Source == nil {
		return nil, errors.New("session without a frame source")
	}
	cfg.Metrics.fill()
	cfg.Limits.fill()
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = e.log
	}
	pc, err := e.api.NewPeerConnection(webrtc.Configuration{ICEServers: e.servers})
	if err != nil {
		return nil, fmt.Errorf("creating peer connection: %w", err)
	}
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{
		MimeType:    webrtc.MimeTypeH264,
		ClockRate:   90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
	}, "video", "sdr")
	if err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("creating video track: %w", err)
	}
	s := &Session{cfg: cfg, pc: pc, track: track, log: log, m: cfg.Metrics, refusals: e.refusals}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.m.Sessions.Inc()
	s.m.SessionsStarted.Inc()

	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.connected.Store(true)
			s.startOnce.Do(s.startVideo)
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			go s.Close() // Close waits for pion's callbacks; not from inside one
		}
	})
	pc.OnDataChannel(s.dataChannel)
	if cfg.OnCandidate != nil {
		pc.OnICECandidate(func(c *webrtc.ICECandidate) {
			if c == nil {
				cfg.OnCandidate(nil)
				return
			}
			init := c.ToJSON()
			cfg.OnCandidate(&init)
		})
	}
	return s, nil
}

// Answer takes the remote offer and returns the local answer. An error
// caused by the offer wraps ErrBadOffer. A session answers once.
func (s *Session) Answer(ctx context.Context, offer string) (string, error) {
	if !s.answered.CompareAndSwap(false, true) {
		return "", fmt.Errorf("%w: the session has answered an offer already", ErrBadOffer)
	}
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadOffer, err)
	}
	if s.offersVideo() {
		sender, err := s.pc.AddTrack(s.track)
		if err != nil {
			return "", fmt.Errorf("adding the video track: %w", err)
		}
		s.wg.Add(1)
		go s.readRTCP(sender)
	}
	answer, err := s.pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("%w: creating the answer: %w", ErrBadOffer, err)
	}
	var gathered <-chan struct{}
	if s.cfg.OnCandidate == nil {
		gathered = webrtc.GatheringCompletePromise(s.pc)
	}
	if err := s.pc.SetLocalDescription(answer); err != nil {
		return "", fmt.Errorf("setting the answer: %w", err)
	}
	s.timerMu.Lock()
	if s.ctx.Err() == nil {
		s.connTimer = time.AfterFunc(s.cfg.ConnectTimeout, func() {
			if !s.connected.Load() {
				s.log.Debug("webrtc session not connected in time; closing", "timeout", s.cfg.ConnectTimeout)
				_ = s.Close()
			}
		})
	}
	s.timerMu.Unlock()
	if gathered != nil {
		select {
		case <-gathered:
		case <-ctx.Done():
			return "", fmt.Errorf("gathering ice candidates: %w", ctx.Err())
		case <-time.After(DefaultGatherTimeout):
			s.log.Warn("ice gathering incomplete; answering with the candidates so far", "timeout", DefaultGatherTimeout)
		}
	}
	return s.pc.LocalDescription().SDP, nil
}

// offersVideo reports whether the remote offer has a video section the
// track can go into.
func (s *Session) offersVideo() bool {
	for _, t := range s.pc.GetTransceivers() {
		if t.Kind() == webrtc.RTPCodecTypeVideo {
			return true
		}
	}
	return false
}

// AddCandidate adds a remote ICE candidate (trickle ICE).
func (s *Session) AddCandidate(c webrtc.ICECandidateInit) error {
	if err := s.pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("adding ice candidate %q: %w", c.Candidate, err)
	}
	return nil
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Close ends the session: the peer connection, the subscription and every
// goroutine. It may be called many times.
func (s *Session) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.timerMu.Lock()
		s.cancel()
		if s.connTimer != nil {
			s.connTimer.Stop()
		}
		s.timerMu.Unlock()
		if cerr := s.pc.Close(); cerr != nil {
			err = fmt.Errorf("closing peer connection: %w", cerr)
		}
		s.wg.Wait()
		s.m.Sessions.Dec()
		if s.cfg.OnClose != nil {
			s.cfg.OnClose()
		}
	})
	return err
}

// requestKeyframe asks for an IDR, at most once per DefaultKeyframeCoalesce
// from this session; the stream coalesces again across sessions.
func (s *Session) requestKeyframe() bool {
	if s.cfg.Keyframes == nil {
		return false
	}
	now := time.Now()
	s.kfMu.Lock()
	if !s.kfLast.IsZero() && now.Sub(s.kfLast) < DefaultKeyframeCoalesce {
		s.kfMu.Unlock()
		return false
	}
	s.kfLast = now
	s.kfMu.Unlock()
	s.cfg.Keyframes.RequestKeyframe()
	return true
}

// readRTCP turns the receiver's PLI and FIR into keyframe requests; it also
// drains the RTCP that the interceptors (NACK, reports) need read.
func (s *Session) readRTCP(sender *webrtc.RTPSender) {
	defer s.wg.Done()
	defer s.recoverLog("rtcp reader")
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				if s.requestKeyframe() {
					s.m.KeyframeRequests.Inc()
				}
			}
		}
	}
}

func (s *Session) recoverLog(what string) {
	if v := recover(); v != nil {
		s.log.Error("webrtc session goroutine panicked", "goroutine", what, "panic", v)
	}
}

// startVideo subscribes to the source once the connection is up: the
// source replays its current GOP, so the first keyframe comes at once when
// it has one.
func (s *Session) startVideo() {
	if s.ctx.Err() != nil {
		return
	}
	frames := make(chan frame.Frame, frameQueue)
	cancel := s.cfg.Source.Subscribe(func(f frame.Frame) {
		select {
		case frames <- f:
		default:
			s.lagged.Store(true)
			s.m.FramesDropped.Inc()
		}
	})
	s.requestKeyframe()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		defer s.recoverLog("video writer")
		s.writeVideo(frames)
	}()
}

// writeVideo packetizes each H.264 access unit (Annex-B) into RTP, from the
// first keyframe on. RTP timestamps follow the time of sending, so that a
// replayed GOP is shown at once rather than paced behind real time.
func (s *Session) writeVideo(frames <-chan frame.Frame) {
	var (
		payloader codecs.H264Payloader
		seq       = uint16(time.Now().UnixNano())
		start     = time.Now()
		lastTS    uint32
		needKey   = true
	)
	for {
		var f frame.Frame
		select {
		case <-s.ctx.Done():
			return
		case f = <-frames:
		}
		if f.Header.Codec != frame.CodecH264 {
			s.m.FramesUnsupported.Inc()
			continue
		}
		key := f.Header.Keyframe()
		if s.lagged.Swap(false) {
			// Frames this session dropped: what follows cannot be decoded
			// until a keyframe.
			needKey = true
			if s.requestKeyframe() {
				s.m.KeyframeRequests.Inc()
			}
		} else if f.Discontinuity && !key && s.requestKeyframe() {
			// Frames the source missed: like the WebSocket clients, the
			// session goes on (the writer may use intra refresh) and asks
			// for a keyframe; the player's PLI asks again if it must.
			s.m.KeyframeRequests.Inc()
		}
		if needKey && !key {
			continue
		}
		needKey = false
		ts := uint32(time.Since(start) * 90000 / time.Second)
		if ts <= lastTS && lastTS != 0 {
			ts = lastTS + 1
		}
		lastTS = ts
		payloads := payloader.Payload(rtpPayloadMTU, f.Payload)
		for i, p := range payloads {
			pkt := rtp.Packet{
				Header: rtp.Header{
					Version:        2,
					Marker:         i == len(payloads)-1,
					SequenceNumber: seq,
					Timestamp:      ts,
				},
				Payload: p,
			}
			seq++
			if err := s.track.WriteRTP(&pkt); err != nil {
				if s.ctx.Err() == nil {
					s.log.Debug("writing rtp", "error", err)
				}
				break
			}
		}
		s.m.FramesSent.Inc()
	}
}
