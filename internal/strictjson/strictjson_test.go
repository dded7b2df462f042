package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func nested(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }

func TestCheck(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, text string
		reason     string // "" passes
		offset     int
		detail     string // a part of the message
	}{
		{"command", `{"action":"set_cmd_vel","cmd_seq":7,"data":{"linear_x":1.5e-1,"n":null,"b":[true,false]}}`, "", 0, ""},
		{"spaces around", " \t\r\n{ \"a\" : 1 }\n", "", 0, ""},
		{"scalars", `-0.5E+3`, "", 0, ""},
		{"escapes", `{"s":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"}`, "", 0, ""},
		{"utf-8", `{"é":"日本","😀":1}`, "", 0, ""},
		{"same key in two objects", `{"a":{"a":1},"b":{"a":2}}`, "", 0, ""},
		{"same key at two levels", `{"a":{"A":1}}`, "", 0, ""},
		{"sibling objects reuse a level", `[{"a":1},{"a":2,"A":3}]`, ReasonDuplicateKey, 16, `duplicate key "A" (same as "a" but for case) at byte 16`},
		{"depth 32", nested(32), "", 0, ""},
		{"depth 33", nested(33), ReasonTooDeep, 32, "nesting deeper than 32 at byte 32"},
		{"objects 33 deep", strings.Repeat(`{"a":`, 33) + "1" + strings.Repeat("}", 33), ReasonTooDeep, 160, "nesting deeper than 32"},
		{"9990 deep", nested(9990), ReasonTooDeep, 32, ""},

		{"case-colliding key", `{"action":"set_cmd_vel","ACTION":"pause"}`, ReasonDuplicateKey, 24, `duplicate key "ACTION" (same as "action" but for case) at byte 24`},
		{"exact duplicate", `{"action":"pause","action":"set_cmd_vel"}`, ReasonDuplicateKey, 18, `duplicate key "action" at byte 18`},
		{"duplicate through an escape", `{"action":1,"\u0061ction":2}`, ReasonDuplicateKey, 12, `duplicate key "action"`},
		{"Kelvin sign folds to k", `{"kind":1,"` + "\u212a" + `ind":2}`, ReasonDuplicateKey, 10, "but for case"},
		{"long s folds to s", `{"cmd_seq":1,"cmd_` + "\u017f" + `eq":2}`, ReasonDuplicateKey, 13, "but for case"},
		{"nested duplicate", `{"data":{"x":1,"X":2}}`, ReasonDuplicateKey, 15, `duplicate key "X"`},
		{"duplicate in a large object", bigObject(100) + `,"K50":0}`, ReasonDuplicateKey, len(bigObject(100)) + 1, `duplicate key "K50" (same as "k50" but for case)`},

		{"invalid UTF-8 in a string", "{\"action\":\"p\xffause\"}", ReasonInvalidUTF8, 12, "invalid UTF-8 at byte 12"},
		{"invalid UTF-8 in a key", "{\"a\xc3\":1}", ReasonInvalidUTF8, 3, "invalid UTF-8"},
		{"UTF-8 of a surrogate", "{\"a\":\"\xed\xa0\x80\"}", ReasonInvalidUTF8, 6, "invalid UTF-8"},
		{"overlong UTF-8", "\"\xc0\xaf\"", ReasonInvalidUTF8, 1, "invalid UTF-8"},
		{"invalid UTF-8 outside strings", "{\"a\":1}\xff", ReasonInvalidUTF8, 7, "invalid UTF-8"},
		{"lone high surrogate", `{"a":"\ud800x"}`, ReasonInvalidUTF8, 6, `lone surrogate \ud800 at byte 6`},
		{"lone low surrogate", `{"a":"\udc00"}`, ReasonInvalidUTF8, 6, "lone surrogate"},
		{"two high surrogates", `"\ud800\ud800"`, ReasonInvalidUTF8, 1, "lone surrogate"},

		{"empty", ``, ReasonSyntax, 0, "empty JSON text"},
		{"blank", `  `, ReasonSyntax, 2, "empty JSON text"},
		{"trailing data", `{} {}`, ReasonSyntax, 3, "data after the JSON value"},
		{"truncated", `{"a":`, ReasonSyntax, 5, "unexpected end of JSON"},
		{"unquoted key", `{a:1}`, ReasonSyntax, 1, "invalid character 'a'"},
		{"trailing comma", `[1,]`, ReasonSyntax, 3, "invalid character ']'"},
		{"NaN", `{"x":NaN}`, ReasonSyntax, 5, "invalid character 'N'"},
		{"leading zero", `01`, ReasonSyntax, 1, "data after the JSON value"},
		{"control character", "\"a\nb\"", ReasonSyntax, 2, "control character"},
		{"bad escape", `"\x"`, ReasonSyntax, 2, "escape"},
		{"short \\u", `"\u12"`, ReasonSyntax, 1, `invalid \u escape`},
		{"BOM", "\ufeff{}", ReasonSyntax, 0, "invalid character"},
		{"single quotes", `{'a':1}`, ReasonSyntax, 1, ""},
	} {
		err := Check([]byte(c.text))
		if c.reason == "" {
			if err != nil {
				t.Errorf("%s: %v, want it to pass", c.name, err)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: %v, want an *Error with reason %s", c.name, err, c.reason)
			continue
		}
		if e.Reason != c.reason || e.Offset != c.offset || !strings.Contains(e.Error(), c.detail) {
			t.Errorf("%s: reason %s at %d: %q; want %s at %d saying %q", c.name, e.Reason, e.Offset, e, c.reason, c.offset, c.detail)
		}
	}
}

// bigObject is an object of n members k0..k(n-1), without its closing brace.
func bigObject(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"k` + itoa(i) + `":0`)
	}
	return b.String()
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// surrogateEscape finds \u escapes in the surrogate range, which the
// reference below cannot judge (encoding/json reads them as U+FFFD).
var surrogateEscape = regexp.MustCompile(`\\u[dD][89a-fA-F]`)

// reference finds the faults of a text the slow, obvious way:
// encoding/json for the syntax and the tokens, utf8.Valid over the whole
// text, and every object's keys compared pairwise with strings.EqualFold.
// An invalid text gets ReasonSyntax alone (Check, reading in order, may
// meet another fault first). known is false where it cannot tell: \u
// escapes of surrogates, which encoding/json reads as U+FFFD.
func reference(b []byte) (faults map[string]bool, known bool) {
	faults = map[string]bool{}
	if !json.Valid(b) {
		faults[ReasonSyntax] = true
		return faults, true
	}
	if surrogateEscape.Match(b) {
		return nil, false
	}
	if !utf8.Valid(b) {
		faults[ReasonInvalidUTF8] = true
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	type level struct {
		object bool
		keys   []string
		key    bool // the next string token is a key
	}
	var stack []level
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			faults[ReasonSyntax] = true
			break
		}
		top := len(stack) - 1
		if v, ok := tok.(json.Delim); ok {
			if v == '}' || v == ']' {
				stack = stack[:top]
				continue
			}
			if top >= 0 && stack[top].object {
				stack[top].key = true
			}
			stack = append(stack, level{object: v == '{', key: v == '{'})
			if len(stack) > MaxDepth {
				faults[ReasonTooDeep] = true
			}
			continue
		}
		if v, ok := tok.(string); ok && top >= 0 && stack[top].object && stack[top].key {
			for _, k := range stack[top].keys {
				if strings.EqualFold(k, v) {
					faults[ReasonDuplicateKey] = true
				}
			}
			stack[top].keys = append(stack[top].keys, v)
			stack[top].key = false
			continue
		}
		if top >= 0 && stack[top].object {
			stack[top].key = true
		}
	}
	return faults, true
}

// FuzzCheck compares Check with the reference: the texts the reference
// finds no fault in pass, the others are refused for one of their faults.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		`{"action":"set_cmd_vel","cmd_seq":1,"data":{"linear_x":0.5}}`,
		`{"action":"set_cmd_vel","ACTION":"pause"}`,
		`{"a":1,"a":2}`,
		"{\"a\":\"\xff\"}",
		`{"a":"\ud800"}`,
		`"\ud83d\ude00"`,
		nested(33),
		`[{"k":1},{"K":2}]`,
		`{"kind":1,"` + "\u212a" + `ind":2}`,
		`-1.5e+10`,
		`{"a":[1,2,{"b":null}],"c":"\u0041"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := Check(b)
		faults, known := reference(b)
		if err == nil {
			if !json.Valid(b) || !utf8.Valid(b) {
				t.Fatalf("%q passed; encoding/json valid %t, UTF-8 %t", b, json.Valid(b), utf8.Valid(b))
			}
			if len(faults) > 0 {
				t.Fatalf("%q passed; the reference finds %v", b, faults)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) || e.Offset < 0 || e.Offset > len(b) {
			t.Fatalf("%q: error %v", b, err)
		}
		switch {
		case !known:
		case len(faults) == 0:
			t.Fatalf("%q refused (%v); the reference finds no fault", b, err)
		case !faults[ReasonSyntax] && !faults[e.Reason]:
			t.Fatalf("%q refused for %s (%v); the reference finds %v", b, e.Reason, err, faults)
		}
	})
}
