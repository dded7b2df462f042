package rtc

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sdr-os/sdr-caddy/internal/chromium"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// chromiumUpgrade is what the browser app does: on the page's origin, open
// /stream/ws, offer a recvonly video transceiver and the `control` and
// `commands` DataChannels over 0x03, trickle candidates both ways; then
// wait for decoded frames and send one message on each channel.
const chromiumUpgrade = `(async () => {
  const sid = 'chromium-1';
  const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/stream/ws');
  ws.binaryType = 'arraybuffer';
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error('websocket failed')); });
  const send = (m) => ws.send(new Uint8Array([3, ...new TextEncoder().encode(JSON.stringify(m))]));
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  const control = pc.createDataChannel('control', { ordered: false, maxRetransmits: 0 });
  const commands = pc.createDataChannel('commands');
  const signals = [];
  ws.onmessage = async (e) => {
    const b = new Uint8Array(e.data);
    if (b[0] !== 3) return;
    const m = JSON.parse(new TextDecoder().decode(b.subarray(1)));
    signals.push(m.type);
    if (m.type === 'answer') await pc.setRemoteDescription({ type: 'answer', sdp: m.sdp });
    else if (m.type === 'ice' && m.candidate) await pc.addIceCandidate({ candidate: m.candidate, sdpMid: m.sdpMid, sdpMLineIndex: m.sdpMLineIndex });
  };
  pc.onicecandidate = (e) => {
    if (e.candidate) send({ type: 'ice', session_id: sid, candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex });
  };
  await pc.setLocalDescription(await pc.createOffer());
  const offerH264 = /H264/.test(pc.localDescription.sdp);
  send({ type: 'offer', session_id: sid, sdp: pc.localDescription.sdp });
  const deadline = Date.now() + 30000;
  let decoded = 0, codec = '', width = 0;
  while (Date.now() < deadline) {
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') { decoded = r.framesDecoded || 0; width = r.frameWidth || 0; }
      if (r.type === 'codec' && /video/.test(r.mimeType)) codec = r.mimeType;
    });
    if (decoded >= 30 && control.readyState === 'open' && commands.readyState === 'open') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (control.readyState === 'open') {
    const pad = new DataView(new ArrayBuffer(1 + 4 * 2 + 4));
    pad.setUint8(0, 2); pad.setFloat32(1, 0.5, true); pad.setFloat32(5, -0.25, true); pad.setUint32(9, 6, true);
    control.send(pad.buffer);
  }
  if (commands.readyState === 'open') commands.send(JSON.stringify({ action: 'pause', cmd_seq: 42 }));
  await new Promise((r) => setTimeout(r, 500));
  return JSON.stringify({ offerH264, decoded, codec, width, state: pc.connectionState, signals });
})()`

// Headless Chromium does what the browser app does over /stream/ws: the
// server answers its 0x03 offer, Chromium decodes the H.264 track, and its
// DataChannel messages arrive on NATS.
func TestChromiumUpgrade(t *testing.T) {
	if err := chromium.Available(); err != nil {
		t.Skip(err)
	}
	natsURL := testenv.StartNATS(t)
	msgs := testenv.Collect(t, testenv.ConnectNATS(t, natsURL), "control.>")
	path, _ := playRing(t)
	port := testenv.FreePort(t)
	cf := testenv.Caddyfile(port, testenv.NATSOptions(natsURL), fmt.Sprintf(`	handle /stream/ws {
		sdr_stream cam {
			source shm %s
			webrtc {
				include_loopback
			}
		}
	}
	handle {
		sdr_player
	}`, path))
	testenv.StartCaddy(t, cf, nil, nil)

	bctx, bcancel := context.WithTimeout(context.Background(), testwait.Timeout(90*time.Second))
	defer bcancel()
	d, err := chromium.Start(bctx, t.TempDir(), testwait.Timeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Do("open", map[string]any{"name": "main", "url": fmt.Sprintf("http://127.0.0.1:%d/", port)}, nil); err != nil {
		t.Fatal(err)
	}
	var res struct {
		Value string `json:"value"`
	}
	if err := d.Do("eval", map[string]any{"name": "main", "expr": chromiumUpgrade}, &res); err != nil {
		t.Fatalf("upgrade script: %v\n%s", err, d.Stderr())
	}
	var got struct {
		OfferH264 bool     `json:"offerH264"`
		Decoded   int      `json:"decoded"`
		Codec     string   `json:"codec"`
		Width     int      `json:"width"`
		State     string   `json:"state"`
		Signals   []string `json:"signals"`
	}
	if err := json.Unmarshal([]byte(res.Value), &got); err != nil {
		t.Fatalf("script result %q: %v", res.Value, err)
	}
	t.Logf("chromium: %+v", got)
	if len(got.Signals) == 0 || got.Signals[0] != "answer" {
		t.Fatalf("0x03 messages %v, want an answer first", got.Signals)
	}
	if !got.OfferH264 {
		t.Skipf("this chromium offers no H.264 for WebRTC; signaling answered (%v)", got.Signals)
	}
	if got.State != "connected" || got.Decoded < 30 || !strings.Contains(got.Codec, "H264") || got.Width != 320 {
		t.Fatalf("chromium: %+v, want connected, H264, 30 frames of width 320 decoded", got)
	}
	expectControl(t, msgs, gamepad([]float32{0.5, -0.25}, 6), `"cmd_seq":42`)
}
