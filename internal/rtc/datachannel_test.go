package rtc

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func TestParseGamepad(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		msg  []byte
		ok   bool
		axes int
	}{
		{"two axes", gamepad([]float32{1, -0.5}, 7), true, 2},
		{"no axes", gamepad(nil, 1), true, 0},
		{"62 axes, 253 bytes", gamepad(make([]float32, 62), 0), true, 62},
		{"63 axes, 257 bytes", gamepad(make([]float32, 63), 0), false, 0},
		{"empty", nil, false, 0},
		{"short", []byte{1, 0, 0, 0, 0, 0}, false, 0},
		{"long", append(gamepad([]float32{1}, 0), 0), false, 0},
		{"nan", gamepad([]float32{float32(math.NaN())}, 0), false, 0},
		{"inf", gamepad([]float32{float32(math.Inf(1))}, 0), false, 0},
	} {
		axes, _, err := ParseGamepad(c.msg)
		if (err == nil) != c.ok || (c.ok && len(axes) != c.axes) {
			t.Errorf("%s: axes %v, err %v; want ok=%t with %d axes", c.name, axes, err, c.ok, c.axes)
		}
	}
	_, buttons, _ := ParseGamepad(gamepad([]float32{0}, 0xdeadbeef))
	if buttons != 0xdeadbeef {
		t.Errorf("buttons %#x", buttons)
	}
}

func TestParseCommand(t *testing.T) {
	t.Parallel()
	big := `{"action":"x","pad":"` + string(make([]byte, 1100)) + `"}`
	for _, c := range []struct {
		msg    string
		ok     bool
		action string
	}{
		{`{"action":"set_cmd_vel","data":{"linear_x":1}}`, true, "set_cmd_vel"},
		{`{"cmd_seq":1}`, true, ""},
		{`{"action":3}`, false, ""},
		{`[1,2]`, false, ""},
		{`nope`, false, ""},
		{big, false, ""},
		// the strict JSON check: read alike by every consumer
		{`{"action":"pause","ACTION":"set_cmd_vel"}`, false, ""},
		{`{"action":"set_cmd_vel","action":"pause"}`, false, ""},
		{"{\"action\":\"pause\",\"data\":\"\xff\"}", false, ""},
		{`{"action":"pause","data":` + strings.Repeat("[", 32) + strings.Repeat("]", 32) + `}`, false, ""},
		{`{"action":"pause","data":` + strings.Repeat("[", 31) + strings.Repeat("]", 31) + `}`, true, "pause"},
		{`{"ACTION":"set_cmd_vel"}`, true, ""},
	} {
		a, err := ParseCommand([]byte(c.msg))
		if (err == nil) != c.ok || a != c.action {
			t.Errorf("%.40q: action %q, err %v; want ok=%t action %q", c.msg, a, err, c.ok, c.action)
		}
	}
}
