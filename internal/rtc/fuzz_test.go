package rtc

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sdr-os/sdr-caddy/frame"
)

// FuzzParseGamepad: any bytes give either an error or axes and buttons
// that re-encode to the same message.
func FuzzParseGamepad(f *testing.F) {
	f.Add(gamepad([]float32{0.5, -1}, 3))
	f.Add([]byte{0})
	f.Add([]byte{255, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, msg []byte) {
		axes, buttons, err := ParseGamepad(msg)
		if err != nil {
			return
		}
		b := []byte{byte(len(axes))}
		for _, a := range axes {
			if math.IsNaN(float64(a)) || math.IsInf(float64(a), 0) {
				t.Fatalf("axis %v accepted", a)
			}
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(a))
		}
		b = binary.LittleEndian.AppendUint32(b, buttons)
		if string(b) != string(msg) || len(msg) > MaxControlMessage {
			t.Fatalf("accepted %x, re-encodes to %x", msg, b)
		}
	})
}

// FuzzParseCommand: no input panics; nothing over the limit, nothing that
// is not valid JSON and UTF-8, and no object with keys equal but for case
// passes; the action returned is the member named exactly "action".
func FuzzParseCommand(f *testing.F) {
	f.Add([]byte(`{"action":"set_cmd_vel","data":{}}`))
	f.Add([]byte(`{"action":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"action":"pause","ACTION":"set_cmd_vel"}`))
	f.Add([]byte(`{"Action":"pause"}`))
	f.Add([]byte("{\"action\":\"p\xffause\"}"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		action, err := ParseCommand(msg)
		if err != nil {
			return
		}
		if len(msg) > MaxCommandMessage || !json.Valid(msg) || !utf8.Valid(msg) {
			t.Fatalf("accepted %q", msg)
		}
		var all map[string]any
		if err := json.Unmarshal(msg, &all); err != nil {
			t.Fatalf("accepted %q, not an object: %v", msg, err)
		}
		for k := range all {
			for k2 := range all {
				if k != k2 && strings.EqualFold(k, k2) {
					t.Fatalf("accepted %q with keys %q and %q", msg, k, k2)
				}
			}
		}
		if want, _ := all["action"].(string); action != want {
			t.Fatalf("%q: action %q, want %q", msg, action, want)
		}
	})
}

// FuzzSignalHandle: a 0x03 body that is not a usable offer never panics
// and always gets at most a close in reply, without a session left open.
func FuzzSignalHandle(f *testing.F) {
	e, err := NewEngine(Config{})
	if err != nil {
		f.Fatal(err)
	}
	defer e.Close()
	f.Add([]byte(`{"type":"ice","session_id":"x","candidate":"candidate:1 1 udp 1 1.2.3.4 9 typ host"}`))
	f.Add([]byte(`{"type":"offer","session_id":"x","sdp":"v=0"}`))
	f.Add([]byte(`{"type":"close"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var replies [][]byte
		g := e.NewSignal(SessionConfig{Source: &loopSource{subs: map[int]func(frame.Frame){}}}, func(m []byte) bool {
			replies = append(replies, m)
			return true
		})
		defer g.Close()
		g.Handle(body)
		for _, r := range replies {
			if len(r) == 0 || r[0] != 0x03 {
				t.Fatalf("reply %q is not a 0x03 message", r)
			}
		}
	})
}
