// Package rtc holds live tests of WebRTC in the built binary: a real ring
// written with real H.264 (ffmpeg), a pion viewer negotiating over WHEP and
// over 0x03 on /stream/ws, a real nats-server receiving the DataChannels.
package rtc

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sdr-os/sdr-caddy/internal/rtc/rtctest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/shmring/shmringtest"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// h264 is real H.264 from ffmpeg, encoded once per test process.
var h264 = sync.OnceValues(func() ([][]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(60*time.Second))
	defer cancel()
	units, keys, err := rtctest.EncodeH264(ctx, 60, 30, "320x240")
	if err != nil {
		return nil, err
	}
	if !keys[0] {
		return nil, fmt.Errorf("first access unit is not a keyframe")
	}
	return units, nil
})

// playRing writes the encoded units into a new ring at 30 frames/s in a
// loop (a keyframe every 30), as the simulator does, until the test ends or
// stop is called; stop returns once the writer is done.
func playRing(t *testing.T) (path string, stop func()) {
	t.Helper()
	units, err := h264()
	if err != nil {
		t.Fatal(err)
	}
	w := shmringtest.NewWriter(t, "", 1<<20)
	return w.Path, w.Start(t, shmringtest.Cadence{Period: time.Second / 30, GOP: 30,
		Payload: func(i int) []byte { return units[i%len(units)] }})
}

type server struct {
	caddy *testenv.Caddy
	base  string
	ws    string
}

// startServer runs the binary with one site: sdr_stream with a webrtc block
// at /stream/ws and sdr_whep at /whep, both on the ring at path.
func startServer(t *testing.T, natsURL, path string) *server {
	t.Helper()
	port := testenv.FreePort(t)
	cf := testenv.Caddyfile(port, testenv.NATSOptions(natsURL), fmt.Sprintf(`	handle /stream/* {
		sdr_stream cam {
			source shm %s
			webrtc {
				include_loopback
			}
		}
	}
	sdr_whep /whep* cam {
		source shm %s
		include_loopback
		max_sessions 4
	}`, path, path))
	s := &server{base: fmt.Sprintf("http://127.0.0.1:%d", port), ws: fmt.Sprintf("ws://127.0.0.1:%d", port)}
	s.caddy = testenv.StartCaddy(t, cf, nil, nil)
	return s
}

var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: testwait.Timeout(30 * time.Second)}

// metric returns the sum of the samples of a metric whose labels contain
// every string of match, from the admin endpoint.
func (s *server) metric(t *testing.T, name string, match ...string) float64 {
	t.Helper()
	samples, err := testenv.Metrics(s.caddy.AdminAddr)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	sum := 0.0
series:
	for series, value := range samples {
		if !strings.HasPrefix(series, name+"{") && series != name {
			continue
		}
		for _, m := range match {
			if !strings.Contains(series, m) {
				continue series
			}
		}
		v, err := strconv.ParseFloat(value, 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

func (s *server) waitMetric(t *testing.T, what string, ok func() bool) {
	t.Helper()
	testwait.For(t, what, ok)
}

// whep posts an offer; it returns the status, the body and the Location.
func (s *server) whep(t *testing.T, contentType, offer string) (int, string, string) {
	t.Helper()
	resp, err := client.Post(s.base+"/whep", contentType, strings.NewReader(offer))
	if err != nil {
		t.Fatalf("whep post: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header.Get("Location")
}

func (s *server) delete(t *testing.T, location string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, s.base+location, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("whep delete: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// receiveVideo reads access units until it holds n in a row that follow
// the clip without a gap, from a keyframe on, and has ffmpeg decode them
// all. The first unit the viewer gets must carry SPS, PPS and an IDR.
//
// A loaded machine loses frames: the server's ring reader may miss some
// (the session goes on and asks for a keyframe, as documented) and UDP on
// loopback may drop packets (the viewer drops the unit). What follows a gap
// cannot be decoded until the next keyframe, so a gap starts the run
// again; only the hang detector limits how long that may take. Each unit is
// recognised by its slices, which differ in every frame of the clip.
func receiveVideo(t *testing.T, v *rtctest.Viewer, n int) {
	t.Helper()
	units, err := h264()
	if err != nil {
		t.Fatal(err)
	}
	index := make(map[string]int, len(units))
	for k, u := range units {
		index[string(slices(u))] = k
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(30*time.Second))
	defer cancel()
	var (
		run      [][]byte // the units of the current run
		last     int      // the clip index of the run's last unit
		received int
		restarts int
	)
	for len(run) < n {
		var au rtctest.AccessUnit
		select {
		case au = <-v.Units:
		case <-ctx.Done():
			t.Fatalf("received %d access units (%d lost to the viewer), no %d in a row without a gap from a keyframe (%d gaps)",
				received, v.Broken.Load(), n, restarts)
		}
		received++
		types := rtctest.NALTypes(au.Data)
		if received == 1 && v.Broken.Load() == 0 && !(has(types, 7) && has(types, 8) && has(types, 5)) {
			t.Fatalf("first access unit has NAL types %v, want SPS (7), PPS (8) and IDR (5)", types)
		}
		k, ok := index[string(slices(au.Data))]
		if !ok {
			t.Fatalf("access unit %d (NAL types %v) is none of the clip's", received, types)
		}
		switch {
		case len(run) > 0 && k == (last+1)%len(units):
		case has(types, 5):
			if len(run) > 0 {
				restarts++
			}
			run = run[:0]
		default:
			if len(run) > 0 {
				restarts++
				run = run[:0]
			}
			continue // wait for a keyframe
		}
		run, last = append(run, au.Data), k
	}
	decoded, err := rtctest.Decode(ctx, bytes.Join(run, nil))
	if err != nil {
		t.Fatal(err)
	}
	if decoded != n {
		t.Fatalf("ffmpeg decoded %d frames of %d received in a row", decoded, n)
	}
	t.Logf("received %d access units (%d lost to the viewer, %d gaps), ffmpeg decoded the last %d in a row", received, v.Broken.Load(), restarts, decoded)
}

// slices returns the slice NAL units (types 1 and 5) of an Annex-B access
// unit, without their start codes: what identifies a frame whatever the
// packetizer did with the parameter sets and delimiters around it.
func slices(au []byte) []byte {
	var out []byte
	var starts []int // where each NAL begins, after its start code
	for i := 0; i+3 <= len(au); i++ {
		if au[i] == 0 && au[i+1] == 0 && au[i+2] == 1 {
			starts = append(starts, i+3)
			i += 2
		}
	}
	for j, b := range starts {
		e := len(au)
		if j+1 < len(starts) {
			e = starts[j+1] - 3
			for e > b && au[e-1] == 0 { // a 4-byte start code's leading zero
				e--
			}
		}
		if b < e && (au[b]&0x1f == 1 || au[b]&0x1f == 5) {
			out = append(out, au[b:e]...)
		}
	}
	return out
}

func has(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func gamepad(axes []float32, buttons uint32) []byte {
	b := []byte{byte(len(axes))}
	for _, a := range axes {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(a))
	}
	return binary.LittleEndian.AppendUint32(b, buttons)
}

func waitOpen(t *testing.T, v *rtctest.Viewer) {
	t.Helper()
	testwait.For(t, "the datachannels to open", func() bool {
		return v.Control.ReadyState().String() == "open" && v.Commands.ReadyState().String() == "open"
	})
}

// offerViewer makes a pion viewer, with the control and commands
// DataChannels when channels is set, and its offer; the caller closes it.
func offerViewer(t *testing.T, channels bool) (*rtctest.Viewer, string) {
	t.Helper()
	v, err := rtctest.NewViewer(channels)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout(20*time.Second))
	defer cancel()
	offer, err := v.Offer(ctx)
	if err != nil {
		v.Close()
		t.Fatal(err)
	}
	return v, offer
}

// expectControl waits for a gamepad message equal to pad and a command
// containing cmd on NATS, in either order (the two channels are separate
// SCTP streams).
func expectControl(t *testing.T, msgs <-chan *nats.Msg, pad []byte, cmd string) {
	t.Helper()
	var gotPad, gotCmd bool
	testenv.ExpectMsg(t, msgs, "control.gamepad and control.commands", 10*time.Second, func(m *nats.Msg) bool {
		switch {
		case m.Subject == "control.gamepad" && string(m.Data) == string(pad):
			gotPad = true
		case m.Subject == "control.commands" && strings.Contains(string(m.Data), cmd):
			gotCmd = true
		}
		return gotPad && gotCmd
	})
}
