// Package rtctest is a WebRTC viewer for tests and benchmarks: a pion peer
// that offers to receive H.264 video and opens the browser's `control` and
// `commands` DataChannels, and depacketizes what arrives back into Annex-B
// access units. It also makes real H.264 with the ffmpeg CLI.
package rtctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

// AccessUnit is one depacketized frame: Annex-B NAL units, with the time
// its last packet arrived.
type AccessUnit struct {
	Data    []byte
	Arrived time.Time
}

// Viewer is the receiving peer.
type Viewer struct {
	PC       *webrtc.PeerConnection
	Control  *webrtc.DataChannel
	Commands *webrtc.DataChannel

	Units     chan AccessUnit // buffered; full: units are dropped
	Broken    atomic.Int64    // access units dropped for a lost packet
	Connected chan struct{}

	connOnce sync.Once
}

// NewViewer builds a peer with a recvonly video transceiver and, when
// channels is true, the two DataChannels of the browser app (control
// unordered without retransmits, commands ordered).
func NewViewer(channels bool) (*Viewer, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		return nil, err
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	v := &Viewer{PC: pc, Units: make(chan AccessUnit, 1024), Connected: make(chan struct{})}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo,
		webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		pc.Close()
		return nil, err
	}
	if channels {
		ordered, zero := false, uint16(0)
		if v.Control, err = pc.CreateDataChannel("control", &webrtc.DataChannelInit{Ordered: &ordered, MaxRetransmits: &zero}); err != nil {
			pc.Close()
			return nil, err
		}
		if v.Commands, err = pc.CreateDataChannel("commands", nil); err != nil {
			pc.Close()
			return nil, err
		}
	}
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			v.connOnce.Do(func() { close(v.Connected) })
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		// An access unit is handed out as soon as its last packet (the
		// marker) is in, as a low-latency player does; one with a
		// sequence gap (a lost packet) is dropped and counted.
		var (
			depack  codecs.H264Packet
			au      []byte
			next    uint16
			started bool
			broken  bool
		)
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if started && pkt.SequenceNumber != next {
				if int16(pkt.SequenceNumber-next) < 0 {
					continue // a late retransmission: its frame is gone
				}
				broken = true
			}
			started, next = true, pkt.SequenceNumber+1
			if nal, err := depack.Unmarshal(pkt.Payload); err == nil {
				au = append(au, nal...)
			}
			if !pkt.Marker {
				continue
			}
			if broken {
				v.Broken.Add(1)
			} else if len(au) > 0 {
				select {
				case v.Units <- AccessUnit{Data: au, Arrived: time.Now()}:
				default:
				}
			}
			au, broken, depack = nil, false, codecs.H264Packet{}
		}
	})
	return v, nil
}

// Offer returns the complete offer (every candidate gathered), for WHEP.
func (v *Viewer) Offer(ctx context.Context) (string, error) {
	offer, err := v.PC.CreateOffer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(v.PC)
	if err := v.PC.SetLocalDescription(offer); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	return v.PC.LocalDescription().SDP, nil
}

// Accept takes the answer.
func (v *Viewer) Accept(answer string) error {
	return v.PC.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer})
}

// Close ends the peer.
func (v *Viewer) Close() error { return v.PC.Close() }

// NALTypes returns the H.264 NAL unit types of an Annex-B access unit.
func NALTypes(au []byte) []int {
	var types []int
	for i := 0; i+3 < len(au); i++ {
		if au[i] == 0 && au[i+1] == 0 && au[i+2] == 1 {
			types = append(types, int(au[i+3]&0x1f))
			i += 3
		}
	}
	return types
}

// EncodeH264 encodes n frames of ffmpeg's test pattern (size WxH, one IDR
// every gop frames, baseline profile) and returns them as Annex-B access
// units with whether each is a keyframe.
func EncodeH264(ctx context.Context, n, gop int, size string) (units [][]byte, keys []bool, err error) {
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc=size=%s:rate=30", size), "-frames:v", fmt.Sprint(n),
		"-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-bf", "0",
		"-g", fmt.Sprint(gop), "-keyint_min", fmt.Sprint(gop), "-sc_threshold", "0",
		"-bsf:v", "h264_metadata=aud=insert", "-f", "h264", "-")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, nil, fmt.Errorf("ffmpeg: %w: %s", err, stderr.Bytes())
	}
	// Split at each access unit delimiter (NAL type 9).
	data := out.Bytes()
	var starts []int
	for i := 0; i+4 < len(data); i++ {
		if data[i] == 0 && data[i+1] == 0 && data[i+2] == 0 && data[i+3] == 1 && data[i+4]&0x1f == 9 {
			starts = append(starts, i)
		}
	}
	if len(starts) == 0 {
		return nil, nil, errors.New("ffmpeg output has no access unit delimiters")
	}
	for i, s := range starts {
		end := len(data)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		au := data[s:end]
		units = append(units, au)
		key := false
		for _, t := range NALTypes(au) {
			if t == 5 {
				key = true
			}
		}
		keys = append(keys, key)
	}
	return units, keys, nil
}

// Decode runs the ffmpeg CLI over an Annex-B stream and returns how many
// frames it decoded.
func Decode(ctx context.Context, stream []byte) (int, error) {
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error",
		"-f", "h264", "-i", "-", "-f", "framemd5", "-")
	cmd.Stdin = bytes.NewReader(stream)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("ffmpeg decode: %w: %s", err, stderr.Bytes())
	}
	n := 0
	for _, line := range bytes.Split(out.Bytes(), []byte("\n")) {
		if len(line) > 0 && line[0] != '#' {
			n++
		}
	}
	return n, nil
}
