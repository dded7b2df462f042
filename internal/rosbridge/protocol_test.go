package rosbridge

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestGlobMatch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "/odom", true},
		{"*", "/robot/odom", true},
		{"/rosapi/*", "/rosapi/topics", true},
		{"/rosapi/*", "/rosapi", false},
		{"/rosapi/*", "/rosapix/topics", false},
		{"/tf*", "/tf_static", true},
		{"/tf*", "/tf", true},
		{"/cam?/image", "/cam1/image", true},
		{"/cam?/image", "/cam12/image", false},
		{"/a*b*c", "/axxbyyc", true},
		{"/a*b*c", "/axxbyy", false},
		{"/odom", "/odom", true},
		{"/odom", "/odom2", false},
		{"", "", true},
		{"*", "*00", true}, // a '*' in the name is no wildcard
		{"/a*", "/a*b", true},
		{"/a?", "/a*", true},
	}
	for _, c := range cases {
		if got := globMatch(c.pattern, c.name); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func TestParseAllowlist(t *testing.T) {
	t.Parallel()
	if _, err := ParseAllowlist([]string{"/odom", "*", "/rosapi/*"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]string{{""}, {"odom"}} {
		if _, err := ParseAllowlist(bad); err == nil {
			t.Errorf("ParseAllowlist(%q) accepted", bad)
		}
	}
	var none Allowlist
	if none.Allows("/odom") {
		t.Error("an empty allowlist allowed a name")
	}
}

func TestFragmentsReassemble(t *testing.T) {
	t.Parallel()
	whole := []byte(`{"op":"publish","topic":"/chatter","msg":{"data":"ünïcödé ✓ ✓ ✓ and some more text"}}`)
	for _, size := range []int{1, 5, 7, 16, 1000} {
		parts := fragments("id1", whole, size)
		var r reassembly
		// deliver out of order: reassembly keys on num
		var got []byte
		for i := len(parts) - 1; i >= 0; i-- {
			var m message
			if err := json.Unmarshal(parts[i], &m); err != nil {
				t.Fatal(err)
			}
			if m.Op != "fragment" || m.Total != len(parts) {
				t.Fatalf("fragment %s", parts[i])
			}
			out, err := r.add(&m, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if out != nil {
				got = out
			}
		}
		if string(got) != string(whole) {
			t.Fatalf("size %d: reassembled %q", size, got)
		}
	}
}

func TestReassemblyBounds(t *testing.T) {
	t.Parallel()
	var r reassembly
	if _, err := r.add(&message{Op: "fragment", ID: "x", Num: 0, Total: 2, Data: strings.Repeat("a", 100)}, 150); err != nil {
		t.Fatal(err)
	}
	if _, err := r.add(&message{Op: "fragment", ID: "x", Num: 1, Total: 2, Data: strings.Repeat("a", 100)}, 150); err == nil {
		t.Fatal("200 bytes passed a 150-byte cap")
	}
	if _, err := r.add(&message{Op: "fragment", ID: "y", Num: 3, Total: 2}, 150); err == nil {
		t.Fatal("num >= total accepted")
	}
	for i := 0; i < 3*maxPartials; i++ {
		_, _ = r.add(&message{Op: "fragment", ID: strings.Repeat("z", i+1), Num: 0, Total: 2, Data: "a"}, 150)
	}
	if len(r.parts) > maxPartials || len(r.order) != len(r.parts) {
		t.Fatalf("%d partial messages held (order %d), cap %d", len(r.parts), len(r.order), maxPartials)
	}
}

func TestSameType(t *testing.T) {
	t.Parallel()
	if !sameType("geometry_msgs/Twist", "geometry_msgs/msg/Twist") || !sameType("", "x/y") || sameType("a/B", "a/C") {
		t.Fatal("sameType")
	}
}

func TestQualifyName(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, full string }{
		{"/cmd_vel", "/cmd_vel"},
		{"cmd_vel", "/cmd_vel"},
		{"/rosapi/get_topics", "/rosapi/get_topics"},
		{"rosapi/get_topics", "/rosapi/get_topics"},
		{"/robot/imu_2/Data", "/robot/imu_2/Data"},
		{"/_private_ok", "/_private_ok"},
		{"", ""},
		{"/", ""},
		{"//x", ""},
		{"/x//y", ""},
		{"/x/", ""},
		{"x/", ""},
		{"/rosapi/../secret", ""},
		{"/.", ""},
		{"/a.b", ""},
		{"/1x", ""},
		{"/x/2", ""},
		{"2x", ""},
		{"~/x", ""},
		{"~x", ""},
		{"/{node}/x", ""},
		{"/x y", ""},
		{"/é", ""},
		{"/x-y", ""},
		{"/x*", ""},
	} {
		full, err := qualifyName(c.name)
		if full != c.full || (err == nil) != (c.full != "") {
			t.Errorf("qualifyName(%q) = %q, %v; want %q", c.name, full, err, c.full)
		}
	}
}
