package sdrcaddyfile

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
)

// Args are the arguments of one subdirective, read to the end of its line
// (a block that opens on the line is left to the caller). Their typed
// readers check the count and the form, and name the subdirective and the
// value in their errors, all in one wording.
type Args struct {
	d    *caddyfile.Dispenser
	name string
	vals []string
}

// ReadArgs reads the arguments of the subdirective the dispenser is on.
func ReadArgs(d *caddyfile.Dispenser) Args {
	name := d.Val()
	return Args{d: d, name: name, vals: d.RemainingArgs()}
}

// Name is the subdirective's name.
func (a Args) Name() string { return a.name }

// Values are the arguments as given.
func (a Args) Values() []string { return a.vals }

// Len is the number of arguments.
func (a Args) Len() int { return len(a.vals) }

// None checks that a flag has no argument.
func (a Args) None() error {
	if len(a.vals) != 0 {
		return a.d.Errf("%s takes no arguments, got %q", a.name, a.vals[0])
	}
	return nil
}

// One returns the one argument.
func (a Args) One() (string, error) {
	if len(a.vals) != 1 {
		return "", a.d.Errf("%s takes one argument, got %d", a.name, len(a.vals))
	}
	return a.vals[0], nil
}

// Some returns the arguments, of which there must be at least one.
func (a Args) Some() ([]string, error) {
	if len(a.vals) == 0 {
		return nil, a.d.Errf("%s needs at least one argument", a.name)
	}
	return a.vals, nil
}

// Bool reads one boolean (ParseBool).
func (a Args) Bool() (bool, error) {
	v, err := a.One()
	if err != nil {
		return false, err
	}
	b, err := ParseBool(v)
	if err != nil {
		return false, a.d.Errf("%s %q: %v", a.name, v, err)
	}
	return b, nil
}

// Millis reads one duration, a bare number being milliseconds (ParseMillis).
func (a Args) Millis() (caddy.Duration, error) {
	v, err := a.One()
	if err != nil {
		return 0, err
	}
	dur, err := ParseMillis(v)
	if err != nil {
		return 0, a.d.Errf("%s %q: %v", a.name, v, err)
	}
	return dur, nil
}

// WholeNumber reads one integer >= 0.
func (a Args) WholeNumber() (int, error) {
	v, err := a.One()
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, a.d.Errf("%s %q: want a whole number >= 0", a.name, v)
	}
	return n, nil
}

// PositiveInt reads one integer > 0.
func (a Args) PositiveInt() (int, error) {
	v, err := a.One()
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, a.d.Errf("%s %q: want a positive integer", a.name, v)
	}
	return n, nil
}

// Size reads one size in bytes (ParseSize).
func (a Args) Size() (int64, error) {
	v, err := a.One()
	if err != nil {
		return 0, err
	}
	n, err := ParseSize(v)
	if err != nil {
		return 0, a.d.Errf("%s %q: want a size in bytes (65536, 64KiB)", a.name, v)
	}
	return n, nil
}

// ParseSize reads a size in bytes, a bare number or one with a unit (4MiB,
// 64KB), of at most 1 TiB.
func ParseSize(v string) (int64, error) {
	n, err := humanize.ParseBytes(v)
	if err != nil {
		return 0, err
	}
	if n > 1<<40 {
		return 0, strconv.ErrRange
	}
	return int64(n), nil
}
