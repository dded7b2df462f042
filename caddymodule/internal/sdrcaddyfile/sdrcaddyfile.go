// Package sdrcaddyfile is the Caddyfile syntax shared by the sdr_* directives
// and global options: walking a directive's block, reading its arguments,
// and the value forms that let the old SDR_* environment variables stand as
// {$VAR:default} placeholders (booleans as 1/0, bare numbers as
// milliseconds). It also holds the settings that several modules embed
// with their subdirectives: the per-client WebSocket limits (ClientLimits),
// the Host allowlists (ParseHosts) and the origins and hosts trusted to
// command through sdr_stream and sdr_whep (CommandTrust).
package sdrcaddyfile

import (
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// ParseHandler is the Caddyfile parser of a handler module that reads its
// own tokens (httpcaddyfile.RegisterHandlerDirective).
func ParseHandler[T any, P interface {
	*T
	caddyhttp.MiddlewareHandler
	caddyfile.Unmarshaler
}](h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := P(new(T))
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return m, nil
}

// DirectiveArg reads the directive's name and its one optional argument,
// which goes to dst; what says what the argument is, for the error.
func DirectiveArg(d *caddyfile.Dispenser, dst *string, what string) error {
	d.Next() // the directive name
	name := d.Val()
	if d.NextArg() {
		*dst = d.Val()
		if d.NextArg() {
			return d.Errf("%s takes at most one argument (%s), got %q", name, what, d.Val())
		}
	}
	return nil
}

// EachSubdirective calls fn with the name of each subdirective in the block
// that opens after the current token, its arguments still to read. A
// subdirective given twice is refused ("duplicate <what> <name>") unless it
// is one of repeatable.
func EachSubdirective(d *caddyfile.Dispenser, what string, fn func(sub string) error, repeatable ...string) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] && !slices.Contains(repeatable, sub) {
			return d.Errf("duplicate %s %q", what, sub)
		}
		seen[sub] = true
		if err := fn(sub); err != nil {
			return err
		}
	}
	return nil
}

// Value parsers, so that the old SDR_* environment variables fit as
// {$VAR:default} placeholders.

// ParseBool reads true/false, on/off, yes/no or 1/0.
func ParseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "on", "yes", "1":
		return true, nil
	case "false", "off", "no", "0":
		return false, nil
	}
	return false, strconv.ErrSyntax
}

// ParseMillis reads a Caddy duration; a bare number is milliseconds, the
// unit of the old environment variables.
func ParseMillis(v string) (caddy.Duration, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 || n > math.MaxInt64/1_000_000 {
			return 0, strconv.ErrRange
		}
		return caddy.Duration(n * 1e6), nil
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, err
	}
	if dur < 0 {
		return 0, strconv.ErrRange
	}
	return caddy.Duration(dur), nil
}

// ParseOff reads "off", or a duration through parse; "off" and a zero
// duration both mean none, -1 in JSON.
func ParseOff(v string, parse func(string) (caddy.Duration, error)) (caddy.Duration, error) {
	if v == "off" {
		return -1, nil
	}
	d, err := parse(v)
	if err != nil {
		return 0, err
	}
	if d == 0 {
		return -1, nil
	}
	return d, nil
}
