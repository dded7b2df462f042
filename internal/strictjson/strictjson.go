// Package strictjson checks that a JSON text means the same thing to every
// reader it may reach: Go's encoding/json (which matches object keys without
// regard to case and keeps the last of equal keys), Python's json.loads
// (case-sensitive, last key wins, recursion-limited) and Rust's serde_json.
//
// A text passes Check when it is one JSON value (RFC 8259) and also
//   - is valid UTF-8 throughout, and every \u escape names a character
//     (no lone UTF-16 surrogate, which Go reads as U+FFFD and Python keeps);
//   - has no two keys in one object that are equal, or equal under Unicode
//     simple case folding (the rule encoding/json matches struct fields by),
//     compared after escapes are decoded;
//   - nests objects and arrays at most MaxDepth deep.
//
// A text that passes can be forwarded byte for byte: each of those readers
// finds the same members in it. Check is a single pass over the bytes that
// allocates only for keys that hold escapes or non-ASCII characters, and for
// objects of more than a few dozen members. The package imports nothing from
// Caddy.
package strictjson

import (
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth is how deeply objects and arrays may nest: a top-level object is
// depth 1.
const MaxDepth = 32

// Reasons a text is refused, one per Error; a bounded set, usable as a
// metrics label.
const (
	// ReasonSyntax: not one JSON value (or empty, or followed by more data).
	ReasonSyntax = "syntax"
	// ReasonInvalidUTF8: bytes that are not UTF-8, or a \u escape of a lone
	// surrogate.
	ReasonInvalidUTF8 = "invalid_utf8"
	// ReasonDuplicateKey: two keys of one object equal, or equal but for
	// case.
	ReasonDuplicateKey = "duplicate_key"
	// ReasonTooDeep: objects and arrays nested deeper than MaxDepth.
	ReasonTooDeep = "too_deep"
)

// Error says why a text was refused and where.
type Error struct {
	// Reason is one of the Reason constants.
	Reason string
	// Offset is the index of the byte where the fault was found, counting
	// from 0.
	Offset int
	msg    string
}

func (e *Error) Error() string { return e.msg }

// Check reports whether b is one strict JSON value, as the package comment
// defines it; the error is an *Error.
func Check(b []byte) error {
	c := checker{b: b}
	c.space()
	if c.i == len(b) {
		return c.fail(ReasonSyntax, "empty JSON text")
	}
	if err := c.value(); err != nil {
		return err
	}
	c.space()
	if c.i < len(b) {
		if r, n := utf8.DecodeRune(b[c.i:]); r == utf8.RuneError && n <= 1 {
			return c.fail(ReasonInvalidUTF8, "invalid UTF-8")
		}
		return c.fail(ReasonSyntax, "data after the JSON value")
	}
	return nil
}

// checker is the state of one Check: the text, the read position, and the
// keys of each object being read, outermost first.
type checker struct {
	b     []byte
	i     int
	depth int
	objs  []keySet
	key   []byte // scratch for decoding a key
}

// keySet holds the folded keys of one object, each with the offset of its
// opening quote: a list while it is short, a map once it is not.
type keySet struct {
	list []keyEntry
	m    map[string]int
}

type keyEntry struct {
	folded string
	at     int
}

// listMax is how many keys an object holds in a list before a map.
const listMax = 32

func (c *checker) fail(reason, what string) *Error {
	return &Error{Reason: reason, Offset: c.i, msg: fmt.Sprintf("%s at byte %d", what, c.i)}
}

func (c *checker) space() {
	for c.i < len(c.b) {
		switch c.b[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

// unexpected reports the byte at c.i, or the end of the text.
func (c *checker) unexpected(want string) *Error {
	if c.i >= len(c.b) {
		return c.fail(ReasonSyntax, "unexpected end of JSON, want "+want)
	}
	ch := c.b[c.i]
	if ch >= utf8.RuneSelf {
		if r, n := utf8.DecodeRune(c.b[c.i:]); r == utf8.RuneError && n <= 1 {
			return c.fail(ReasonInvalidUTF8, "invalid UTF-8")
		}
		r, _ := utf8.DecodeRune(c.b[c.i:])
		return c.fail(ReasonSyntax, fmt.Sprintf("invalid character %q, want %s", r, want))
	}
	return c.fail(ReasonSyntax, fmt.Sprintf("invalid character %q, want %s", ch, want))
}

// value reads one value starting at c.i (whitespace already skipped).
func (c *checker) value() error {
	if c.i >= len(c.b) {
		return c.unexpected("a value")
	}
	switch ch := c.b[c.i]; {
	case ch == '{':
		return c.object()
	case ch == '[':
		return c.array()
	case ch == '"':
		_, err := c.str(false)
		return err
	case ch == 't':
		return c.literal("true")
	case ch == 'f':
		return c.literal("false")
	case ch == 'n':
		return c.literal("null")
	case ch == '-' || (ch >= '0' && ch <= '9'):
		return c.number()
	default:
		return c.unexpected("a value")
	}
}

func (c *checker) enter() error {
	if c.depth++; c.depth > MaxDepth {
		return c.fail(ReasonTooDeep, fmt.Sprintf("nesting deeper than %d", MaxDepth))
	}
	return nil
}

func (c *checker) object() error {
	if err := c.enter(); err != nil {
		return err
	}
	c.i++ // '{'
	level := len(c.objs)
	if level < cap(c.objs) {
		c.objs = c.objs[:level+1]
		c.objs[level].list = c.objs[level].list[:0]
		c.objs[level].m = nil
	} else {
		c.objs = append(c.objs, keySet{})
	}
	c.space()
	if c.i < len(c.b) && c.b[c.i] == '}' {
		c.i++
		c.objs = c.objs[:level]
		c.depth--
		return nil
	}
	for {
		if c.i >= len(c.b) || c.b[c.i] != '"' {
			return c.unexpected("a string key")
		}
		at := c.i
		key, err := c.str(true)
		if err != nil {
			return err
		}
		if err := c.objs[level].add(c.b, key, at); err != nil {
			return err
		}
		c.space()
		if c.i >= len(c.b) || c.b[c.i] != ':' {
			return c.unexpected("':' after an object key")
		}
		c.i++
		c.space()
		if err := c.value(); err != nil {
			return err
		}
		c.space()
		if c.i >= len(c.b) {
			return c.unexpected("',' or '}'")
		}
		switch c.b[c.i] {
		case ',':
			c.i++
			c.space()
		case '}':
			c.i++
			c.objs = c.objs[:level]
			c.depth--
			return nil
		default:
			return c.unexpected("',' or '}'")
		}
	}
}

// add records key, found at byte at of b, or reports it as a duplicate.
func (s *keySet) add(b, key []byte, at int) error {
	folded := fold(key)
	prev, found := 0, false
	if s.m != nil {
		prev, found = s.m[folded]
	} else {
		for _, e := range s.list {
			if e.folded == folded {
				prev, found = e.at, true
				break
			}
		}
	}
	if found {
		// decode the earlier key again, for the message
		p := checker{b: b, i: prev}
		first, _ := p.str(true)
		msg := fmt.Sprintf("duplicate key %s at byte %d", quote(key), at)
		if string(first) != string(key) {
			msg = fmt.Sprintf("duplicate key %s (same as %s but for case) at byte %d", quote(key), quote(first), at)
		}
		return &Error{Reason: ReasonDuplicateKey, Offset: at, msg: msg}
	}
	if s.m == nil && len(s.list) < listMax {
		s.list = append(s.list, keyEntry{folded, at})
		return nil
	}
	if s.m == nil {
		s.m = make(map[string]int, 2*listMax)
		for _, e := range s.list {
			s.m[e.folded] = e.at
		}
	}
	s.m[folded] = at
	return nil
}

// quote writes a key for an error message, cut to 64 bytes.
func quote(key []byte) string {
	if len(key) > 64 {
		n := 64
		for n > 0 && !utf8.RuneStart(key[n]) {
			n--
		}
		return strconv.Quote(string(key[:n])) + "..."
	}
	return strconv.Quote(string(key))
}

// fold returns key with each character replaced by the smallest character
// of its simple case folding orbit, so that fold(a) == fold(b) exactly when
// strings.EqualFold(a, b) (key is valid UTF-8 here).
func fold(key []byte) string {
	ascii := true
	for _, ch := range key {
		if ch >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		// The smallest of {K, k, U+212A} is 'K', of {S, s, U+017F} 'S':
		// upper case for every ASCII letter.
		out := make([]byte, len(key))
		for i, ch := range key {
			if 'a' <= ch && ch <= 'z' {
				ch -= 'a' - 'A'
			}
			out[i] = ch
		}
		return string(out)
	}
	out := make([]byte, 0, len(key))
	for i := 0; i < len(key); {
		r, n := utf8.DecodeRune(key[i:])
		i += n
		low := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			low = min(low, f)
		}
		out = utf8.AppendRune(out, low)
	}
	return string(out)
}

func (c *checker) array() error {
	if err := c.enter(); err != nil {
		return err
	}
	c.i++ // '['
	c.space()
	if c.i < len(c.b) && c.b[c.i] == ']' {
		c.i++
		c.depth--
		return nil
	}
	for {
		if err := c.value(); err != nil {
			return err
		}
		c.space()
		if c.i >= len(c.b) {
			return c.unexpected("',' or ']'")
		}
		switch c.b[c.i] {
		case ',':
			c.i++
			c.space()
		case ']':
			c.i++
			c.depth--
			return nil
		default:
			return c.unexpected("',' or ']'")
		}
	}
}

func (c *checker) literal(word string) error {
	for k := 0; k < len(word); k++ {
		if c.i >= len(c.b) || c.b[c.i] != word[k] {
			return c.unexpected(strconv.Quote(word))
		}
		c.i++
	}
	return nil
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (c *checker) number() error {
	if c.b[c.i] == '-' {
		c.i++
	}
	switch {
	case c.i < len(c.b) && c.b[c.i] == '0':
		c.i++
	case c.i < len(c.b) && c.b[c.i] >= '1' && c.b[c.i] <= '9':
		c.digits()
	default:
		return c.unexpected("a digit")
	}
	if c.i < len(c.b) && c.b[c.i] == '.' {
		c.i++
		if c.i >= len(c.b) || c.b[c.i] < '0' || c.b[c.i] > '9' {
			return c.unexpected("a digit after '.'")
		}
		c.digits()
	}
	if c.i < len(c.b) && (c.b[c.i] == 'e' || c.b[c.i] == 'E') {
		c.i++
		if c.i < len(c.b) && (c.b[c.i] == '+' || c.b[c.i] == '-') {
			c.i++
		}
		if c.i >= len(c.b) || c.b[c.i] < '0' || c.b[c.i] > '9' {
			return c.unexpected("a digit in the exponent")
		}
		c.digits()
	}
	return nil
}

func (c *checker) digits() {
	for c.i < len(c.b) && c.b[c.i] >= '0' && c.b[c.i] <= '9' {
		c.i++
	}
}

// str reads a string starting at its opening quote. With decode it returns
// its value, escapes decoded (valid until the next call); the returned
// slice aliases the text when the string holds no escape.
func (c *checker) str(decode bool) ([]byte, error) {
	c.i++ // '"'
	start := c.i
	escaped := false
	if decode {
		c.key = c.key[:0]
	}
	for {
		if c.i >= len(c.b) {
			return nil, c.fail(ReasonSyntax, "unexpected end of JSON in a string")
		}
		ch := c.b[c.i]
		switch {
		case ch == '"':
			s := c.b[start:c.i]
			c.i++
			if escaped {
				return c.key, nil
			}
			return s, nil
		case ch < 0x20:
			return nil, c.fail(ReasonSyntax, fmt.Sprintf("control character %#02x in a string", ch))
		case ch == '\\':
			if decode && !escaped {
				c.key = append(c.key, c.b[start:c.i]...)
			}
			escaped = true
			if err := c.escape(decode); err != nil {
				return nil, err
			}
		case ch < utf8.RuneSelf:
			if escaped && decode {
				c.key = append(c.key, ch)
			}
			c.i++
		default:
			r, n := utf8.DecodeRune(c.b[c.i:])
			if r == utf8.RuneError && n <= 1 {
				return nil, c.fail(ReasonInvalidUTF8, "invalid UTF-8")
			}
			if escaped && decode {
				c.key = append(c.key, c.b[c.i:c.i+n]...)
			}
			c.i += n
		}
	}
}

// escape reads one escape sequence at c.i (the backslash), appending what it
// stands for to c.key when decode is set.
func (c *checker) escape(decode bool) error {
	if c.i+1 >= len(c.b) {
		c.i = len(c.b)
		return c.fail(ReasonSyntax, "unexpected end of JSON in an escape")
	}
	var out byte
	switch c.b[c.i+1] {
	case '"', '\\', '/':
		out = c.b[c.i+1]
	case 'b':
		out = '\b'
	case 'f':
		out = '\f'
	case 'n':
		out = '\n'
	case 'r':
		out = '\r'
	case 't':
		out = '\t'
	case 'u':
		at := c.i
		r, ok := c.hex4(c.i + 2)
		if !ok {
			return c.fail(ReasonSyntax, "invalid \\u escape")
		}
		c.i += 6
		if utf16.IsSurrogate(r) {
			r2, ok := rune(0), false
			if r < 0xdc00 && c.i+1 < len(c.b) && c.b[c.i] == '\\' && c.b[c.i+1] == 'u' {
				if r2, ok = c.hex4(c.i + 2); ok {
					r = utf16.DecodeRune(r, r2)
					ok = r != utf8.RuneError
				}
			}
			if !ok {
				c.i = at
				return c.fail(ReasonInvalidUTF8, fmt.Sprintf("lone surrogate %s", c.b[at:at+6]))
			}
			c.i += 6
		}
		if decode {
			c.key = utf8.AppendRune(c.key, r)
		}
		return nil
	default:
		c.i++
		return c.unexpected("an escape character")
	}
	if decode {
		c.key = append(c.key, out)
	}
	c.i += 2
	return nil
}

// hex4 reads four hex digits at i.
func (c *checker) hex4(i int) (rune, bool) {
	if i+4 > len(c.b) {
		return 0, false
	}
	var r rune
	for _, ch := range c.b[i : i+4] {
		switch {
		case '0' <= ch && ch <= '9':
			ch -= '0'
		case 'a' <= ch && ch <= 'f':
			ch -= 'a' - 10
		case 'A' <= ch && ch <= 'F':
			ch -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(ch)
	}
	return r, true
}
