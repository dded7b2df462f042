package sdrcaddyfile

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// readSub reads the arguments of the first subdirective of a block.
func readSub(t *testing.T, block string) Args {
	t.Helper()
	d := caddyfile.NewTestDispenser("x {\n" + block + "\n}")
	d.Next()
	if !d.NextBlock(0) {
		t.Fatalf("no subdirective in %q", block)
	}
	return ReadArgs(d)
}

func TestArgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		read func(Args) (any, error)
		want any
		err  string
	}{
		{"flag", func(a Args) (any, error) { return nil, a.None() }, nil, ""},
		{"flag on", func(a Args) (any, error) { return nil, a.None() }, nil, `flag takes no arguments, got "on"`},
		{"name front", func(a Args) (any, error) { return a.One() }, "front", ""},
		{"name", func(a Args) (any, error) { return a.One() }, "", "name takes one argument, got 0"},
		{"name a b", func(a Args) (any, error) { return a.One() }, "", "name takes one argument, got 2"},
		{"topics /a /b", func(a Args) (any, error) { v, err := a.Some(); return strings.Join(v, ","), err }, "/a,/b", ""},
		{"topics", func(a Args) (any, error) { return a.Some() }, nil, "topics needs at least one argument"},
		{"crc off", func(a Args) (any, error) { return a.Bool() }, false, ""},
		{"crc 1", func(a Args) (any, error) { return a.Bool() }, true, ""},
		{"crc maybe", func(a Args) (any, error) { return a.Bool() }, false, `crc "maybe": invalid syntax`},
		{"timeout 5000", func(a Args) (any, error) { return a.Millis() }, caddy.Duration(5 * time.Second), ""},
		{"timeout 2s", func(a Args) (any, error) { return a.Millis() }, caddy.Duration(2 * time.Second), ""},
		{"timeout -5", func(a Args) (any, error) { return a.Millis() }, caddy.Duration(0), `timeout "-5": value out of range`},
		{"depth 0", func(a Args) (any, error) { return a.WholeNumber() }, 0, ""},
		{"depth -1", func(a Args) (any, error) { return a.WholeNumber() }, 0, `depth "-1": want a whole number >= 0`},
		{"queue 3", func(a Args) (any, error) { return a.PositiveInt() }, 3, ""},
		{"queue 0", func(a Args) (any, error) { return a.PositiveInt() }, 0, `queue "0": want a positive integer`},
		{"size 64KiB", func(a Args) (any, error) { return a.Size() }, int64(65536), ""},
		{"size 2TiB", func(a Args) (any, error) { return a.Size() }, int64(0), `size "2TiB": want a size in bytes`},
		{"size lots", func(a Args) (any, error) { return a.Size() }, int64(0), `size "lots": want a size in bytes`},
	} {
		got, err := tc.read(readSub(t, tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %v (%T), %v; want %v (%T)", tc.in, got, got, err, tc.want, tc.want)
		}
	}
}

// The arguments end at the block that opens on the subdirective's line.
func TestArgsStopAtBlock(t *testing.T) {
	t.Parallel()
	d := caddyfile.NewTestDispenser("x {\n webrtc a {\n  udp_mux :8443\n }\n}")
	d.Next()
	d.NextBlock(0)
	a := ReadArgs(d)
	if a.Name() != "webrtc" || a.Len() != 1 || a.Values()[0] != "a" {
		t.Fatalf("args %q %q", a.Name(), a.Values())
	}
	var subs []string
	if err := EachSubdirective(d, "webrtc option", func(sub string) error {
		subs = append(subs, sub+"="+strings.Join(ReadArgs(d).Values(), " "))
		return nil
	}); err != nil || len(subs) != 1 || subs[0] != "udp_mux=:8443" {
		t.Fatalf("block %v, %v", subs, err)
	}
}
