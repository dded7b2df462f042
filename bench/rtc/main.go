// Command rtc measures frame age at the receiver over WebRTC against the
// WebSocket path, on the same stream in the same run: a ring written at 60
// frames/s (a 100,000-byte keyframe every 60th frame, 15,000-byte deltas,
// H.264 NAL units with the send time inside), one sdr-caddy process with
// sdr_stream and its webrtc block, one /stream/ws client and one pion
// viewer that negotiates over 0x03 on its own WebSocket. The age is the
// time from writing a frame into the ring to having it complete at the
// receiver (for WebRTC: after depacketization of its last RTP packet).
//
// Flags: -window (default 10s, or $SDR_BENCH_WINDOW), -fps, -gop. The
// binary is $SDR_CADDY_BIN or one built now. Last line:
//
//	BENCH webrtc p50_ms=.. p99_ms=.. ws_p50_ms=.. ws_p99_ms=.. p99_vs_ws=.. webrtc_frames=.. ws_frames=.. sent=..
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/sdr-os/sdr-caddy/internal/benchstream"
	"github.com/sdr-os/sdr-caddy/internal/harness"
	"github.com/sdr-os/sdr-caddy/internal/rtc/rtctest"
	"github.com/sdr-os/sdr-caddy/shmring"
)

const warmUp = 2 * time.Second

var (
	keyBytes   = 100_000
	deltaBytes = 15_000
)

func main() {
	window := flag.Duration("window", 10*time.Second, "measuring window after a 2 s warm-up")
	fps := flag.Int("fps", 60, "frames per second")
	gop := flag.Int("gop", 60, "frames per keyframe")
	flag.IntVar(&keyBytes, "key", keyBytes, "keyframe bytes")
	flag.IntVar(&deltaBytes, "delta", deltaBytes, "delta frame bytes")
	flag.Parse()
	if v := os.Getenv("SDR_BENCH_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			log.Fatalf("SDR_BENCH_WINDOW %q: %v", v, err)
		}
		*window = d
	}
	if err := run(*window, *fps, *gop); err != nil {
		log.Fatal(err)
	}
}

// ages collects frame ages once measuring has started.
type ages struct {
	mu    sync.Mutex
	on    bool
	ms    []float64
	count int
}

func (a *ages) add(sent time.Time) {
	age := float64(time.Since(sent).Microseconds()) / 1000
	a.mu.Lock()
	if a.on {
		a.ms = append(a.ms, age)
	}
	a.mu.Unlock()
}

func (a *ages) start() { a.mu.Lock(); a.on = true; a.mu.Unlock() }

func (a *ages) stop() []float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.on = false
	s := slices.Clone(a.ms)
	slices.Sort(s)
	return s
}

func pct(s []float64, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func run(window time.Duration, fps, gop int) error {
	dir, err := os.MkdirTemp("", "sdr-rtc-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := harness.CaddyBin()
	if err != nil {
		return err
	}
	ringPath := filepath.Join(dir, "frames")
	ring, err := shmring.CreateWriter(ringPath, 1<<20)
	if err != nil {
		return err
	}
	defer ring.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sent int
	var sentMu sync.Mutex
	counting := false
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		period := time.Second / time.Duration(fps)
		next := time.Now()
		for i := 0; ctx.Err() == nil; i++ {
			next = next.Add(period)
			time.Sleep(time.Until(next))
			h := shmring.Header{Codec: shmring.CodecH264}
			size, nal := deltaBytes, byte(1)
			if i%gop == 0 {
				h.Flags, size, nal = shmring.FlagKeyframe, keyBytes, 5
			}
			if _, err := ring.WriteFrame(h, benchstream.AccessUnit(size, nal, time.Now())); err != nil {
				log.Printf("writing frame: %v", err)
			}
			sentMu.Lock()
			if counting {
				sent++
			}
			sentMu.Unlock()
		}
	}()
	defer wg.Wait()
	defer cancel()

	port, err := harness.FreePort()
	if err != nil {
		return err
	}
	conf := fmt.Sprintf(`{
	admin off
	grace_period 1ns
	log {
		level ERROR
	}
}
http://127.0.0.1:%d {
	sdr_stream /stream/ws bench {
		source shm %s
		webrtc {
			include_loopback
		}
	}
}
`, port, ringPath)
	srv, err := harness.StartCaddy("caddy", bin, dir, conf)
	if err != nil {
		return err
	}
	defer func() { _ = srv.Stop(10 * time.Second) }()
	wsURL := fmt.Sprintf("ws://127.0.0.1:%d/stream/ws", port)
	if err := srv.WaitReady(30*time.Second, harness.Answers(fmt.Sprintf("http://127.0.0.1:%d/stream/ws", port))); err != nil {
		return fmt.Errorf("%w\n%s", err, srv.Output())
	}

	var wsAges, rtcAges ages
	// The WebSocket client: 0x01 messages, the payload after 33 bytes.
	wsConn, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", wsURL, err)
	}
	defer wsConn.Close()
	go func() {
		for {
			_, msg, err := wsConn.ReadMessage()
			if err != nil {
				return
			}
			if len(msg) > 33 && msg[0] == 0x01 {
				if t, ok := benchstream.SentAt(msg[33:]); ok {
					wsAges.add(t)
				}
			}
		}
	}()

	// The WebRTC viewer, negotiated over 0x03 on its own WebSocket.
	v, err := rtctest.NewViewer(false)
	if err != nil {
		return err
	}
	defer v.Close()
	if err := negotiate(ctx, wsURL, v); err != nil {
		return err
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case au := <-v.Units:
				if t, ok := benchstream.SentAt(au.Data); ok {
					rtcAges.add(t)
				}
			}
		}
	}()
	select {
	case <-v.Connected:
	case <-time.After(20 * time.Second):
		return fmt.Errorf("webrtc not connected after 20s\n%s", srv.Output())
	}

	time.Sleep(warmUp)
	sentMu.Lock()
	counting = true
	sentMu.Unlock()
	wsAges.start()
	rtcAges.start()
	time.Sleep(window)
	rtcMS, wsMS := rtcAges.stop(), wsAges.stop()
	sentMu.Lock()
	counting = false
	n := sent
	sentMu.Unlock()

	if len(rtcMS) == 0 || len(wsMS) == 0 {
		return fmt.Errorf("no frames measured: webrtc %d, websocket %d\n%s", len(rtcMS), len(wsMS), srv.Output())
	}
	p50, p99 := pct(rtcMS, 0.5), pct(rtcMS, 0.99)
	wp50, wp99 := pct(wsMS, 0.5), pct(wsMS, 0.99)
	fmt.Printf("window %v at %d frames/s, keyframe %d B every %d, deltas %d B; one receiver per path, same stream\n",
		window, fps, keyBytes, gop, deltaBytes)
	fmt.Printf("webrtc:    frames %d/%d  p50 %.2f ms  p99 %.2f ms  max %.2f ms  (access units lost to a missing packet since the start: %d)\n",
		len(rtcMS), n, p50, p99, rtcMS[len(rtcMS)-1], v.Broken.Load())
	fmt.Printf("websocket: frames %d/%d  p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", len(wsMS), n, wp50, wp99, wsMS[len(wsMS)-1])
	ratio := "n/a"
	if wp99 > 0 {
		ratio = fmt.Sprintf("%.2f", p99/wp99)
	}
	fmt.Printf("BENCH webrtc p50_ms=%.2f p99_ms=%.2f ws_p50_ms=%.2f ws_p99_ms=%.2f p99_vs_ws=%s webrtc_frames=%d ws_frames=%d sent=%d\n",
		p50, p99, wp50, wp99, ratio, len(rtcMS), len(wsMS), n)
	return nil
}

// negotiate sends the viewer's offer as a 0x03 message and applies the
// answer and the trickled candidates; the WebSocket stays open (the
// session ends with it).
func negotiate(ctx context.Context, wsURL string, v *rtctest.Viewer) error {
	c, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", wsURL, err)
	}
	go func() { <-ctx.Done(); c.Close() }()
	octx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	offer, err := v.Offer(octx)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(map[string]string{"type": "offer", "session_id": "bench", "sdp": offer})
	if err := c.WriteMessage(websocket.BinaryMessage, append([]byte{0x03}, b...)); err != nil {
		return err
	}
	answered := make(chan error, 1)
	go func() {
		sent := false
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				if !sent {
					answered <- err
				}
				return
			}
			if len(msg) == 0 || msg[0] != 0x03 {
				continue
			}
			var m struct {
				Type          string  `json:"type"`
				SDP           string  `json:"sdp"`
				Candidate     *string `json:"candidate"`
				SDPMid        *string `json:"sdpMid"`
				SDPMLineIndex *uint16 `json:"sdpMLineIndex"`
				Reason        string  `json:"reason"`
			}
			if err := json.Unmarshal(msg[1:], &m); err != nil {
				continue
			}
			switch m.Type {
			case "answer":
				err := v.Accept(m.SDP)
				sent = true
				answered <- err
			case "ice":
				if m.Candidate != nil && *m.Candidate != "" {
					_ = v.PC.AddICECandidate(webrtc.ICECandidateInit{Candidate: *m.Candidate, SDPMid: m.SDPMid, SDPMLineIndex: m.SDPMLineIndex})
				}
			case "close":
				if !sent {
					sent = true
					answered <- fmt.Errorf("session refused: %s", m.Reason)
				}
			}
		}
	}()
	select {
	case err := <-answered:
		return err
	case <-octx.Done():
		return fmt.Errorf("no answer: %w", octx.Err())
	}
}
