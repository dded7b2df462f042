package main

// The WebRTC viewer: a pion peer that plays sdr_whep through its own
// shaped UDP socket, with pion's default interceptors (NACK, receiver
// reports, transport-wide congestion control feedback), and a jitter
// buffer that does what a browser's does with a lost packet: it waits
// for the retransmission (up to maxWait after a later packet came), then
// gives the frame up, asks for a keyframe (PLI) and decodes nothing until
// one arrives.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"

	"github.com/sdr-os/sdr-caddy/internal/benchstream"
)

type rtcViewer struct {
	pc        *webrtc.PeerConnection
	conn      *shapedConn
	f         *flow
	maxWait   time.Duration
	location  string
	connected chan struct{}
	connOnce  sync.Once
	done      chan struct{}

	givenUp atomic.Int64 // frames given up for a packet that never came
	plis    atomic.Int64
}

// dialWHEP negotiates a session with the sdr_whep endpoint at whepURL (the
// signaling goes directly; the media through the link).
func dialWHEP(ctx context.Context, whepURL string, l Link, f *flow, maxWait time.Duration) (*rtcViewer, error) {
	raw, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("binding the viewer's udp socket: %w", err)
	}
	sc := shape(raw, l)
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		sc.Close()
		return nil, err
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		sc.Close()
		return nil, err
	}
	// Quiet: closing the viewer's socket is not an error worth a line.
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	var se webrtc.SettingEngine
	se.LoggerFactory = lf
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEUDPMux(webrtc.NewICEUDPMux(lf.NewLogger("ice"), sc))
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		sc.Close()
		return nil, err
	}
	v := &rtcViewer{pc: pc, conn: sc, f: f, maxWait: maxWait, connected: make(chan struct{}), done: make(chan struct{})}
	fail := func(err error) (*rtcViewer, error) { v.close(); return nil, err }
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo,
		webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		return fail(err)
	}
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			v.connOnce.Do(func() { close(v.connected) })
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { v.receive(tr) })
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return fail(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return fail(err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, whepURL, bytes.NewReader([]byte(pc.LocalDescription().SDP)))
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fail(fmt.Errorf("posting the offer to %s: %w", whepURL, err))
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fail(fmt.Errorf("whep %s: %s: %s", whepURL, resp.Status, answer))
	}
	if loc, err := url.Parse(whepURL); err == nil {
		if l, err := loc.Parse(resp.Header.Get("Location")); err == nil {
			v.location = l.String()
		}
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		return fail(err)
	}
	return v, nil
}

// close ends the session: DELETE at the server, then the peer.
func (v *rtcViewer) close() {
	if v.location != "" {
		req, _ := http.NewRequest(http.MethodDelete, v.location, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	_ = v.pc.Close()
	_ = v.conn.Close()
}

// receive runs the jitter buffer over the track's packets.
func (v *rtcViewer) receive(tr *webrtc.TrackRemote) {
	in := make(chan arrival, 4096)
	go func() {
		defer close(in)
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			in <- arrival{p, time.Now()}
		}
	}()
	jb := &jitterBuffer{pkts: map[uint16]arrival{}, maxWait: v.maxWait, needKey: true}
	var lastPLI time.Time
	jb.emit = func(frame []*rtp.Packet) {
		var d codecs.H264Packet
		var au []byte
		for _, p := range frame {
			if out, err := d.Unmarshal(p.Payload); err == nil {
				au = append(au, out...)
			}
		}
		key := benchstream.NALType(au) == benchstream.NALIDR
		if jb.needKey && !key {
			v.f.broken()
			return
		}
		jb.needKey = false
		if sent, ok := benchstream.SentAt(au); ok {
			v.f.decoded(time.Now(), sent, len(au))
		}
	}
	jb.lost = func() {
		v.givenUp.Add(1)
		jb.needKey = true
		if now := time.Now(); now.Sub(lastPLI) > 200*time.Millisecond {
			lastPLI = now
			v.plis.Add(1)
			_ = v.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(tr.SSRC())}})
		}
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case a, ok := <-in:
			if !ok {
				return
			}
			jb.push(a.p, a.at)
		case <-tick.C:
		}
		jb.drain(time.Now())
	}
}

// arrival is a packet with the time it came.
type arrival struct {
	p  *rtp.Packet
	at time.Time
}

// jitterBuffer reassembles frames from RTP packets in sequence order.
type jitterBuffer struct {
	pkts    map[uint16]arrival
	base    uint16 // the first packet of the next frame
	started bool
	maxWait time.Duration
	needKey bool
	emit    func([]*rtp.Packet)
	lost    func()
}

// frameStart reports whether an H.264 RTP payload starts an access unit
// (a single NAL unit, STAP-A, or the first fragment of a FU-A).
func frameStart(payload []byte) bool {
	if len(payload) < 2 {
		return len(payload) == 1
	}
	if t := payload[0] & 0x1f; t == 28 || t == 29 {
		return payload[1]&0x80 != 0
	}
	return true
}

func (j *jitterBuffer) push(p *rtp.Packet, at time.Time) {
	if !j.started {
		if !frameStart(p.Payload) {
			return
		}
		j.started, j.base = true, p.SequenceNumber
	}
	if int16(p.SequenceNumber-j.base) < 0 {
		return // a retransmission too late: its frame is done or given up
	}
	if _, dup := j.pkts[p.SequenceNumber]; !dup {
		j.pkts[p.SequenceNumber] = arrival{p, at}
	}
	if len(j.pkts) > 1<<14 { // far behind: start again at the next frame
		clear(j.pkts)
		j.started = false
		j.lost()
	}
}

// drain hands out the complete frames in order. A frame with a missing
// packet is given up once a later packet has been in for maxWait and the
// next frame's first packet is in: the buffer moves there.
func (j *jitterBuffer) drain(now time.Time) {
	for j.started {
		s := j.base
		var frame []*rtp.Packet
		complete := false
		for range 1 << 14 {
			a, ok := j.pkts[s]
			if !ok {
				break
			}
			frame = append(frame, a.p)
			if a.p.Marker {
				complete = true
				break
			}
			s++
		}
		if complete {
			for k := j.base; k != s+1; k++ {
				delete(j.pkts, k)
			}
			j.base = s + 1
			j.emit(frame)
			continue
		}
		var oldest time.Time
		var next uint16
		found := false
		for seq, a := range j.pkts {
			if int16(seq-s) <= 0 {
				continue
			}
			if oldest.IsZero() || a.at.Before(oldest) {
				oldest = a.at
			}
			if frameStart(a.p.Payload) && (!found || int16(seq-next) < 0) {
				next, found = seq, true
			}
		}
		if oldest.IsZero() || now.Sub(oldest) < j.maxWait || !found {
			return
		}
		for k := j.base; k != next; k++ {
			delete(j.pkts, k)
		}
		j.base = next
		j.lost()
	}
}
