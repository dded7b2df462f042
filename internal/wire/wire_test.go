package wire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/sdr-os/sdr-caddy/frame"
)

// The vectors the peers in production were checked against.
func TestTelemetryVector(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../testdata/vectors/ws_vectors.json")
	if err != nil {
		t.Fatalf("reading vectors: %v", err)
	}
	var v struct {
		VideoPrefixByte int `json:"video_prefix_byte"`
		Telemetry       struct {
			Subject, Payload, Hex string
		}
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if int(TypeVideo) != v.VideoPrefixByte {
		t.Errorf("video type byte %d, vector says %d", TypeVideo, v.VideoPrefixByte)
	}
	got, err := Telemetry(v.Telemetry.Subject, []byte(v.Telemetry.Payload))
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(got) != v.Telemetry.Hex {
		t.Errorf("telemetry encoding\n got %x\nwant %s", got, v.Telemetry.Hex)
	}
	subj, payload, err := ParseTelemetry(got)
	if err != nil || subj != v.Telemetry.Subject || string(payload) != v.Telemetry.Payload {
		t.Errorf("round trip: %q %q %v", subj, payload, err)
	}
}

func TestVideoRoundTrip(t *testing.T) {
	t.Parallel()
	h := frame.Header{FrameID: 7, FrameSeq: 3, Size: 4, Flags: frame.FlagKeyframe, Codec: frame.CodecH264, CRC32: 9}
	msg := AppendVideo(nil, h, []byte{0, 0, 0, 1})
	if len(msg) != VideoSize(4) || msg[0] != TypeVideo || !bytes.Equal(msg[1:33], h.Bytes()) {
		t.Fatalf("bad video message %x", msg)
	}
	h2, p, err := ParseVideo(msg)
	if err != nil || h2 != h || !bytes.Equal(p, []byte{0, 0, 0, 1}) {
		t.Fatalf("round trip: %+v %x %v", h2, p, err)
	}
}

func TestMalformed(t *testing.T) {
	t.Parallel()
	if _, err := Telemetry(strings.Repeat("a", 257), nil); err == nil {
		t.Error("257-byte subject accepted")
	}
	for _, m := range [][]byte{nil, {2}, {2, 5, 0, 'a'}, {2, 0xff, 0xff}, {1, 2}} {
		if _, _, err := ParseTelemetry(m); err == nil {
			t.Errorf("ParseTelemetry(%x) accepted", m)
		}
		if _, _, err := ParseVideo(m); err == nil {
			t.Errorf("ParseVideo(%x) accepted", m)
		}
	}
}
