package rosbridge

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzFragments: any valid UTF-8 message cut at any size comes back whole,
// and no fragment sequence a client sends can panic the reassembly.
func FuzzFragments(f *testing.F) {
	f.Add([]byte(`{"op":"publish","topic":"/a","msg":{"data":"ü✓"}}`), 7, 3, "x")
	f.Add([]byte("\xff\xfe"), 1, 0, "")
	f.Fuzz(func(t *testing.T, data []byte, size, num int, id string) {
		parts := fragments("f", data, size)
		if utf8.Valid(data) {
			var r reassembly
			var whole []byte
			for _, p := range parts {
				var m message
				if err := json.Unmarshal(p, &m); err != nil {
					t.Fatalf("fragment is not JSON: %v", err)
				}
				out, err := r.add(&m, len(data)+1)
				if err != nil {
					t.Fatal(err)
				}
				if out != nil {
					whole = out
				}
			}
			if len(data) > 0 && string(whole) != string(data) {
				t.Fatalf("got %q back, want %q", whole, data)
			}
		}
		var r reassembly
		_, _ = r.add(&message{Op: "fragment", ID: id, Num: num, Total: size, Data: string(data)}, 1<<16)
		if len(r.parts) > maxPartials {
			t.Fatal("too many partial messages")
		}
	})
}

// FuzzGlob: matching never panics, `*` matches everything and a pattern
// without wildcards matches only itself.
func FuzzGlob(f *testing.F) {
	f.Add("/rosapi/*", "/rosapi/topics")
	f.Add("/a*b?c*", "/axxbycz")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		got := globMatch(pattern, name)
		if !globMatch("*", name) {
			t.Fatal("* did not match")
		}
		if !strings.ContainsAny(pattern, "*?") && got != (pattern == name) {
			t.Fatalf("literal %q vs %q: %v", pattern, name, got)
		}
	})
}
